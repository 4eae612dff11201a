"""The code that runs a problem's tests on a generated function, inside the sandbox.

``program_for`` (humaneval.py) sends this file's source to the sandbox followed by one call of
``run_tests``: the sandbox proves that the whole program ran to its end (docs/sandbox.md), and
this code decides what running to the end means. Appending the tests to the function and calling
``check`` (HumanEval's own harness) lets a generated function pass tests it does not solve: return
an object whose ``__eq__`` always answers True, subclass ``int`` or ``float`` likewise, or rebind
``abs`` or ``isinstance`` at module level, which the tests then read. Here, before any generated
code runs, the builtins are copied; the function runs in a namespace of its own; the tests run in
another, made of the problem's own prompt (its imports and helpers, run alone) and the trusted
builtins; and every value the function returns reaches the tests rebuilt from types defined in C
(int, float, str, list, dict, numpy's scalars and arrays, ...): an instance of a subclass of a
plain type becomes that type (a Counter its dict, a namedtuple its tuple, an int subclass a plain
int, its ``__eq__`` gone), an instance of any other class the program defined fails the test.

What remains possible: a program that reaches the tests' frames (``sys._getframe``) or patches a
shared module (``math.isclose``) can still change what they compute; the sandbox keeps it from
anything outside the run, not from lying about its own tests. This file runs under the sandbox's
interpreter with the standard library only, and defines nothing else at module level.
"""


def run_tests(prompt, function, tests, entry_point, filename):
    import builtins

    trusted = dict(vars(builtins))   # before any generated code can rebind a builtin
    type_, isinstance_, slice_ = type, isinstance, slice
    type_error, dict_, list_, tuple_, set_, frozenset_ = TypeError, dict, list, tuple, set, frozenset
    # type's own descriptors: a metaclass cannot answer for them
    flags_of, mro_of = vars(type)["__flags__"].__get__, vars(type)["__mro__"].__get__
    heap_type = 1 << 9   # Py_TPFLAGS_HEAPTYPE: a class made by a class statement or type()
    # A subclass of a plain type becomes that type, copied by the type's own C method (so a
    # Counter is compared as the dict, a namedtuple as the tuple it is, an int subclass's __eq__ is gone).
    as_plain = {int: int.__int__, float: float.__float__, complex: complex.__complex__, str: str.__str__,
                bytes: bytes.__bytes__, list_: list_.copy, dict_: dict_.copy, set_: set_.copy,
                frozenset_: frozenset_.copy, tuple_: lambda t: tuple_.__getitem__(t, slice_(None))}

    def plain(value, depth=0):
        """``value`` rebuilt from C-defined types only; TypeError for an instance of a class the
        program defined that derives from no plain type."""
        kind = type_(value)
        if flags_of(kind) & heap_type:
            base = next((b for b in mro_of(kind) if b in as_plain), None)
            if base is None:
                raise type_error(f"{entry_point} returned an instance of {kind.__qualname__}, a class the "
                                 f"program defined; a solution returns plain values")
            value, kind = as_plain[base](value), base
        if kind is list_ or kind is tuple_ or kind is set_ or kind is frozenset_ or kind is dict_:
            if depth > 100:
                raise type_error(f"{entry_point} returned a value nested over 100 deep")
            if kind is dict_:
                return {plain(k, depth + 1): plain(v, depth + 1) for k, v in dict_.items(value)}
            return kind([plain(item, depth + 1) for item in value])
        return value

    def fresh(name):
        return {"__name__": name, "__builtins__": dict_(trusted)}

    solution = fresh("__main__")
    exec(compile(function, filename, "exec", dont_inherit=True), solution)
    candidate = solution[entry_point]

    def checked(*args, **kwargs):
        return plain(candidate(*args, **kwargs))

    checked.__name__ = getattr(candidate, "__name__", entry_point)
    checked.__doc__ = getattr(candidate, "__doc__", None)
    namespace = fresh("__main__")
    exec(compile(prompt, filename + ":prompt", "exec", dont_inherit=True), namespace)
    namespace[entry_point] = checked
    exec(compile(tests, filename + ":tests", "exec", dont_inherit=True), namespace)
    if not isinstance_(namespace.get("check"), type_(run_tests)):
        raise type_error("the problem's tests define no function `check`")
    namespace["check"](checked)
