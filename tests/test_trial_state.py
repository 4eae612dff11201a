import pytest

from collapse_ray.trial_state import TrialState
from tests.small_trials import finish


def test_finished_generations_are_found_again_and_relocatable(tmp_path):
    state = TrialState(tmp_path / "a", "fp")
    finish(state, 0)
    finish(state, 1)
    (tmp_path / "a").rename(tmp_path / "b")
    done = TrialState(tmp_path / "b", "fp").finished()
    assert [d.generation for d in done] == [0, 1]
    assert done[1].model.path == str(tmp_path / "b" / "gen_01" / "model")
    assert done[0].metrics == {"pass_at_1": 0.5}


def test_a_generation_without_its_completion_record_is_unfinished(tmp_path):
    state = TrialState(tmp_path, "fp")
    finish(state, 0)
    d = state.fresh_gen_dir(1)
    (d / "synthetic.jsonl").write_text("partial")
    assert [d.generation for d in state.finished()] == [0]


def test_a_corrupted_checkpoint_is_detected_not_loaded(tmp_path):
    state = TrialState(tmp_path, "fp")
    finish(state, 0)
    finish(state, 1)
    (state.gen_dir(1) / "model" / "weights.bin").write_text("bit rot")
    assert [d.generation for d in state.finished()] == [0]
    (state.gen_dir(0) / "COMPLETE.json").write_text("{truncated")
    assert state.finished() == []


def test_a_different_config_refuses_to_reuse_the_trial_directory(tmp_path):
    TrialState(tmp_path, "fp1")
    with pytest.raises(ValueError, match="different config"):
        TrialState(tmp_path, "fp2")


def test_the_mlflow_run_id_survives(tmp_path):
    TrialState(tmp_path, "fp").set_mlflow_run_id("abc")
    assert TrialState(tmp_path, "fp").mlflow_run_id == "abc"


def test_reading_a_trial_writes_nothing_and_tells_whether_it_finished(tmp_path):
    assert not TrialState.read(tmp_path / "absent").is_finished(0)
    assert not (tmp_path / "absent").exists()
    state = TrialState(tmp_path / "t", "fp")
    finish(state, 0)
    finish(state, 1)
    before = set((tmp_path / "t").rglob("*"))
    assert TrialState.read(tmp_path / "t").is_finished(1)
    assert not TrialState.read(tmp_path / "t").is_finished(2)
    (tmp_path / "t" / "gen_01" / "model" / "weights.bin").write_text("corrupt")
    assert not TrialState.read(tmp_path / "t").is_finished(1)
    assert set((tmp_path / "t").rglob("*")) == before


@pytest.mark.parametrize("record", ['[]', '{"checksums": {}}', '{"model": "gen_00/model", "metrics": {}, "checksums": {}}',
                                    '{"model": {}, "metrics": {}, "checksums": {}}'])
def test_a_completion_record_of_the_wrong_shape_is_an_unfinished_generation(tmp_path, record):
    state = TrialState(tmp_path, "fp")
    finish(state, 0)
    finish(state, 1)
    (state.gen_dir(1) / "COMPLETE.json").write_text(record)
    assert [d.generation for d in state.finished()] == [0]


def test_reading_a_trial_whose_records_are_not_json_text_finds_nothing_rather_than_failing(tmp_path):
    state = TrialState(tmp_path, "fp")
    finish(state, 0)
    (tmp_path / "trial.json").write_bytes(b"\xff\xfe not text")
    (state.gen_dir(0) / "COMPLETE.json").write_bytes(b"\xff\xfe not text")
    read = TrialState.read(tmp_path)
    assert read.mlflow_run_id is None and read.finished() == []
