import gzip
import json
import textwrap

import pytest

from collapse_ray.data import DataError
from collapse_ray.data import codesearchnet as csn
from collapse_ray.data.codesearchnet import (FIELDS, extract_functions, load_code_docstring_pairs,
                                             stdlib_roots, summary_of, summary_tokens)

PACKAGE_MODULE = textwrap.dedent('''\
    import os


    def top(a, b=1):
        """Add two numbers.

        :param a: the first
        """
        # add them
        return a + b


    def undocumented():
        return 0


    class Shape:
        """A shape."""

        @property
        def area(self):
            """Area of the shape.

            Returns:
                float
            """
            return 0.0

        class Inner:
            async def fetch(self):
                """Fetch it."""
                return None
    ''')


@pytest.fixture
def package(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "sub" / "shapes.py").write_text(PACKAGE_MODULE)
    (root / "tests" / "test_x.py").write_text('def test_a():\n    """Skipped: a test dir."""\n')
    (root / "broken.py").write_text('def f(:\n    """Does not parse."""\n')
    (root / "latin1.py").write_bytes('def g():\n    """caf\xe9"""\n'.encode("latin-1"))
    return root


def test_extraction_yields_codesearchnet_records_for_documented_functions_only(package):
    records = list(extract_functions([package], repo_name="me/pkg"))

    assert [r["func_name"] for r in records] == ["top", "Shape.area", "Shape.Inner.fetch"]
    top, area, fetch = records
    assert set(top) == set(FIELDS)
    assert top["repo"] == "me/pkg" and top["path"] == "sub/shapes.py" and top["language"] == "python"
    assert top["code"] == top["original_string"]
    assert top["code"].startswith("def top(a, b=1):\n    \"\"\"Add two numbers.")
    assert top["code"].endswith("return a + b")
    assert top["docstring"] == "Add two numbers.\n\n:param a: the first"
    assert top["docstring_tokens"] == ["Add", "two", "numbers", "."]
    # Comments stay, the docstring and layout tokens do not (as in CodeSearchNet).
    assert top["code_tokens"] == ["def", "top", "(", "a", ",", "b", "=", "1", ")", ":",
                                  "# add them", "return", "a", "+", "b"]
    assert top["partition"] in {"train", "valid", "test"} and top["url"] == ""


def test_methods_are_dedented_to_column_zero_without_decorators(package):
    area = next(r for r in extract_functions(package) if r["func_name"] == "Shape.area")
    assert area["code"].splitlines()[0] == "def area(self):"
    assert area["code"].splitlines()[-1] == "    return 0.0"
    assert area["repo"] == "pkg"  # the root's name when no repo_name is given


def test_extraction_is_deterministic_and_max_files_bounds_it(package):
    assert list(extract_functions(package)) == list(extract_functions(package))
    assert list(extract_functions(package, max_files=1)) == []   # broken.py comes first and yields none


def test_standard_library_gives_thousands_of_pairs_without_tests_or_site_packages():
    roots = stdlib_roots()
    records = list(extract_functions(roots, max_files=40))
    assert len(records) > 100
    assert not any(r["path"].startswith(("test/", "site-packages/")) for r in records)


@pytest.mark.parametrize("docstring, summary", [
    ("Return the sum.", "Return the sum."),
    ("  Return the\n    sum of a and b.\n\n    More detail.", "Return the sum of a and b."),
    ("Return x.\n   \n   @TODO later", "Return x."),
    ("Compute it.\n:param a: first\n:returns: result", "Compute it."),
    ("Compute it. :param a: first", "Compute it."),
    ("Compute it.\n@param a first", "Compute it."),
    ("Compute it.\nArgs:\n    a: first", "Compute it."),
    ("Compute it.\nParameters\n----------\na : int", "Compute it."),
    ("Compute it.\n>>> compute()\n1", "Compute it."),
    (":param a: only parameters", ""),
    ("---", ""),
    ("", ""),
])
def test_summary_is_the_first_paragraph_before_parameter_sections(docstring, summary):
    assert summary_of(docstring) == summary


