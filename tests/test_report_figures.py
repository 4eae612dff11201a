"""The curves figure: one panel per (model, mitigation) that has trials, on one y scale; the
overview: one panel per task and headline metric."""
from __future__ import annotations

import pandas as pd

from collapse_ray.report.figures import draw_curves, draw_metric, draw_overview, overview_cells


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


def summary_of(groups: list[tuple[str, str, str, str, str]], generations: int = 3, n: int = 3) -> pd.DataFrame:
    """(task, metric, model, mitigation, regime) groups, each with ``generations`` rows."""
    return pd.DataFrame([dict(task=task, metric=metric, model=model, mitigation=mitigation, regime=regime,
                              generation=g, mean=0.5 - 0.1 * g, sd=0.02, n=n)
                         for task, metric, model, mitigation, regime in groups for g in range(generations)])


def test_the_overview_takes_each_task_from_the_model_and_mitigation_that_ran_the_most_regimes():
    main = [("codegen", "pass_at_1", "tiny", "none", r) for r in ("real-only", "synthetic-only", "hybrid0.5")]
    side = [("codegen", "pass_at_1", "tiny-h64", "none", r) for r in ("real-only", "synthetic-only")] \
        + [("codegen", "pass_at_1", "tiny", "quality-filter", "synthetic-only")]
    # Vulnerability's unmitigated runs have fewer seeds than a mitigation's: regimes decide, then rows.
    vulnerability = [("vulnerability", "roc_auc", "tiny", "none", r) for r in ("real-only", "synthetic-only")]
    filtered = [("vulnerability", "roc_auc", "tiny", "filter", r) for r in ("real-only", "synthetic-only")]
    summary = pd.concat([summary_of(side + main), summary_of(vulnerability, n=2), summary_of(filtered, n=3)])
    cells = overview_cells(summary, {"codegen": ["pass_at_1", "bleu4"], "vulnerability": ["f1", "roc_auc"]})
    assert cells == [("codegen", "pass_at_1", "tiny", "none"), ("vulnerability", "roc_auc", "tiny", "filter")]


def test_the_overview_draws_a_column_per_task_and_a_row_per_headline_metric(tmp_path, monkeypatch):
    import collapse_ray.report.figures as figures

    drawn = []
    monkeypatch.setattr(figures.plt, "close", drawn.append)   # keep the figure to read its axes
    groups = [(task, metric, "tiny", "none", regime)
              for task, metrics in (("codegen", ("pass_at_1", "bleu4")), ("summarization", ("rougeL",)))
              for metric in metrics for regime in ("real-only", "synthetic-only")]
    path = tmp_path / "figures" / "overview.png"
    headline = {"codegen": ["pass_at_1", "bleu4"], "summarization": ["rougeL"]}
    assert draw_overview(summary_of(groups), headline, path, baseline="real-only") == 3
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Row by row: codegen's two metrics down the first column, summarization's second row blank.
    assert [ax.get_ylabel() if ax.get_visible() else None for ax in drawn[0].axes] == \
        ["pass_at_1", "rougeL", "bleu4", None]
    visible = [ax for ax in drawn[0].axes if ax.get_visible()]
    # One colour per regime in every panel, the baseline first, and one legend that says so.
    for ax in visible:
        assert [(line.get_label().split(" ")[0], line.get_color()) for line in ax.get_lines()] == \
            [("real-only", "C0"), ("synthetic-only", "C1")]
        assert ax.get_legend() is None and "n=3 seeds" in ax.get_title()
    (legend,) = drawn[0].legends
    assert [(h.get_label(), h.get_color()) for h in legend.legend_handles] == [("real-only", "C0"), ("synthetic-only", "C1")]


def test_no_overview_without_a_headline_value(tmp_path):
    path = tmp_path / "overview.png"
    assert draw_overview(summary_of([("codegen", "drift/self_bleu", "tiny", "none", "real-only")]),
                         {"codegen": []}, path, baseline="real-only") == 0
    assert not path.exists()
