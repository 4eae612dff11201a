"""YAML files as the config loaders read them: strict about keys written twice, every problem
a ConfigError naming the file and the line."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from collapse_ray.errors import ConfigError
from collapse_ray.path_rules import check_path_text


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key written twice in one mapping is an error: plain YAML keeps
    only the last, silently dropping the first block."""

    def construct_mapping(self, node, deep=False):
        first_line: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":   # '<<: *anchor' may override, by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first_line.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:   # an unhashable key: the base loader says what is wrong with it
                continue
            if earlier != key_node.start_mark.line + 1:
                raise _DuplicateKey(f"line {key_node.start_mark.line + 1}: key {key!r} repeats the one on "
                                    f"line {earlier}; YAML would keep only the last, so merge the two")
        return super().construct_mapping(node, deep)


class _DuplicateKey(Exception):
    pass


def read_yaml_mapping(path: str | os.PathLike, what: str = "config file") -> dict:
    """The YAML mapping in ``path``; a missing, unreadable, empty or malformed file, or a key
    written twice, is a ConfigError naming the file (and the line)."""
    check_path_text(str(path), what)
    path = Path(path)
    if not path.is_file():
        # a device or a pipe is no file to read (a FIFO would block the read for ever)
        kind = "is a directory" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
        raise ConfigError(f"{what} {path} {kind}; give the path of a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{what} {path}: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{what} {path} is not valid YAML: {at}{e.problem or e.context}; "
                          f"fix the YAML syntax there") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {path} cannot be read as YAML ({e}); it must be UTF-8 YAML text") from None
    if data is None:
        raise ConfigError(f"{what} {path} is empty; write the fields to set (see experiments/smoke.yaml): "
                          f"an empty file would silently run every default")
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of fields at the top level, "
                          f"not a {type(data).__name__}")
    return data
