import ast
import json
from types import SimpleNamespace

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from collapse_ray.data import DataError
from collapse_ray.data.codesearchnet import summary_of
from collapse_ray.datatypes import SYNTHETIC, Example
from collapse_ray.data.codesearchnet import load_function_records
from collapse_ray.generate.base import Sampling
from collapse_ray.tasks import get_task
from collapse_ray.tasks.summarization import (MAX_CODE_CHARS, MAX_SUMMARY_WORDS, MIN_SUMMARY_WORDS, PROMPT_SUFFIX,
                                              STOP, CodeSummarization, code_of, examples_from,
                                              strip_docstring)
from tests.scripted import ScriptedGenerator

SIZES = SimpleNamespace(train_examples=300, synthetic_pool=200, eval_examples=100)


@pytest.fixture(scope="module")
def csn_dir(data_dir):
    return data_dir / "codesearchnet"


@pytest.fixture(scope="module")
def corpus_path(csn_dir):
    return csn_dir / "code_docstring_corpus_canonical_test.jsonl.gz"


@pytest.fixture(scope="module")
def task_data(corpus_path):
    return CodeSummarization().load(str(corpus_path), seed=0, sizes=SIZES)


def function_of(prompt: str) -> ast.FunctionDef:
    return ast.parse(code_of(prompt)).body[0]


# ---------------------------------------------------------------- loading real files

def test_codesearchnet_records_become_examples_without_their_docstring(csn_dir):
    records = load_function_records(str(csn_dir / "codesearchnet_python_sample.jsonl"))
    examples = examples_from(records)
    assert len(records) == 100 and len(examples) == 62
    for ex in examples:
        assert ast.get_docstring(function_of(ex.prompt)) is None
        assert len(code_of(ex.prompt)) <= MAX_CODE_CHARS
        assert MIN_SUMMARY_WORDS <= len(ex.meta["reference"].split()) <= MAX_SUMMARY_WORDS


def test_the_reference_is_the_cleaned_first_docstring_paragraph(csn_dir):
    record = load_function_records(str(csn_dir / "codesearchnet_python_sample.jsonl"))[0]
    (ex,) = examples_from([record])
    assert ex.meta["reference"] == summary_of(record["docstring"])
    assert ex.meta["reference"] == "Return command help for use in global parser usage string"
    assert "Return command help" not in ex.prompt and "@TODO" not in ex.prompt
    assert code_of(ex.prompt).startswith("def command_help_long(self):\n    indent = ")


def test_code_docstring_corpus_splits_have_the_requested_sizes_and_share_no_code(task_data):
    assert (len(task_data.train), len(task_data.pool), len(task_data.test)) == (300, 200, 100)
    prompts = [ex.prompt for ex in task_data.train + task_data.pool + task_data.test]
    assert len(set(prompts)) == len(prompts)


def test_splits_are_determined_by_the_seed(csn_dir):
    path, sizes = str(csn_dir / "codesearchnet_python_sample.jsonl"), SimpleNamespace(
        train_examples=20, synthetic_pool=20, eval_examples=20)
    first = CodeSummarization().load(path, seed=0, sizes=sizes)
    assert CodeSummarization().load(path, seed=0, sizes=sizes) == first
    other = CodeSummarization().load(path, seed=1, sizes=sizes)
    assert [ex.prompt for ex in other.test] != [ex.prompt for ex in first.test]


def test_the_default_source_is_the_standard_library(monkeypatch):
    from collapse_ray.data import codesearchnet

    full = codesearchnet.stdlib_roots()
    monkeypatch.setattr(codesearchnet, "stdlib_roots", lambda: [full[0] / "email"])  # a part, for speed
    data = CodeSummarization().load(None, seed=0, sizes=SimpleNamespace(
        train_examples=50, synthetic_pool=50, eval_examples=30))
    assert (len(data.train), len(data.pool), len(data.test)) == (50, 50, 30)
    assert {ex.meta["repo"] for ex in data.train} == {"python-stdlib"}
    assert all((full[0] / "email" / ex.meta["path"]).is_file() for ex in data.train + data.pool + data.test)


