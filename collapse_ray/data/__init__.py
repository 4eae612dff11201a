"""Loaders for each task's real data (HumanEval, CodeSearchNet, ReVeal)."""


class DataError(ValueError):
    """A data file is missing, empty or malformed; the message names the file and the problem."""
