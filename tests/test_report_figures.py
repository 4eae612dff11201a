"""The curves figure: one panel per (model, mitigation) that has trials, on one y scale."""
from __future__ import annotations

import pandas as pd

from collapse_ray.report.figures import draw_curves, draw_metric


def rows_of(task: str, metric: str) -> list[dict]:
    return [dict(task=task, metric=metric, model="tiny", mitigation="none", regime=regime, generation=g,
                 mean=0.5, sd=0.0, n=3) for regime in ("real-only", "synthetic-only") for g in range(2)]


def test_a_task_without_values_yet_gets_no_figure_and_the_others_are_drawn(tmp_path):
    # A study in parts, reported while one task's trials are all still in generation 0.
    summary = pd.DataFrame(rows_of("codegen", "pass_at_1"))
    paths = draw_curves(summary, {"codegen": ["pass_at_1"], "vulnerability": ["f1"]}, tmp_path, "real-only")
    assert [p.name for p in paths] == [p.name for p in tmp_path.iterdir()]
    assert len(paths) == 1 and "codegen" in paths[0].name


def test_a_mitigation_run_on_one_model_only_leaves_the_other_panel_blank(tmp_path):
    rows = [dict(task="codegen", metric="pass_at_1", model=model, mitigation=mitigation, regime=regime,
                 generation=g, mean=0.5 - 0.1 * g, sd=0.02, n=3)
            for model, mitigation, regime in (("tiny", "none", "real-only"), ("tiny", "none", "synthetic-only"),
                                              ("small", "none", "synthetic-only"),
                                              ("tiny", "quality-filter", "synthetic-only"))
            for g in range(3)]
    path = tmp_path / "curves.png"
    assert draw_metric(pd.DataFrame(rows), "codegen", "pass_at_1", path, baseline="real-only") == 3   # of 2 x 2
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_panel_has_a_tick_for_every_generation_of_the_longest_panel(tmp_path, monkeypatch):
    import collapse_ray.report.figures as figures

    drawn = []
    monkeypatch.setattr(figures.plt, "close", drawn.append)   # keep the figure to read its axes
    rows = [dict(task="codegen", metric="pass_at_1", model=model, mitigation="none", regime="real-only",
                 generation=g, mean=0.5, sd=0.0, n=3)
            for model, last in (("tiny", 10), ("tiny-h64", 2)) for g in range(last + 1)]   # the short one drawn last
    draw_metric(pd.DataFrame(rows), "codegen", "pass_at_1", tmp_path / "curves.png", baseline="real-only")
    for ax in drawn[0].axes:
        assert list(ax.get_xticks()) == list(range(11))
