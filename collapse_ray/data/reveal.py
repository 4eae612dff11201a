"""ReVeal (Chakraborty et al. 2020): C functions labelled vulnerable (1) or not (0).

Three sources, one record shape ``{"code": str, "label": 0 | 1, "id": str}``:

* ReVeal's own distribution: a directory holding ``vulnerables.json`` and ``non-vulnerables.json``,
  each a JSON array of objects with a ``code`` field; the label comes from the file.
* JSON lines (``.jsonl`` or ``.jsonl.gz``), one ``{"func": ..., "target": 0 | 1}`` object a line
  (the format of the Chromium half used in tests, and of Devign / CodeXGLUE).
* A HuggingFace ``datasets`` id written ``hf:<owner>/<name>`` (all splits, concatenated); columns
  ``func`` / ``code`` / ``functionSource`` and ``target`` / ``label``. Offline it fails within seconds.

Every problem with a file raises ``DataError`` naming the file and the problem (the line or item,
and the field). ``stratified_split`` makes the seeded, class-stratified train / pool / test split.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

from collapse_ray.data import DataError, read_json_lines, read_text
from collapse_ray.data.hub import load_hub_dataset

VULNERABLE_FILE = "vulnerables.json"
NON_VULNERABLE_FILE = "non-vulnerables.json"
HUB_PREFIX = "hf:"
CODE_FIELDS = ("func", "code", "functionSource")   # first one present is the function's source
LABEL_FIELDS = ("target", "label")


def load_reveal(source: str | os.PathLike) -> list[dict]:
    """Records from a ReVeal directory, a ReVeal ``.json`` file's directory, a ``.jsonl(.gz)``
    file or ``hf:<dataset id>``."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return load_hub(text[len(HUB_PREFIX):])
    path = Path(source)
    if path.is_dir():
        return load_distribution(path)
    if path.name in (VULNERABLE_FILE, NON_VULNERABLE_FILE):
        return load_distribution(path.parent)
    return load_jsonl(path)


# ---------------------------------------------------------------- ReVeal's own JSON arrays

def load_distribution(directory: str | os.PathLike) -> list[dict]:
    """``vulnerables.json`` (label 1) and ``non-vulnerables.json`` (label 0) from ``directory``."""
    directory = Path(directory)
    records = []
    for name, label in ((VULNERABLE_FILE, 1), (NON_VULNERABLE_FILE, 0)):
        records.extend(_load_json_array(directory / name, label))
    return records


def _load_json_array(path: Path, label: int) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: file does not exist (a ReVeal directory holds {VULNERABLE_FILE} "
                        f"and {NON_VULNERABLE_FILE})")
    try:
        items = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}, column {e.colno} is not valid JSON ({e.msg}); "
                        f"the file must be one JSON array of objects") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: holds a JSON {type(items).__name__}, not an array of functions")
    if not items:
        raise DataError(f"{path}: holds no functions (empty array)")
    records = []
    for i, item in enumerate(items):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise DataError(f"{where} is a JSON {type(item).__name__}, not an object")
        if "code" not in item:
            raise DataError(f"{where} lacks field 'code'")
        code = item["code"]
        if not isinstance(code, str):
            raise DataError(f"{where}: field 'code' is a {type(code).__name__}, not a string")
        records.append({"code": code, "label": label, "id": f"{path.name}:{i}"})
    return records


# ---------------------------------------------------------------- JSON lines

def load_jsonl(path: str | os.PathLike) -> list[dict]:
    """One ``{"func": str, "target": 0 | 1}`` object a line; ``.gz`` files are decompressed."""
    return read_json_lines(path, lambda raw, where: parse_record(raw, where, fallback_id=where.rsplit(" ", 1)[1]),
                           empty="holds no functions")


