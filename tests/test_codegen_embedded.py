"""The embedded executable benchmark: its problems, splits and evaluation (the loop run of the
task is in test_loop.py)."""
import pytest

from collapse_ray.config import SizesConfig
from collapse_ray.data import DataError
from collapse_ray.data.function_families import FAMILIES, FAMILY_NAMES, make_problem, make_splits
from collapse_ray.data.humaneval import program_for
from collapse_ray.generate.base import Sampling
from collapse_ray.sandbox import run_many
from collapse_ray.tasks import get_task
from collapse_ray.tasks.codegen import model_prompt
from collapse_ray.tasks.codegen_embedded import MostCommonBodyBaseline

SIZES = SizesConfig(train_examples=420, synthetic_pool=140, eval_examples=224, max_new_tokens=64)


@pytest.fixture(scope="module")
def data():
    return get_task("codegen_embedded").load(None, 0, SIZES)


def identity(problem: dict) -> tuple:
    return problem["family"], tuple(sorted(problem["params"].items()))


def test_every_canonical_solution_passes_and_trivial_bodies_fail_in_the_sandbox():
    problems = [p for split in make_splits(0, n_test=224, n_pool=140, n_train=420) for p in split]
    canonical = [program_for(p, p["prompt"] + p["canonical_solution"]) for p in problems]
    trivial = [program_for(p, model_prompt(p) + body) for body in ("\n    pass\n", "\n    return None\n")
               for p in problems[:224]]
    results = run_many(canonical + trivial)
    assert [p["task_id"] for p, r in zip(problems, results) if not r.passed] == []
    assert sum(r.passed for r in results[len(problems):]) == 0


def test_every_familys_canonical_bodies_pass_across_its_parameter_grid():
    # a spread of each grid (both ends and the middle), so every template and reference agree
    problems = [make_problem(f, params) for f in FAMILIES for params in
                (lambda g: [g[0], g[len(g) // 2], g[-1]])(f.grid())]
    results = run_many([program_for(p, p["prompt"] + p["canonical_solution"]) for p in problems])
    assert [p["task_id"] for p, r in zip(problems, results) if not r.passed] == []


def test_most_common_body_baseline_scores_below_0_2(data):
    task = get_task("codegen_embedded")
    metrics = task.evaluate(MostCommonBodyBaseline(data.train), data.test, Sampling(max_new_tokens=64))
    assert metrics["pass_at_1"] < 0.2
    assert set(metrics) >= {f"pass_at_1/{f}" for f in FAMILY_NAMES}


def test_splits_are_disjoint_by_family_and_parameters_and_balanced(data):
    train = {ex.meta["task_id"] for ex in data.train}
    pool = {ex.meta["task_id"] for ex in data.pool}
    test = {p["task_id"] for p in data.test}
    assert (len(train), len(pool), len(test)) == (420, 140, 224)
    assert not (train & pool) and not (train & test) and not (pool & test)
    splits = make_splits(0, n_test=224, n_pool=140, n_train=420)
    identities = [identity(p) for split in splits for p in split]
    assert len(set(identities)) == len(identities)
    per_family = {f: sum(p["family"] == f for p in data.test) for f in FAMILY_NAMES}
    assert set(per_family.values()) == {224 // len(FAMILY_NAMES)}


def test_generation_is_deterministic_from_the_seed():
    first, again, other = (make_splits(seed, n_test=28, n_pool=14, n_train=56) for seed in (3, 3, 4))
    assert first == again
    assert [p["task_id"] for p in first[2]] != [p["task_id"] for p in other[2]]


def test_training_examples_are_split_like_codegen_functions(data):
    from collapse_ray.tasks.codegen import split_function

    ex = data.train[0]
    assert split_function(ex.text) == (ex.prompt, ex.completion)
    assert ex.prompt.endswith('"""') and ex.completion.startswith("\n    ")


def test_too_many_problems_for_a_family_grid_and_a_data_path_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="family 'slice_case' has 240 parameter points"):
        make_splits(0, n_test=0, n_pool=0, n_train=241 * len(FAMILY_NAMES))
    with pytest.raises(DataError, match="task.data_path: codegen_embedded generates its problems"):
        get_task("codegen_embedded").load(str(tmp_path), 0, SIZES)
