"""CodeSearchNet-format (code, docstring) pairs: from a JSONL file, the HF hub, or Python source on disk.

CodeSearchNet (Husain et al. 2019) took every function with a docstring from public repositories
and used the docstring's first paragraph as the function's summary. The hub copy is unreachable
from offline machines, so ``extract_functions`` builds the same kind of records from Python source
that is on disk (the standard library gives about 8,000; installed packages tens of thousands).

A record has CodeSearchNet's fields::

    repo, path, func_name, original_string, language, code, code_tokens,
    docstring, docstring_tokens, url, partition

Extracted records differ from CodeSearchNet in two documented ways: ``code`` is dedented to column 0
(a method's source starts at ``def``, as a top-level function's would), and ``partition`` is drawn
from a hash of the file path (80% train, 10% valid, 10% test), so it is stable across runs.
"""
from __future__ import annotations

import ast
import hashlib
import io
import os
import re
import sysconfig
import tokenize
from pathlib import Path
from typing import Iterable, Iterator

from collapse_ray.data import DataError, read_json_lines
from collapse_ray.data.hub import load_hub_dataset
from collapse_ray.python_source import parse

# Directories never walked into: installed packages (when walking the standard library), test
# suites (their functions are mostly ``test_*`` boilerplate), caches.
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})

FIELDS = ("repo", "path", "func_name", "original_string", "language", "code", "code_tokens",
          "docstring", "docstring_tokens", "url", "partition")

# CodeSearchNet's field names on the HF hub -> the names of its JSONL release (used here).
_HUB_ALIASES = {
    "repository_name": "repo",
    "func_path_in_repository": "path",
    "whole_func_string": "original_string",
    "func_code_string": "code",
    "func_code_tokens": "code_tokens",
    "func_documentation_string": "docstring",
    "func_documentation_tokens": "docstring_tokens",
    "split_name": "partition",
    "func_code_url": "url",
}


# ---------------------------------------------------------------- extraction from source

def stdlib_roots() -> list[Path]:
    """The standard library's directory (its site-packages and test suites are skipped by the walk)."""
    return [Path(sysconfig.get_paths()["stdlib"])]


def extract_functions(roots: Path | str | Iterable[Path | str], max_files: int | None = None,
                      repo_name: str | None = None,
                      skip_dirs: frozenset[str] = SKIP_DIRS) -> Iterator[dict]:
    """Yield a CodeSearchNet record for every function or method with a docstring under ``roots``.

    Files are visited in sorted order (deterministic); files that are not UTF-8 or do not parse
    are skipped, and so are functions whose dedented source does not parse on its own.
    ``repo`` is ``repo_name`` or the root directory's name; ``path`` is relative to the root.
    ``max_files`` bounds the number of files read, over all roots together.
    """
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    files_left = max_files
    for root in roots:
        root = Path(root)
        for file in _python_files(root, skip_dirs):
            if files_left is not None:
                if files_left <= 0:
                    return
                files_left -= 1
            relpath = file.relative_to(root).as_posix()
            yield from _functions_in_file(file, repo_name or root.name, relpath)