@pytest.mark.parametrize("name, count", [
    ("codesearchnet_python_sample.jsonl", 100),
    ("code_docstring_corpus_canonical_test.jsonl.gz", 2000),
    ("code_docstring_corpus_canonical_valid.jsonl.gz", 2000),
    ("code_docstring_corpus_repo_split_test.jsonl.gz", 3885),
])
def test_real_files_load_with_codesearchnet_fields(data_dir, name, count):
    records = load_code_docstring_pairs(data_dir / "codesearchnet" / name)
    assert len(records) == count
    assert all(set(r) == set(FIELDS) for r in records)
    assert all(r["code"] and isinstance(r["docstring"], str) for r in records)


def test_codesearchnet_sample_keeps_its_own_tokens_and_partition(data_dir):
    first = load_code_docstring_pairs(data_dir / "codesearchnet" / "codesearchnet_python_sample.jsonl")[0]
    assert first["func_name"] == "MultioptHelpFormatter.command_help_long"
    assert first["partition"] == "train" and first["url"].startswith("https://github.com/")
    assert first["docstring_tokens"][:3] == ["Return", "command", "help"]


def test_summary_tokens_match_codesearchnet_on_its_own_records(data_dir):
    path = data_dir / "codesearchnet" / "codesearchnet_python_sample.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert [summary_tokens(summary_of(r["docstring"])) for r in raw] == [r["docstring_tokens"] for r in raw]


def test_code_docstring_corpus_records_are_normalised(data_dir):
    path = data_dir / "codesearchnet" / "code_docstring_corpus_canonical_valid.jsonl.gz"
    first = load_code_docstring_pairs(path, max_records=3)[0]
    assert first["repo"] and first["path"].endswith(".py") and first["func_name"]
    assert first["original_string"] == first["code"]
    assert first["partition"] == "valid"    # from the file name
    assert first["code_tokens"] and first["docstring_tokens"]


def test_missing_file_raises_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: file does not exist"):
        load_code_docstring_pairs(tmp_path / "nope.jsonl")


def test_empty_file_raises_data_error(tmp_path):
    path = tmp_path / "empty.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl\.gz: no records"):
        load_code_docstring_pairs(path)


def test_malformed_json_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"code": "def f():\n    pass", "docstring": "Do f."})
    path.write_text(good + "\n" + good + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3 is not valid JSON"):
        load_code_docstring_pairs(path)


def test_record_without_code_is_named(tmp_path):
    path = tmp_path / "nocode.jsonl"
    path.write_text(json.dumps({"docstring": "Do f."}) + "\n")
    with pytest.raises(DataError, match=r"nocode\.jsonl: line 1: record lacks field 'code'"):
        load_code_docstring_pairs(path)


def test_a_gz_name_on_plain_text_is_read_as_text(tmp_path):
    """Compression is told by content: a '.gz' file that is plain text is read as text."""
    path = tmp_path / "corrupt.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"corrupt\.jsonl\.gz: line 1 is not valid JSON"):
        load_code_docstring_pairs(path)


def test_without_a_file_an_unreachable_hub_falls_back_to_the_standard_library(monkeypatch):
    def offline(**kwargs):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(csn, "load_from_hub", offline)
    messages = []
    records = load_code_docstring_pairs(None, max_records=5, progress=messages.append)
    assert len(records) == 5 and all(r["repo"] == "python-stdlib" for r in records)
    assert "no route to huggingface.co" in messages[0]


def test_hub_loader_fails_fast_in_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError):
        csn.load_from_hub()


def test_stdlib_extraction_is_cached_on_disk_and_equals_a_fresh_extraction(tmp_path, monkeypatch):
    from collapse_ray.data import codesearchnet, stdlib_cache

    monkeypatch.setenv(stdlib_cache.CACHE_ENV, str(tmp_path))
    stdlib_cache._records.cache_clear()
    try:
        first = stdlib_cache.stdlib_function_records()
        (cached,) = tmp_path.glob("stdlib_functions-*.jsonl.gz")
        stdlib_cache._records.cache_clear()
        calls = []
        monkeypatch.setattr(codesearchnet, "extract_functions", lambda *a, **k: calls.append(a) or iter(()))
        second = stdlib_cache.stdlib_function_records()
        assert calls == [] and second == first and len(first) > 1000
        cached.write_bytes(cached.read_bytes()[:100])   # a crash mid-write: rebuilt, never trusted
        stdlib_cache._records.cache_clear()
        stdlib_cache.stdlib_function_records()
        assert len(calls) == 1
    finally:   # the faked extraction must not stay in this process's cache
        stdlib_cache._records.cache_clear()
