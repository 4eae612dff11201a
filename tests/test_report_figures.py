"""The curves figure: one panel per (model, mitigation) that has trials, on one y scale."""
from __future__ import annotations

import pandas as pd

from collapse_ray.report.figures import draw_metric


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