def _python_files(root: Path, skip_dirs: frozenset[str]) -> list[Path]:
    if root.is_file():
        return [root] if root.suffix == ".py" else []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs and not d.startswith(".")]
        found.extend(Path(dirpath) / name for name in filenames if name.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _functions_in_file(file: Path, repo: str, relpath: str) -> Iterator[dict]:
    try:
        source = file.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return
    tree = parse(source)
    if tree is None:
        return
    lines = source.splitlines(keepends=True)
    for qualname, node in _documented_functions(tree.body, ""):
        record = _record(node, qualname, lines, repo, relpath)
        if record is not None:
            yield record


def _documented_functions(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, ast.AST]]:
    """Module-level functions and methods of (nested) classes, in source order."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if ast.get_docstring(node, clean=False):
                yield prefix + node.name, node
        elif isinstance(node, ast.ClassDef):
            yield from _documented_functions(node.body, f"{prefix}{node.name}.")


def _record(node, qualname: str, lines: list[str], repo: str, relpath: str) -> dict | None:
    docstring = ast.get_docstring(node, clean=True)
    if not docstring or not docstring.strip():
        return None
    first = lines[node.lineno - 1]          # the ``def`` line; decorators are left out, as in CodeSearchNet
    indent = len(first) - len(first.lstrip(" \t"))
    if indent != node.col_offset:           # e.g. ``class A: def f(self): ...`` on one line
        return None
    code = "".join(_strip_indent(line, indent) for line in lines[node.lineno - 1: node.end_lineno])
    code = code.rstrip()
    try:
        tokens = code_tokens(code)
    except (SyntaxError, tokenize.TokenError, ValueError):
        return None
    return {
        "repo": repo,
        "path": relpath,
        "func_name": qualname,
        "original_string": code,
        "language": "python",
        "code": code,
        "code_tokens": tokens,
        "docstring": docstring,
        "docstring_tokens": summary_tokens(summary_of(docstring)),
        "url": "",
        "partition": _partition(f"{repo}/{relpath}"),
    }


def _strip_indent(line: str, indent: int) -> str:
    # Lines inside a multi-line string may be indented less than the ``def``; strip what is there.
    leading = len(line) - len(line.lstrip(" \t"))
    return line[min(leading, indent):]


def _partition(key: str) -> str:
    bucket = int(hashlib.md5(key.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 80 else "valid" if bucket < 90 else "test"


def code_tokens(code: str) -> list[str]:
    """Python tokens of ``code`` as CodeSearchNet lists them: names, operators, literals and
    comments, without layout tokens and without the docstring. Raises SyntaxError if ``code``
    does not parse."""
    tree = ast.parse(code)
    docstring_rows = None
    fn = tree.body[0] if tree.body else None
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(fn, clean=False):
        doc = fn.body[0]
        docstring_rows = (doc.lineno, doc.end_lineno)
    kept = (tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.STRING, tokenize.COMMENT)
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type not in kept:
            continue
        if (tok.type == tokenize.STRING and docstring_rows is not None
                and tok.start[0] >= docstring_rows[0] and tok.end[0] <= docstring_rows[1]):
            continue
        out.append(tok.string)
    return out


# ---------------------------------------------------------------- summaries

# A line that starts a parameter/return section (reST, Epydoc/Javadoc, Google style) or a doctest.
_SECTION_LINE = re.compile(
    r"^\s*(?::(?:param|parameter|arg|argument|key|keyword|type|returns?|rtype|raises?|except|"
    r"exception|yields?|ytype|var|ivar|cvar)\b"
    r"|@\w+"
    r"|(?:args|arguments|parameters|params|keyword args|keyword arguments|kwargs|other parameters|"
    r"returns?|yields?|raises?|examples?|notes?|attributes|see also|warnings?|references|todo)\s*:"
    r"|>>>)",
    re.IGNORECASE,
)
# The same markers when they follow text on one line ("Do x. :param a: ...").
_INLINE_SECTION = re.compile(r"\s(?::(?:param|type|returns?|rtype|raises?)\b|@(?:param|return|throws)\b)")
_UNDERLINE = re.compile(r"^\s*[-=~]{3,}\s*$")   # numpydoc heading underline


def summary_of(docstring: str) -> str:
    """The docstring's first paragraph, whitespace-collapsed, as CodeSearchNet cleans it.

    The summary ends at the first blank line, at the first line that opens a parameter section
    (``:param``, ``@param``, ``Args:``, ``Returns:``, a numpydoc heading, a ``>>>`` doctest) or at
    such a marker inside a line. Returns "" when no word remains.
    """
    if not docstring:
        return ""
    paragraph = re.split(r"\n[ \t]*\n", docstring.strip(), maxsplit=1)[0]
    kept: list[str] = []
    for line in paragraph.splitlines():
        if _SECTION_LINE.match(line):
            break
        if _UNDERLINE.match(line):
            if kept:
                kept.pop()          # the heading above the underline ("Parameters")
            break
        kept.append(line)
    text = " ".join(" ".join(kept).split())
    inline = _INLINE_SECTION.search(" " + text)
    if inline:
        text = (" " + text)[: inline.start()].strip()
    return text if re.search(r"[A-Za-z0-9]", text) else ""


# CodeSearchNet's docstring tokenizer (github.com/github/CodeSearchNet, function_parser): commas,
# quotes and backticks are dropped, runs of other punctuation kept as tokens.
_DOCSTRING_TOKEN = re.compile(
    r"""[^\s,'"`.():\[\]=*;>{\}+-/\\]+|\\+|\.+|\(\)|{\}|\[\]|\(+|\)+|:+|\[+|\]+|{+|\}+|=+|\*+|;+|>+|\++|-+|/+""")


def summary_tokens(summary: str) -> list[str]:
    """A summary's tokens as CodeSearchNet's ``docstring_tokens`` lists them."""
    return _DOCSTRING_TOKEN.findall(summary)


# ---------------------------------------------------------------- loading

def load_function_records(data_path: str | os.PathLike | None) -> list[dict]:
    """The records in ``data_path``, or, without one, every documented standard-library function."""
    if data_path is not None:
        return load_code_docstring_pairs(data_path)
    from collapse_ray.data.stdlib_cache import stdlib_function_records

    return stdlib_function_records()


def load_code_docstring_pairs(path: str | os.PathLike | None = None, *,
                              max_records: int | None = None, progress=print) -> list[dict]:
    """CodeSearchNet-format records from a ``.jsonl`` / ``.jsonl.gz`` file.

    Reads CodeSearchNet's own records and the code-docstring-corpus records (idx, code, docstring,
    func_name, repo, path, lineno, parses) alike and returns each with CodeSearchNet's ``FIELDS``.
    With ``path=None``: CodeSearchNet Python from the HF hub when it is reachable, otherwise pairs
    extracted from the standard library. Raises DataError naming the file and the problem.
    """
    if path is None:
        return load_hub_or_stdlib(max_records=max_records, progress=progress)
    default_partition = _partition_from_name(Path(path).name)
    return read_json_lines(path, lambda raw, where: normalise_record(raw, where=where,
                                                                     default_partition=default_partition),
                           max_records=max_records)


def normalise_record(raw, where: str = "record", default_partition: str = "") -> dict:
    """One record in CodeSearchNet's fields, from CodeSearchNet (JSONL or hub names) or the
    code-docstring corpus. ``where`` prefixes error messages."""
    if not isinstance(raw, dict):
        raise DataError(f"{where} is a JSON {type(raw).__name__}, not an object")
    raw = {_HUB_ALIASES.get(k, k): v for k, v in raw.items()}
    code = raw.get("code", raw.get("original_string"))
    if code is None:
        raise DataError(f"{where}: record lacks field 'code'")
    if "docstring" not in raw:
        raise DataError(f"{where}: record lacks field 'docstring'")
    docstring = raw["docstring"]
    for name, value in (("code", code), ("docstring", docstring)):
        if not isinstance(value, str):
            raise DataError(f"{where}: field '{name}' is a {type(value).__name__}, not a string")
    tokens = raw.get("code_tokens")
    if not isinstance(tokens, list):
        try:
            tokens = code_tokens(code)
        except (SyntaxError, tokenize.TokenError, ValueError):
            tokens = re.findall(r"\w+|[^\w\s]", code)
    doc_tokens = raw.get("docstring_tokens")
    if not isinstance(doc_tokens, list):
        doc_tokens = summary_tokens(summary_of(docstring))
    return {
        "repo": str(raw.get("repo") or ""),
        "path": str(raw.get("path") or ""),
        "func_name": str(raw.get("func_name") or ""),
        "original_string": raw.get("original_string") or code,
        "language": raw.get("language") or "python",
        "code": code,
        "code_tokens": tokens,
        "docstring": docstring,
        "docstring_tokens": doc_tokens,
        "url": str(raw.get("url") or ""),
        "partition": str(raw.get("partition") or default_partition),
    }


def _partition_from_name(name: str) -> str:
    for part in ("train", "valid", "test"):
        if part in name.lower():
            return part
    return ""


def load_hub_or_stdlib(max_records: int | None = None, progress=print) -> list[dict]:
    """CodeSearchNet Python from the HF hub; if that fails (e.g. offline), standard-library pairs."""
    try:
        return load_from_hub(max_records=max_records)
    except Exception as e:  # noqa: BLE001 - any hub failure means: use the offline source
        progress(f"CodeSearchNet from the HF hub unavailable ({type(e).__name__}: {e}); "
                 "extracting CodeSearchNet-format pairs from the standard library")
    from collapse_ray.data.stdlib_cache import stdlib_function_records

    return stdlib_function_records()[:max_records]


def load_from_hub(max_records: int | None = None, timeout: float = 3.0) -> list[dict]:
    """CodeSearchNet Python (all splits) via ``datasets``. Fails within ``timeout`` seconds when the
    hub cannot be reached, instead of waiting on ``datasets``' retries."""
    splits = load_hub_dataset("code_search_net", "python", timeout=timeout)
    records = []
    for split_name, split in splits.items():
        for i, raw in enumerate(split):
            raw = {"partition": split_name, **raw}
            records.append(normalise_record(raw, where=f"code_search_net/{split_name} row {i}"))
            if max_records is not None and len(records) >= max_records:
                return records
    return records