def test_too_few_usable_functions_is_an_error_naming_the_file(csn_dir):
    path = csn_dir / "codesearchnet_python_sample.jsonl"
    with pytest.raises(DataError, match=r"codesearchnet_python_sample\.jsonl: only 62 usable functions.*need 600"):
        CodeSummarization().load(str(path), seed=0, sizes=SIZES)


# ---------------------------------------------------------------- errors name the file and problem

def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


GOOD = {"code": "def f(x):\n    return x + 1\n", "docstring": "Add one to x."}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: file does not exist"):
        CodeSummarization().load(str(tmp_path / "nope.jsonl"), seed=0, sizes=SIZES)


def test_empty_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"empty\.jsonl: no records"):
        CodeSummarization().load(write_lines(tmp_path / "empty.jsonl", []), seed=0, sizes=SIZES)


def test_malformed_line_names_the_file_and_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [GOOD, GOOD, '{"code": "def g('])
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3 is not valid JSON"):
        CodeSummarization().load(path, seed=0, sizes=SIZES)


@pytest.mark.parametrize("field", ["code", "docstring"])
def test_missing_field_names_the_file_line_and_field(tmp_path, field):
    row = {k: v for k, v in GOOD.items() if k != field}
    path = write_lines(tmp_path / "rows.jsonl", [GOOD, row])
    with pytest.raises(DataError, match=rf"rows\.jsonl: line 2: record lacks field '{field}'"):
        CodeSummarization().load(path, seed=0, sizes=SIZES)


# ---------------------------------------------------------------- docstring removal

def test_strip_docstring_removes_a_multiline_docstring_and_keeps_decorators_and_comments():
    code = ('@cache\ndef area(r):\n    """Area of a circle.\n\n    r: the radius\n    """  # formula\n'
            '    # pi r squared\n    return 3.14159 * r * r\n')
    assert strip_docstring(code) == "@cache\ndef area(r):\n    # pi r squared\n    return 3.14159 * r * r"


def test_strip_docstring_dedents_a_method():
    code = '    def size(self):\n        """Number of items."""\n        return len(self.items)\n'
    assert strip_docstring(code) == "def size(self):\n    return len(self.items)"


@pytest.mark.parametrize("code", [
    'def f():\n    """Only a docstring."""\n',            # nothing left to summarise
    'def f(): "Doc."; return 1\n',                          # docstring shares its line
    'def f():\n    print "python 2"\n',                     # does not parse
    'x = 1\n',                                              # not a function
    'def f():\n    return 1\ndef g():\n    return 2\n',     # two functions
])
def test_strip_docstring_rejects_what_it_cannot_clean(code):
    assert strip_docstring(code) is None


def test_code_without_a_docstring_is_kept_as_it_is():
    assert strip_docstring("def f(x):\n    return x\n") == "def f(x):\n    return x"


# ---------------------------------------------------------------- prompt formatting

def test_training_text_is_code_then_summary_slot_then_summary_and_newline(task_data):
    for ex in task_data.train:
        assert ex.prompt.endswith("\n# Summary of the function above:")
        assert ex.completion == " " + ex.meta["reference"] + "\n"
        assert ex.text == ex.prompt + ex.completion
    assert CodeSummarization.stop == STOP == ("\n",)


# ---------------------------------------------------------------- synthetic data and its filter

def test_synthetic_examples_are_the_models_summaries_of_pool_code(task_data):
    pool = task_data.pool[:3]
    outputs = [" Parse the header.", "Return a copy  of the list", ""]
    synthetic = CodeSummarization().synthesize(ScriptedGenerator(outputs=dict(zip([p.prompt for p in pool], outputs))),
                                               pool, Sampling(), generation=2)
    assert [ex.completion for ex in synthetic] == [" Parse the header.\n", " Return a copy of the list\n", " \n"]
    assert [ex.prompt for ex in synthetic] == [ex.prompt for ex in pool]
    assert all(ex.origin == SYNTHETIC and ex.generation == 2 for ex in synthetic)


