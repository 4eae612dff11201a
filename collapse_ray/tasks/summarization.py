"""Code summarization: write a one-line summary of a Python function (CodeSearchNet-style pairs).

Real data: (code, docstring) pairs in CodeSearchNet's format, by default extracted offline from the
standard library, or read from ``data_path`` (a CodeSearchNet or code-docstring-corpus
``.jsonl`` / ``.jsonl.gz``). The reference summary is the docstring's first paragraph, cleaned as
CodeSearchNet cleans it (``summary_of``); the code shown to the model has its docstring removed, or
the answer would be in the prompt. Prompt = code, then a summary slot; completion = " " + summary +
newline; sampling stops at the newline. Synthetic data is the model's own summaries of pool code.
Evaluation: greedy summaries of the test split, corpus BLEU-4 (sacrebleu) and mean ROUGE-L F
(rouge-score) against the references, with the settings of ``collapse_ray.metrics.text``.
The bounds below (code length, summary words, code-word share) are the defaults of ``task.options``.
"""
from __future__ import annotations

import ast
import dataclasses
import random
import re
import textwrap
from typing import Sequence

from collapse_ray.data import DataError
from collapse_ray.data.codesearchnet import load_function_records
from collapse_ray.datatypes import Example
from collapse_ray.generate.base import Generator, Sampling
from collapse_ray.python_source import parse, parses
from collapse_ray.tasks import register_task
from collapse_ray.tasks.base import Task, TaskData, complete_prompts
from collapse_ray.typed import require

PROMPT_SUFFIX = "\n# Summary of the function above:"
PROMPT_TEMPLATE = "{code}" + PROMPT_SUFFIX
STOP = ("\n",)
# Functions whose docstring-free code is longer than this are not used (as codegen skips long
# functions). Under a 4,096-entry byte-level BPE trained on the standard library (the tiny model's
# recipe), code + template + summary + eos then fits training.max_length = 256 tokens for all but
# 1 of 4,519 standard-library pairs and 14 of 2,754 code-docstring-corpus test pairs (number-heavy
# code: digits are single tokens); the trainer's truncation cuts the end of those few summaries.
MAX_CODE_CHARS = 480
# Summary length bounds in words, for real and synthetic summaries alike. CodeSearchNet dropped
# docstrings of fewer than 3 tokens; 30 words is a long first sentence.
MIN_SUMMARY_WORDS = 3
MAX_SUMMARY_WORDS = 30
# Quality filter: a summary is "mostly code" when more than this share of its words look like code.
MAX_CODE_WORD_SHARE = 0.5
_CODE_WORD = re.compile(r"[()\[\]{}=<>;]|_|\w\.\w|:$")


@dataclasses.dataclass(frozen=True)
class SummarizationOptions:
    """``task.options`` of summarization; the defaults are the constants above."""

    max_code_chars: int = MAX_CODE_CHARS
    min_summary_words: int = MIN_SUMMARY_WORDS
    max_summary_words: int = MAX_SUMMARY_WORDS
    max_code_word_share: float = MAX_CODE_WORD_SHARE

    def check(self, where: str) -> None:
        require(self.max_code_chars > 0, f"{where}.max_code_chars", f"must be positive, got {self.max_code_chars}")
        require(self.min_summary_words >= 1, f"{where}.min_summary_words",
                f"must be at least 1, got {self.min_summary_words}")
        require(self.max_summary_words >= self.min_summary_words, f"{where}.max_summary_words",
                f"must be at least min_summary_words ({self.min_summary_words}), got {self.max_summary_words}")
        require(0.0 <= self.max_code_word_share <= 1.0, f"{where}.max_code_word_share",
                f"must be in [0, 1], got {self.max_code_word_share}")


def strip_docstring(code: str) -> str | None:
    """The source of one function with its docstring removed; None if ``code`` is not one function
    that parses, if the docstring shares a line with other code, or if nothing but the docstring
    would remain. Code without a docstring is returned unchanged (the code-docstring corpus has
    them removed already)."""
    code = textwrap.dedent(code).strip("\n")
    tree = parse(code)
    if tree is None or len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    body = tree.body[0].body
    first = body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return code.rstrip()
    if len(body) == 1:
        return None
    lines = code.splitlines(keepends=True)
    before = lines[first.lineno - 1].encode()[:first.col_offset].decode(errors="replace")
    after = lines[first.end_lineno - 1].encode()[first.end_col_offset:].decode(errors="replace").strip()
    if before.strip() or (after and not after.startswith("#")):
        return None
    stripped = "".join(lines[:first.lineno - 1] + lines[first.end_lineno:]).rstrip()
    return stripped if parses(stripped) else None


