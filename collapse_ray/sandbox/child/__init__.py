"""The child side of the sandbox: what runs in `python -I -S` processes forked from the zygote.

Standard library only, and only cheap modules: the zygote starts with these imports and every
run is forked from it. Read `guard.py` for the security core (the completion proof)."""
