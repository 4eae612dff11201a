"""Code generation: train on Python functions with docstrings, evaluate on HumanEval.

Prompt = a function's signature and docstring; completion = its body. Synthetic data is the
model's own bodies for held-out signatures + docstrings. Evaluation: pass@1 (greedy, one sample
per problem, tests executed in the sandbox) and BLEU-4 against the canonical solution.
"""
from __future__ import annotations

import ast
import random
import textwrap
from dataclasses import dataclass
from typing import Sequence

from collapse_ray.data import DataError
from collapse_ray.data.codesearchnet import load_function_records
from collapse_ray.datatypes import Example
from collapse_ray.generate.base import Generator, Sampling
from collapse_ray.python_source import parse, parses
from collapse_ray.tasks import register_task
from collapse_ray.tasks.base import Task, TaskData, complete_prompts
from collapse_ray.typed import require

# HumanEval's usual stop sequences: a new top-level statement ends the function.
STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
MAX_FUNCTION_CHARS = 1200   # default of task.options.max_function_chars


@dataclass(frozen=True)
class CodegenOptions:
    # Functions whose source is longer than this are not used as training or pool data.
    max_function_chars: int = MAX_FUNCTION_CHARS

    def check(self, where: str) -> None:
        require(self.max_function_chars > 0, f"{where}.max_function_chars",
                f"must be positive, got {self.max_function_chars}")
EVAL_TIMEOUT_S = 10.0  # wall-clock limit per test program in the sandbox


def split_function(code: str) -> tuple[str, str] | None:
    """(signature + docstring, body) of a function's source, or None if it is not one plain
    function with a docstring and a non-empty body.

    The split falls before the newline that ends the docstring: byte-level BPE merges a newline
    with the next line's indentation into one token, so a prompt ending in a bare newline asks
    the model to continue from a token it only ever saw at the very end of a function (it then
    answers with end-of-text)."""
    code = textwrap.dedent(code).strip("\n") + "\n"
    tree = parse(code)
    if tree is None or len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    fn = tree.body[0]
    if ast.get_docstring(fn) is None or len(fn.body) < 2:
        return None
    lines = code.splitlines(keepends=True)
    doc_end = fn.body[0].end_lineno
    prompt, body = "".join(lines[:doc_end]), "".join(lines[doc_end:])
    if not body.strip():
        return None
    return prompt[:-1], "\n" + body


def model_prompt(problem: dict) -> str:
    """A HumanEval prompt without its trailing newline (see split_function for why)."""
    return problem["prompt"].rstrip()


def function_examples(records: Sequence[dict], max_chars: int = MAX_FUNCTION_CHARS) -> list[Example]:
    out = []
    for r in records:
        code = r.get("original_string") or r.get("code") or ""
        if len(code) > max_chars:
            continue
        split = split_function(code)
        if split is not None:
            out.append(Example(split[0], split[1], meta={"func_name": r.get("func_name", "")}))
    return out


@register_task("codegen")
class CodeGeneration(Task):
    name = "codegen"
    stop = STOP
    is_code = True
    headline_metrics = ("pass_at_1", "bleu4")
    Options = CodegenOptions
    data_sources = {"file": "a CodeSearchNet-format .jsonl or .jsonl.gz file"}
    # config sandbox.allow_unisolated (set by the loop): run programs where no namespace can
    # isolate them, instead of refusing to evaluate.
    allow_unisolated = False

    def load(self, data_path: str | None, seed: int, sizes) -> TaskData:
        from collapse_ray.data.humaneval import load_humaneval

        examples = function_examples(load_function_records(data_path), self.options.max_function_chars)
        need = sizes.train_examples + sizes.synthetic_pool
        if len(examples) < need:
            raise DataError(f"{data_path or 'the standard library'}: only {len(examples)} usable functions "
                            f"with docstrings, need {need} (sizes.train_examples + sizes.synthetic_pool)")
        rng = random.Random(seed)
        rng.shuffle(examples)
        problems = load_humaneval()
        test = sorted(random.Random(seed).sample(problems, min(sizes.eval_examples, len(problems))),
                      key=lambda p: int(p["task_id"].split("/")[1]))
        return TaskData(train=examples[:sizes.train_examples],
                        pool=examples[sizes.train_examples:need], test=test)

    def synthesize(self, generator: Generator, prompts: Sequence[Example], sampling: Sampling,
                   generation: int) -> list[Example]:
        return complete_prompts(generator, prompts, sampling, generation)

    def quality_ok(self, example: Example) -> bool:
        return bool(example.completion.strip()) and parses(example.text)

    def evaluate(self, generator: Generator, test: Sequence[dict], sampling: Sampling) -> dict[str, float]:
        completions, results = run_problems(generator, test, sampling, self.allow_unisolated)
        return execution_metrics(test, completions, results)


def run_problems(generator: Generator, problems: Sequence[dict], sampling: Sampling,
                 allow_unisolated: bool = False) -> tuple[list[str], list]:
    """Greedy completions of HumanEval-shaped problems and the sandbox's result of running each
    completed function against the problem's tests (refused before generating where programs
    cannot be isolated, unless ``allow_unisolated``: config sandbox.allow_unisolated)."""
    from collapse_ray.data.humaneval import program_for
    from collapse_ray.sandbox import check_isolation, run_many

    check_isolation(allow_unisolated)

    greedy = Sampling(max_new_tokens=sampling.max_new_tokens, temperature=0.0, seed=sampling.seed, stop=STOP)
    prompts = [model_prompt(p) for p in problems]
    completions = generator.generate(prompts, greedy)
    results = run_many([program_for(p, prompt + c) for p, prompt, c in zip(problems, prompts, completions)],
                       timeout_s=EVAL_TIMEOUT_S, allow_unisolated=allow_unisolated)
    return completions, results


def execution_metrics(problems: Sequence[dict], completions: Sequence[str], results: Sequence) -> dict[str, float]:
    from collapse_ray.metrics.text import bleu4

    passed = [r.passed for r in results]
    return {
        "pass_at_1": sum(passed) / len(passed),
        "bleu4": bleu4(list(completions), [p["canonical_solution"] for p in problems]),
        "eval_timeouts": float(sum(r.status == "timeout" for r in results)),
    }
