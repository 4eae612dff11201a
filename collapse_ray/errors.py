"""The project's own errors: bad input or an unusable environment, never a bug.

Each message reads ``<where>: <what is wrong>; <what is allowed or what to do>`` (``where`` is a
config field such as ``training.lr``, a file with its line, or a URI). The ``collapse-ray`` command
prints any of them as one line, ``error: <message>``, and exits with ``EXIT_CODE``; anything else
is a bug and keeps its traceback. Stdlib only: the sandbox's child side may import it.
"""
from __future__ import annotations

EXIT_CODE = 2


class CollapseRayError(Exception):
    """Base of every error the user can fix (input, environment); the CLI prints it as one line."""

    def one_line(self) -> str:
        return " ".join(str(self).split()) or type(self).__name__


class ConfigError(CollapseRayError, ValueError):
    """A config field has a wrong name, type or value, or names something unusable."""


class DataError(CollapseRayError, ValueError):
    """A data file is missing, empty or malformed; the message names the file and the line."""


class ModelError(CollapseRayError, RuntimeError):
    """The model cannot be had (offline, a typo, no access) or has an impossible shape."""


class TrackingError(CollapseRayError, RuntimeError):
    """The MLflow tracking store cannot be used (unreachable, not MLflow, refused)."""


class SandboxError(CollapseRayError, RuntimeError):
    """The sandbox itself failed (never the program's fault): the result would mean nothing."""


class GridError(CollapseRayError, RuntimeError):
    """A grid cannot start, resume or finish (its trials' own errors keep their class)."""


class TrialError(CollapseRayError, RuntimeError):
    """A trial cannot go on for a reason its settings explain (e.g. mitigations left no data)."""
