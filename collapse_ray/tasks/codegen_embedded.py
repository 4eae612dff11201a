"""Code generation on the embedded executable benchmark: a benchmark the tiny model can pass.

HumanEval stays the evaluation for real models (task ``codegen``); at the tiny model's scale it
scores 0 in every generation, so collapse cannot show on it. This task uses small generated
functions instead (``collapse_ray.data.function_families``): a signature and a docstring that
states the parameters, hidden tests, families of arithmetic, strings, lists, conditionals and
loops. Real data: training problems with their canonical bodies. Synthetic data: the model's own
bodies for the pool's prompts. Evaluation: code generation's own path (greedy completion, tests
run in the sandbox, BLEU-4 against the canonical body), plus pass@1 per family.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from collapse_ray.data import DataError
from collapse_ray.data.function_families import FAMILY_NAMES, make_splits
from collapse_ray.datatypes import Example
from collapse_ray.generate.base import Generator, Sampling
from collapse_ray.tasks import register_task
from collapse_ray.tasks.base import TaskData
from collapse_ray.tasks.codegen import EVAL_TIMEOUT_S, CodeGeneration, execution_metrics, model_prompt, run_problems

# The problem families every split is dealt from, in equal shares (docs/tasks.md describes them).
FAMILIES = FAMILY_NAMES
PER_FAMILY_METRIC = "pass_at_1/{family}"


def example_of(problem: dict, with_tests: bool = False) -> Example:
    """A problem as a training example, split as code generation splits a function: the prompt
    ends at the docstring, the completion starts with the newline after it. ``with_tests``: the
    problem's tests travel in the meta (pool prompts: the execution filter runs them)."""
    meta = {"task_id": problem["task_id"], "family": problem["family"]}
    if with_tests:
        meta.update(test=problem["test"], entry_point=problem["entry_point"])
    return Example(model_prompt(problem), "\n" + problem["canonical_solution"], meta=meta)


def pass_by_family(problems: Sequence[dict], results: Sequence) -> dict[str, float]:
    outcomes: dict[str, list[bool]] = {}
    for problem, result in zip(problems, results):
        outcomes.setdefault(problem["family"], []).append(result.passed)
    return {PER_FAMILY_METRIC.format(family=f): sum(v) / len(v) for f, v in sorted(outcomes.items())}


@register_task("codegen_embedded")
class EmbeddedCodeGeneration(CodeGeneration):
    name = "codegen_embedded"
    headline_metrics = ("pass_at_1", "bleu4")
    pool_has_tests = True

    def load(self, data_path: str | None, seed: int, sizes) -> TaskData:
        if data_path is not None:
            raise DataError(f"task.data_path: {self.name} generates its problems and reads no data; "
                            f"leave it unset (got {data_path!r})")
        train, pool, test = make_splits(seed, n_test=sizes.eval_examples, n_pool=sizes.synthetic_pool,
                                        n_train=sizes.train_examples, families=FAMILIES)
        return TaskData(train=[example_of(p) for p in train], pool=[example_of(p, with_tests=True) for p in pool],
                        test=test)

    def passes_tests(self, examples: Sequence[Example]) -> list[bool]:
        from collapse_ray.data.humaneval import program_for
        from collapse_ray.sandbox import check_isolation, run_many

        check_isolation(self.allow_unisolated)
        # a pool example carries its problem's tests, not its prompt: the prompt is the example's own
        programs = [program_for({**ex.meta, "prompt": ex.prompt}, ex.prompt + ex.completion) for ex in examples]
        return [r.passed for r in run_many(programs, timeout_s=EVAL_TIMEOUT_S, allow_unisolated=self.allow_unisolated)]

    def evaluate(self, generator: Generator, test: Sequence[dict], sampling: Sampling) -> dict[str, float]:
        completions, results = run_problems(generator, test, sampling, self.allow_unisolated)
        return {**execution_metrics(test, completions, results), **pass_by_family(test, results)}


class MostCommonBodyBaseline:
    """A generator that does not read the docstring: it answers every prompt with the most common
    training body of the prompt's family (ties: the first in training order). The function name
    tells the family (each family has its own)."""

    def __init__(self, train: Sequence[Example]):
        by_name: dict[str, Counter] = {}
        for ex in train:
            by_name.setdefault(_function_name(ex.prompt), Counter())[ex.completion] += 1
        self.bodies = {name: counts.most_common(1)[0][0] for name, counts in by_name.items()}

    def load(self, model) -> None:
        pass

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        return [self.bodies.get(_function_name(p), "\n    pass\n") for p in prompts]

    def close(self) -> None:
        pass


def _function_name(prompt: str) -> str:
    return prompt.split("def ", 1)[1].split("(", 1)[0]
