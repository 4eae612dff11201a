"""What a path given by the user must be before anything asks the OS about it.

Python's ``Path.exists()`` answers False for a missing file but raises for a name the OS cannot
hold (a component over NAME_MAX bytes, a NUL byte), so such a value would end as a traceback from
whichever check touched it first. Every path-valued field and argument passes ``check_path_text``
first (config.py, yaml_io.py, grid/spec.py, the report's arguments); ``os_error_line`` is the CLI's
last resort for an OS refusal no check foresaw (permissions on a parent, a read-only disk).
Stdlib only.
"""
from __future__ import annotations

import errno
import os

from collapse_ray.typed import require

# Linux's limits (limits.h; PATH_MAX counts the closing NUL): past them the OS answers ENAMETOOLONG,
# not "missing".
NAME_MAX = 255
PATH_MAX = 4096
# OS refusals that say the environment or the path given is unusable, never that the code is wrong.
USER_FIXABLE_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.ELOOP, errno.EROFS,
                                 errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR})


def shown(text: str, limit: int = 60) -> str:
    """``text`` as an error message quotes it: repr, at most ``limit`` characters, its start and end
    kept (a path's end names the file)."""
    quoted = repr(text)
    if len(quoted) <= limit:
        return quoted
    head = (limit - 3) // 2
    return quoted[:head] + "..." + quoted[len(quoted) - (limit - 3 - head):]


def check_path_text(text: str, where: str) -> None:
    """``text`` is a path this OS can be asked about: no control characters, encodable, no component
    over NAME_MAX bytes, under PATH_MAX bytes in all; not empty (which would mean the working directory)."""
    require(text.strip() != "", where, "is empty; write a path, or leave the field out for its default")
    require(not any(ord(c) < 32 or ord(c) == 127 for c in text), where,
            f"{shown(text)} holds a control character (e.g. a newline or NUL); write a plain path")
    try:
        raw = os.fsencode(text)
    except UnicodeError:
        require(False, where, f"{shown(text)} cannot be encoded as a file name on this system")
    require(len(raw) < PATH_MAX, where, f"{shown(text)} is {len(raw)} bytes long; a path is shorter than {PATH_MAX}")
    longest = max(raw.split(b"/"), key=len)
    require(len(longest) <= NAME_MAX, where,
            f"{shown(text)} has a name of {len(longest)} bytes ({shown(os.fsdecode(longest), 24)}); "
            f"each part of a path is at most {NAME_MAX}")


def os_error_line(exc: OSError) -> str | None:
    """One line for an OS refusal about a named file (errno in USER_FIXABLE_ERRNOS), else None."""
    if exc.errno not in USER_FIXABLE_ERRNOS or exc.filename is None:
        return None
    name = exc.filename if isinstance(exc.filename, str) else os.fsdecode(exc.filename)
    return (f"{shown(name, 120)}: {exc.strerror or errno.errorcode.get(exc.errno, 'OS error')}; "
            f"choose a path this user can use (--debug shows where it was reached)")