def parse_record(raw, where: str, fallback_id: str = "") -> dict:
    """``{"code", "label", "id"}`` from a ``{func|code|functionSource, target|label}`` object."""
    if not isinstance(raw, dict):
        raise DataError(f"{where} is a JSON {type(raw).__name__}, not an object")
    code_field = next((k for k in CODE_FIELDS if k in raw), None)
    if code_field is None:
        raise DataError(f"{where} lacks field 'func' (the function's code)")
    label_field = next((k for k in LABEL_FIELDS if k in raw), None)
    if label_field is None:
        raise DataError(f"{where} lacks field 'target' (the label)")
    code, label = raw[code_field], raw[label_field]
    if not isinstance(code, str):
        raise DataError(f"{where}: field '{code_field}' is a {type(code).__name__}, not a string")
    if isinstance(label, bool) or label not in (0, 1):  # ints 0/1 (and 0.0/1.0), nothing else
        raise DataError(f"{where}: field '{label_field}' is {label!r}, not 0 or 1")
    return {"code": code, "label": int(label), "id": str(raw.get("id", fallback_id))}


# ---------------------------------------------------------------- HF hub

def load_hub(dataset_id: str, timeout: float = 3.0) -> list[dict]:
    """Every split of a ``datasets`` id, concatenated. Fails within ``timeout`` seconds offline."""
    where = f"{HUB_PREFIX}{dataset_id}"
    try:
        splits = load_hub_dataset(dataset_id, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, say which dataset and why
        raise DataError(f"{where}: HF dataset cannot be loaded ({type(e).__name__}: {e}); check the id and "
                        f"the network, or give a local .jsonl(.gz) file or ReVeal directory") from None
    records = []
    for split_name, split in splits.items():
        for i, raw in enumerate(split):
            records.append(parse_record(raw, f"{where} split {split_name} row {i}",
                                        fallback_id=f"{split_name}:{i}"))
    if not records:
        raise DataError(f"{where}: holds no functions")
    return records


# ---------------------------------------------------------------- cleaning and splitting

def drop_duplicates(records: Sequence[dict], key: Callable[[dict], str] | None = None) -> list[dict]:
    """Keep the first of each group of records with the same code (or the same ``key(record)``, e.g.
    the code as shown after truncation); drop every record whose code occurs with both labels (its
    label cannot be learnt from the code; the Chromium half has 53 such pairs in full)."""
    key = key or (lambda r: r["code"])
    keys = [key(r) for r in records]
    labels: dict[str, set[int]] = {}
    for k, r in zip(keys, records):
        labels.setdefault(k, set()).add(r["label"])
    seen: set[str] = set()
    kept = []
    for k, r in zip(keys, records):
        if len(labels[k]) == 1 and k not in seen:
            seen.add(k)
            kept.append(r)
    return kept


def stratified_split(records: Sequence[dict], n_train: int, n_pool: int, n_test: int, seed: int,
                     where: str = "data") -> tuple[list[dict], list[dict], list[dict]]:
    """Disjoint train / pool / test sets of the given sizes, each with (up to rounding) the class
    balance of ``records``; deterministic in ``seed`` (scikit-learn ``train_test_split``)."""
    from sklearn.model_selection import train_test_split

    need = n_train + n_pool + n_test
    if len(records) < need:
        raise DataError(f"{where}: only {len(records)} usable functions, need {need} "
                        f"(sizes.train_examples + sizes.synthetic_pool + sizes.eval_examples)")
    labels = [r["label"] for r in records]
    if min(labels.count(0), labels.count(1)) < 3:
        raise DataError(f"{where}: needs at least 3 functions of each label to stratify, has "
                        f"{labels.count(1)} vulnerable and {labels.count(0)} not")
    records = list(records)
    try:
        rest, test = train_test_split(records, test_size=n_test, random_state=seed, stratify=labels)
        train, pool = train_test_split(rest, train_size=n_train, test_size=n_pool, random_state=seed,
                                       stratify=[r["label"] for r in rest])
    except ValueError as e:  # e.g. a split smaller than the number of classes
        raise DataError(f"{where}: cannot split {n_train}/{n_pool}/{n_test} stratified ({e})") from None
    return train, pool, test
