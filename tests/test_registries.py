"""Regimes and tasks are found by registration alone, and only their own modules name them."""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collapse_ray.regimes import regime_names
from collapse_ray.tasks import headline_metrics, registered_tasks

PACKAGE = Path(__file__).resolve().parents[1] / "collapse_ray"
OWNERS = ("regimes", "tasks", "metrics")   # where regimes, tasks and metrics are defined


def string_literals(path: Path, names: set[str]) -> list[tuple[str, int, str]]:
    """(file, line, literal) for each string constant (f-string parts included) in ``names``."""
    return [(str(path.relative_to(PACKAGE)), node.lineno, node.value)
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]


def known_names() -> set[str]:
    return set(regime_names()) | {m for task in registered_tasks() for m in headline_metrics(task)}


def test_no_regime_or_headline_metric_name_is_written_outside_its_owners():
    outside = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in OWNERS]
    assert [hit for p in outside for hit in string_literals(p, known_names())] == []


def test_the_scan_finds_the_names_where_they_are_defined():
    inside = [p for owner in OWNERS[:2] for p in (PACKAGE / owner).rglob("*.py")]
    found = {value for p in inside for _, _, value in string_literals(p, known_names())}
    assert found == known_names()


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("copy")
    shutil.copytree(PACKAGE, root / "collapse_ray", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def validate(root: Path, config: str) -> subprocess.CompletedProcess:
    (root / "experiment.yaml").write_text(config)
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "collapse_ray.cli", "validate", "experiment.yaml"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("package, source, decorator, new_name, config, refused", [
    ("tasks", "codegen.py", "register_task", "codegen-copy", "task: {name: codegen-copy}\n",
     "task.name: unknown task 'codegen-copy'"),
    ("regimes", "hybrid.py", "register_regime", "hybrid-copy", "regime: {name: hybrid-copy, alpha: 0.25}\n",
     "regime.name: unknown regime 'hybrid-copy'"),
])
def test_a_copied_module_registers_a_new_name_with_no_other_file_changed(package_copy, package, source, decorator,
                                                                         new_name, config, refused):
    before = validate(package_copy, config)
    assert before.returncode != 0 and refused in before.stderr
    text = (package_copy / "collapse_ray" / package / source).read_text()
    old = f'@{decorator}("{Path(source).stem}")'
    assert old in text
    copy = package_copy / "collapse_ray" / package / f"{new_name.replace('-', '_')}.py"
    copy.write_text(text.replace(old, f'@{decorator}("{new_name}")'))
    after = validate(package_copy, config)
    assert after.returncode == 0, after.stderr
    assert ": valid (" in after.stdout and new_name in after.stdout


def test_a_task_module_missing_a_package_is_named_and_does_not_hide_the_others(package_copy):
    (package_copy / "collapse_ray" / "tasks" / "needs_missing.py").write_text("import no_such_package_here\n")
    missing = validate(package_copy, "task: {name: needs_missing}\n")
    assert missing.returncode != 0
    assert "task.name: task 'needs_missing' needs the package 'no_such_package_here'" in missing.stderr
    assert validate(package_copy, "task: {name: codegen}\n").returncode == 0