def summary_example(summary: str, code: str = "def total(items):\n    # add them up\n    return sum(items)") -> Example:
    return Example(code + PROMPT_SUFFIX, " Sum of items.\n").as_synthetic(" " + summary + "\n", 1)


@pytest.mark.parametrize("summary, kept", [
    ("Return the sum of the given items.", True),
    ("Sum the items (or zero when empty).", True),
    ("", False),                                            # empty
    ("Sum items", False),                                   # fewer than MIN_SUMMARY_WORDS
    (" ".join(["word"] * (MAX_SUMMARY_WORDS + 1)), False),  # more than MAX_SUMMARY_WORDS
    ("return sum(items)", False),                           # a copy of the code
    ("add them up", False),                                 # a copy of the code's comment
    ("x = self.total(items_list) [0]", False),              # mostly code tokens
])
def test_quality_filter_keeps_prose_summaries_of_bounded_length(summary, kept):
    assert CodeSummarization().quality_ok(summary_example(summary)) is kept


def test_quality_filter_keeps_nearly_every_real_summary(task_data):
    # The few it drops are code-like docstrings, e.g. ply grammar rules
    # ("relational_expression : relational_expression GE shift_expression").
    examples = task_data.train + task_data.pool + task_data.test
    assert sum(CodeSummarization().quality_ok(ex) for ex in examples) >= 0.99 * len(examples)


# ---------------------------------------------------------------- evaluation

def test_evaluation_scores_greedy_summaries_with_sacrebleu_and_rouge_score(task_data):
    test = task_data.test
    canned = ["Return the value.", "Create a new connection to the server", "Get the name of the user"]
    outputs = {ex.prompt: (" " + ex.meta["reference"] if i % 4 == 0 else " " + canned[i % 3])
               for i, ex in enumerate(test)}
    generator = ScriptedGenerator(outputs=outputs)
    metrics = CodeSummarization().evaluate(generator, test, Sampling(max_new_tokens=40, temperature=0.8, seed=7))

    ((kind, prompts, sampling),) = generator.calls
    assert kind == "generate" and prompts == [ex.prompt for ex in test]
    assert (sampling.temperature, sampling.stop, sampling.max_new_tokens) == (0.0, ("\n",), 40)
    hypotheses = [outputs[ex.prompt].strip() for ex in test]
    references = [ex.meta["reference"] for ex in test]
    bleu = BLEU(tokenize="13a", smooth_method="exp").corpus_score(hypotheses, [references]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = sum(scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references)) / len(test)
    assert metrics["bleu4"] == pytest.approx(bleu)
    assert metrics["rougeL"] == pytest.approx(rouge)
    assert 0 < metrics["bleu4"] < 100 and 0 < metrics["rougeL"] < 1
    assert metrics["mean_summary_words"] == pytest.approx(sum(len(h.split()) for h in hypotheses) / len(test))


def test_perfect_summaries_score_full_marks(task_data):
    outputs = {ex.prompt: " " + ex.meta["reference"] for ex in task_data.test}
    metrics = CodeSummarization().evaluate(ScriptedGenerator(outputs=outputs), task_data.test, Sampling())
    assert metrics["bleu4"] == pytest.approx(100.0)
    assert metrics["rougeL"] == pytest.approx(1.0)


def test_the_task_is_registered_by_name():
    task = get_task("summarization")
    assert isinstance(task, CodeSummarization) and task.name == "summarization"


def test_the_summary_length_bounds_are_task_options(csn_dir):
    records = load_function_records(str(csn_dir / "codesearchnet_python_sample.jsonl"))
    task = get_task("summarization", {"min_summary_words": 8})
    kept = examples_from(records, task.options)
    assert 0 < len(kept) < len(examples_from(records))
    assert all(len(ex.meta["reference"].split()) >= 8 for ex in kept)
    assert not task.quality_ok(summary_example("Return the sum of two numbers"))   # 6 words
