"""A trial driver process keeps its trial's trainer and generator for the next trial Tune runs in
it (grid/kept_backends.py): handed over where the backend specs match, rebuilt where they do
not, closed when a trial fails. In process (the local trainer, HF generate): no Ray needed."""
from __future__ import annotations

import pytest

from collapse_ray.grid.kept_backends import KeptBackends
from tests.small_trials import small_config


@pytest.fixture
def closed(monkeypatch):
    """The backends whose close() ran, in order."""
    from collapse_ray.generate.hf import HFGenerator
    from collapse_ray.train.local import LocalTrainer

    seen = []
    monkeypatch.setattr(LocalTrainer, "close", lambda self: seen.append(self))
    monkeypatch.setattr(HFGenerator, "close", lambda self: seen.append(self))
    return seen


def test_the_next_trial_takes_the_kept_backends_when_their_specs_match(tmp_path, closed):
    kept, lines = KeptBackends(), []
    first = kept.for_trial(small_config(tmp_path, str(tmp_path), name="a"), None, None, lambda m: lines.append(("a", m)))
    second = kept.for_trial(small_config(tmp_path, str(tmp_path), name="b", **{"regime.name": "real-only"}), None, None,
                            lambda m: lines.append(("b", m)))
    assert [x is y for x, y in zip(first, second)] == [True, True]
    assert kept.reused == {"trainer": 1, "generator": 1} and closed == []
    second[0].progress("train step 1/2")   # the kept trainer speaks for the trial that holds it now
    assert lines[-1] == ("b", "train step 1/2")


def test_a_trial_asking_for_other_backends_gets_new_ones_and_the_kept_ones_are_closed(tmp_path, closed):
    kept = KeptBackends()
    trainer, generator = kept.for_trial(small_config(tmp_path, str(tmp_path)), None, None, print)
    new_trainer, new_generator = kept.for_trial(small_config(tmp_path, str(tmp_path), **{"generator.batch_size": 4}),
                                                None, None, print)
    assert new_trainer is trainer and new_generator is not generator and closed == [generator]
    kept.for_trial(small_config(tmp_path, str(tmp_path), **{"training.lr": 1e-4, "generator.batch_size": 4}), None, None, print)
    assert closed == [generator, trainer]
    kept.close()   # what a failed trial does: nothing kept for the retry
    assert len(closed) == 4 and kept.for_trial(small_config(tmp_path, str(tmp_path)), None, None, print)[0] is not trainer