def prompt_for(code: str) -> str:
    return PROMPT_TEMPLATE.format(code=code)


def code_of(prompt: str) -> str:
    return prompt[:-len(PROMPT_SUFFIX)] if prompt.endswith(PROMPT_SUFFIX) else prompt


def completion_for(summary: str) -> str:
    return " " + " ".join(summary.split()) + "\n"


def words_ok(summary: str, options: SummarizationOptions = SummarizationOptions()) -> bool:
    return options.min_summary_words <= len(summary.split()) <= options.max_summary_words


def looks_like_code(summary: str, code: str, max_code_word_share: float = MAX_CODE_WORD_SHARE) -> bool:
    """True if ``summary`` is a piece of ``code`` (whitespace-normalised substring) or more than
    ``max_code_word_share`` of its words look like code (brackets, ``=``, ``_``, ``a.b``, ``x:``)."""
    words = summary.split()
    if not words:
        return False
    if " ".join(words) in " ".join(code.split()):
        return True
    code_words = sum(bool(_CODE_WORD.search(w)) for w in words)
    return code_words / len(words) > max_code_word_share


def examples_from(records: Sequence[dict], options: SummarizationOptions = SummarizationOptions()) -> list[Example]:
    """Usable (code without docstring, summary) pairs as examples, first of each distinct code."""
    from collapse_ray.data.codesearchnet import summary_of

    out, seen = [], set()
    for r in records:
        summary = summary_of(r.get("docstring", ""))
        if not words_ok(summary, options):
            continue
        code = strip_docstring(r.get("code") or r.get("original_string") or "")
        if code is None or len(code) > options.max_code_chars or code in seen:
            continue
        seen.add(code)
        out.append(Example(prompt_for(code), completion_for(summary),
                           meta={"reference": summary, "func_name": r.get("func_name", ""),
                                 "repo": r.get("repo", ""), "path": r.get("path", "")}))
    return out


@register_task("summarization")
class CodeSummarization(Task):
    name = "summarization"
    stop = STOP
    is_code = False
    headline_metrics = ("bleu4", "rougeL")
    Options = SummarizationOptions
    data_sources = {"file": "a CodeSearchNet-format .jsonl or .jsonl.gz file"}

    def load(self, data_path: str | None, seed: int, sizes) -> TaskData:
        o = self.options
        examples = examples_from(load_function_records(data_path), o)
        n_train, n_pool, n_test = sizes.train_examples, sizes.synthetic_pool, sizes.eval_examples
        need = n_train + n_pool + n_test
        if len(examples) < need:
            raise DataError(f"{data_path or 'the standard library'}: only {len(examples)} usable functions "
                            f"(summary of {o.min_summary_words}-{o.max_summary_words} words, code without "
                            f"docstring of at most {o.max_code_chars} characters), need {need} "
                            "(sizes.train_examples + sizes.synthetic_pool + sizes.eval_examples)")
        random.Random(seed).shuffle(examples)
        return TaskData(train=examples[:n_train], pool=examples[n_train:n_train + n_pool],
                        test=examples[n_train + n_pool:need])

    def synthesize(self, generator: Generator, prompts: Sequence[Example], sampling: Sampling,
                   generation: int) -> list[Example]:
        return complete_prompts(generator, prompts, dataclasses.replace(sampling, stop=STOP), generation,
                                finish=completion_for)

    def quality_ok(self, example: Example) -> bool:
        summary = example.completion.strip()
        return (bool(summary) and words_ok(summary, self.options)
                and not looks_like_code(summary, code_of(example.prompt), self.options.max_code_word_share))

    def evaluate(self, generator: Generator, test: Sequence[Example], sampling: Sampling) -> dict[str, float]:
        from collapse_ray.metrics.text import bleu4, rouge_l

        greedy = Sampling(max_new_tokens=sampling.max_new_tokens, temperature=0.0, seed=sampling.seed, stop=STOP)
        outputs = generator.generate([ex.prompt for ex in test], greedy)
        hypotheses = [" ".join(out.split()) for out in outputs]
        references = [ex.meta["reference"] for ex in test]
        return {
            "bleu4": bleu4(hypotheses, references),
            "rougeL": rouge_l(hypotheses, references),
            "mean_summary_words": sum(len(h.split()) for h in hypotheses) / len(hypotheses),
        }
