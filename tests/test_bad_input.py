"""Bad input fails before any compute, as one line naming what is wrong, and `validate` refuses
exactly what `run` refuses (docs/bad_input.md lists each class with the test row here)."""
import errno
import gzip
import http.server
import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from collapse_ray.cli import main as cli
from collapse_ray.config import config_from_dict
from collapse_ray.data import DataError
from collapse_ray.errors import EXIT_CODE, CollapseRayError, ConfigError, ModelError
from collapse_ray.loop import run_trial
from collapse_ray.tracking import TrackingError, TrialTracker

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # no model hub here: a hub id must fail fast, not time out
SAMPLE = "codesearchnet/codesearchnet_python_sample.jsonl"   # 100 real CodeSearchNet records


def good_config(tmp_path, data_dir) -> dict:
    """A config that passes every check (summarization on 100 real records: loads in a second)."""
    return {"name": "t", "task": {"name": "summarization", "data_path": str(data_dir / SAMPLE)},
            "generations": 1, "sizes": {"train_examples": 8, "synthetic_pool": 8, "eval_examples": 8},
            "output_dir": str(tmp_path / "runs"), "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}}


def set_field(data: dict, dotted: str, value) -> dict:
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return data


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):   # the server's log would share the test's stderr
        pass


def plain_http_server():
    """A web server that is not MLflow (http.server: 404 on every API path)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# Each row: how to make the bad input from a good config -> text that the error line must contain
# (the field or file it names). A row returns the config file's path and extra CLI arguments.
def field(dotted, value):
    def make(tmp_path, data):
        return write(tmp_path, set_field(data, dotted, value))
    return make


def write(tmp_path, data=None, text=None, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text if text is not None else yaml.safe_dump(data))
    return path, []


def data_file(content: bytes, name: str):
    def make(tmp_path, data):
        (tmp_path / name).write_bytes(content)
        return write(tmp_path, set_field(data, "task.data_path", str(tmp_path / name)))
    return make


def _one_long_line_gzip(path) -> bool:
    """65 MiB of one line, gzip-compressed to about 64 kB, written without holding it in memory."""
    with gzip.open(path, "wb") as f:
        for _ in range(65):
            f.write(b"a" * (1 << 20))
    return True


def trial_of_another_config(tmp_path, data):
    (tmp_path / "runs" / "t").mkdir(parents=True)
    (tmp_path / "runs" / "t" / "trial.json").write_text('{"fingerprint": "someone-else"}')
    return write(tmp_path, data)


def not_mlflow(tmp_path, data):
    server = plain_http_server()
    return write(tmp_path, set_field(data, "tracking.uri", f"http://127.0.0.1:{server.server_address[1]}"))


RECORD = b'{"code": "def f():\\n    return 1", "docstring": "Return one."}\n'
ROWS = {
    "config file missing": (lambda t, d: (t / "nope.yaml", []), "nope.yaml does not exist"),
    "config file is a directory": (lambda t, d: (t, []), "is a directory"),
    "config file is a device": (lambda t, d: (Path(os.devnull), []), "config file /dev/null is not a regular file"),
    "config file not YAML": (lambda t, d: write(t, text="name: [unclosed\n"), "cfg.yaml is not valid YAML: line"),
    "duplicate YAML key": (lambda t, d: write(t, text="name: t\ntraining: {lr: 0.1}\ntraining: {epochs: 2}\n"),
                           "line 3: key 'training' repeats the one on line 2"),
    "empty config file": (lambda t, d: write(t, text="# nothing\n"), "cfg.yaml is empty"),
    "top level not a mapping": (lambda t, d: write(t, text="- a\n- b\n"), "must hold a mapping"),
    "unknown field": (field("training.lrr", 1e-4), "training.lrr: unknown field"),
    "wrong type": (field("training.lr", "fast"), "training.lr: expected a number"),
    "empty section": (lambda t, d: write(t, text=yaml.safe_dump(d) + "sampling:\n"), "sampling: expected a mapping"),
    "value out of range": (field("training.lr", 3.0), "training.lr: must be in (0, 1)"),
    "nan": (field("sampling.top_p", float("nan")), "sampling.top_p: must be a finite number"),
    "infinity": (field("mitigation.oversample", float("inf")), "mitigation.oversample: must be a finite number"),
    "choice not allowed": (field("regime.name", "mixed"), "regime.name: unknown regime 'mixed'; known regimes:"),
    "unknown task": (field("task.name", "translation"), "task.name: unknown task 'translation'"),
    "zero layers": (field("model.tiny.num_layers", 0), "model.tiny.num_layers: must be at least 1"),
    "zero heads": (field("model.tiny.num_heads", 0), "model.tiny.num_heads: must be at least 1"),
    "heads do not divide hidden size": (field("model.tiny.num_heads", 3), "model.tiny.hidden_size: must be divisible"),
    "odd head size": (field("model.tiny.hidden_size", 12), "model.tiny.hidden_size: hidden_size / num_heads must be even"),
    "negative LoRA alpha": (field("training.lora_alpha", -16), "training.lora_alpha: must be positive"),
    "negative build time": (field("model.tiny.train_minutes", -1), "model.tiny.train_minutes: must be positive"),
    "negative seed": (field("seed", -1), "seed: must be an integer from 0 to 2147483647 (2**31 - 1), got -1"),
    "unknown vLLM dtype": (field("generator.dtype", "fp8x"), "generator.dtype: 'fp8x' is not allowed"),
    "model id of the wrong shape": (field("model.name_or_path", "not a model id"), "model.name_or_path: 'not a model id'"),
    "hub model not available": (field("model.name_or_path", "no-such-org/no-such-model"),
                                "model.name_or_path: cannot load 'no-such-org/no-such-model'"),
    "name with a path separator": (field("name", "../outside"), "name: '../outside' cannot name the trial's directory"),
    "absolute name": (field("name", "/tmp/elsewhere"), "name: '/tmp/elsewhere'"),
    "unsupported tracking scheme": (field("tracking.uri", "ftp://host/x"), "tracking.uri: scheme 'ftp'"),
    "tracking URI without host": (field("tracking.uri", "http://"), "tracking.uri: 'http://' names no host"),
    "sqlite URI with a query and no file": (field("tracking.uri", "sqlite:///?timeout=5"),
                                            "tracking.uri: 'sqlite:///?timeout=5' names no database file"),
    "sqlite store is a directory": (lambda t, d: write(t, set_field(d, "tracking.uri", f"sqlite:///{t}")),
                                    "tracking.uri: " + "{tmp}" + " is a directory"),
    "sqlite store that is not a database": (lambda t, d: (t / "m.db").write_text("x" * 100) and
                                            field("tracking.uri", f"sqlite:///{t}/m.db")(t, d),
                                            "tracking.uri: {tmp}/m.db is not an SQLite database"),
    "tracking server that is not MLflow": (not_mlflow, "answers HTTP but is not an MLflow server"),
    "output_dir is a file": (lambda t, d: (t / "f").write_text("x") and field("output_dir", str(t / "f"))(t, d),
                             "output_dir: {tmp}/f is a file"),
    "output_dir where no entry can be made (as root the permission bits pass)": (
        field("output_dir", "/proc/collapse"), "output_dir: /proc/collapse cannot be created:"),
    "tracking store in a directory that refuses new files": (
        field("tracking.uri", "sqlite:////proc/mlflow.db"), "tracking.uri: /proc cannot be written:"),
    "output_dir under a file": (lambda t, d: (t / "f").write_text("x") and field("output_dir", str(t / "f/runs"))(t, d),
                                "output_dir: {tmp}/f/runs cannot be created: {tmp}/f is a file"),
    "trial directory of another config": (trial_of_another_config, "runs/t holds a trial run with a different config"),
    "data path that does not exist": (field("task.data_path", "/no/such/file.jsonl"), "task.data_path: /no/such/file.jsonl does not exist"),
    "data path empty": (field("task.data_path", ""), "task.data_path: is empty"),
    "data path a directory where a file is read": (lambda t, d: field("task.data_path", str(t))(t, d),
                                                   "task.data_path: {tmp} is a directory; task summarization reads"),
    "hf: id for a task that reads files": (field("task.data_path", "hf:owner/name"), "task.data_path: task summarization cannot read a HF dataset"),
    "malformed data line": (data_file(RECORD + b'{"code": broken\n', "d.jsonl"), "d.jsonl: line 2 is not valid JSON"),
    "undecodable bytes": (data_file(RECORD + b'{"code": "\xff\xfe"}\n', "d.jsonl"), "d.jsonl: line 2, byte 11"),
    "gzip under a plain name": (data_file(gzip.compress(RECORD + b"oops\n"), "d.jsonl"), "d.jsonl: line 2 is not valid JSON"),
    "gzip of one line too long to hold (a decompression bomb)": (
        lambda t, d: _one_long_line_gzip(t / "bomb.jsonl.gz") and field("task.data_path", str(t / "bomb.jsonl.gz"))(t, d),
        "bomb.jsonl.gz: line 1 is over 64 MiB (no line break within it)"),
    "truncated gzip": (data_file(gzip.compress(RECORD * 50)[:-30], "d.jsonl.gz"), "d.jsonl.gz: gzip data is corrupt or truncated"),
    "other compression": (data_file(b"BZh91AY&SY" + RECORD, "d.jsonl"), "d.jsonl: is a bzip2-compressed file"),
    "record lacks a field": (data_file(b'{"docstring": "Return one."}\n', "d.jsonl"), "d.jsonl: line 1: record lacks field 'code'"),
    "too little data for the sizes": (field("sizes.train_examples", 5000), "need 5016"),
    "path with a name over 255 bytes": (field("output_dir", "é" * 130), "output_dir: 'éééé"),
    "empty output_dir (it would be the working directory)": (field("output_dir", " "), "output_dir: is empty"),
    "config file name over 255 bytes": (lambda t, d: (t / ("x" * 300 + ".yaml"), []),
                                        "x.yaml' has a name of 305 bytes ('xxxxxxxx"),
    "control character in a path": (field("task.data_path", "data\n.jsonl"), "task.data_path: 'data\\n.jsonl' holds a control"),
    "NUL in the model path": (field("model.name_or_path", "./m\0"), "model.name_or_path: './m\\x00' holds a control"),
    "sqlite store name over 255 bytes": (field("tracking.uri", "sqlite:///" + "d" * 300 + ".db"), "tracking.uri: 'ddd"),
    "integer beyond 64 bits (every integer field)": (field("sizes.max_new_tokens", 2**64),
                                                     "sizes.max_new_tokens: 18446744073709551616 does not fit a 64-bit integer"),
    "seed beyond numpy's range": (field("seed", 2**32), "seed: must be an integer from 0 to 2147483647"),
    "tiny recipe too large to build here": (field("model.tiny.hidden_size", 1 << 16),
                                            "model.tiny: this recipe has 1.03e+11 parameters"),
    "tiny context too long": (field("model.tiny.context_length", 10**6), "model.tiny.context_length: must be from 16"),
    "--set without '='": (lambda t, d: (write(t, d)[0], ["--set", "training.lr"]), "--set training.lr: expected FIELD=VALUE"),
    "--set into a value": (lambda t, d: (write(t, d)[0], ["--set", "name.x=1"]), "name: is a str, not a section"),
}


@pytest.fixture(scope="module")
def warm(tmp_path_factory, data_dir):
    """One good config validated first: the first validation imports the task and model code,
    seconds that are no row's refusal."""
    tmp = tmp_path_factory.mktemp("warm")
    assert cli(["validate", str(write(tmp, good_config(tmp, data_dir))[0])]) == 0


@pytest.mark.parametrize("row", ROWS)
def test_validate_refuses_with_one_line_naming_the_field_or_file(tmp_path, data_dir, capsys, warm, row):
    make, expected = ROWS[row]
    path, extra = make(tmp_path, good_config(tmp_path, data_dir))
    t0 = time.monotonic()
    code = cli(["validate", str(path), *extra])
    err = capsys.readouterr().err
    assert code == EXIT_CODE, err
    assert err.startswith("error: ") and err.count("\n") == 1, err   # one line, no traceback
    assert expected.format(tmp=tmp_path) in err
    # Fails fast (no retry, no wait for the hub): 10x the ~3 s a refusal may take on a busy shared
    # machine (well under a second on a quiet one).
    assert time.monotonic() - t0 < 30


def test_a_good_config_is_valid(tmp_path, data_dir, capsys):
    path, _ = write(tmp_path, good_config(tmp_path, data_dir))
    assert cli(["validate", str(path)]) == 0
    assert capsys.readouterr().err == ""
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()   # validate writes nothing


@pytest.mark.parametrize("row", ROWS)
def test_run_refuses_what_validate_refuses_with_the_same_line_before_any_compute(tmp_path, data_dir, capsys, row):
    make, _ = ROWS[row]
    path, extra = make(tmp_path, good_config(tmp_path, data_dir))
    assert cli(["validate", str(path), *extra]) == EXIT_CODE
    refused = capsys.readouterr().err
    assert cli(["run", str(path), *extra]) == EXIT_CODE
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == refused.strip() and "Traceback" not in err
    assert not list((tmp_path / "runs").glob("*/gen_00")) and not (tmp_path / "mlflow.db").exists()


def test_debug_shows_the_traceback(tmp_path, data_dir):
    path, _ = write(tmp_path, set_field(good_config(tmp_path, data_dir), "training.lr", 3.0))
    with pytest.raises(CollapseRayError, match="training.lr"):
        cli(["validate", str(path), "--debug"])


def test_unreachable_tracking_server_fails_within_seconds_naming_the_uri():
    uri = "http://127.0.0.1:9"  # discard port: nothing listens
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match="http://127.0.0.1:9 is unreachable"):
        TrialTracker(uri, "x")
    assert time.monotonic() - t0 < 10   # 10x the second a refused connection takes: no retry loop


def test_malformed_data_file_fails_before_any_training(tmp_path):
    bad = tmp_path / "reveal.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write('{"func": "int f(void) { return 0; }", "target": 0}\n{"func": broken\n')
    cfg = config_from_dict({"task": {"name": "vulnerability", "data_path": str(bad)},
                            "output_dir": str(tmp_path / "runs"),
                            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}})
    with pytest.raises(DataError, match=r"reveal.jsonl.gz.*line 2"):
        run_trial(cfg)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_model_that_cannot_be_loaded_fails_before_training(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config_from_dict({"model": {"name_or_path": "no-such-org/no-such-model"},
                            "task": {"name": "summarization",
                                     "data_path": str(data_dir / "codesearchnet" / "codesearchnet_python_sample.jsonl")},
                            "sizes": {"train_examples": 8, "synthetic_pool": 8, "eval_examples": 8},
                            "output_dir": str(tmp_path / "runs"),
                            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}})
    with pytest.raises(ModelError, match="model.name_or_path: cannot load 'no-such-org/no-such-model'"):
        run_trial(cfg)
    assert not list((tmp_path / "runs").rglob("gen_00"))


def test_mitigations_that_remove_every_sample_stop_the_trial_at_that_generation(tmp_path, tiny_cache):
    from collapse_ray.tasks import register_task
    from collapse_ray.tasks.codegen import CodeGeneration
    from tests.small_trials import small_config

    @register_task("codegen-that-rejects-everything")
    class RejectingCodeGeneration(CodeGeneration):
        def quality_ok(self, example):
            return False

    cfg = small_config(tmp_path, tiny_cache, **{"task.name": "codegen-that-rejects-everything",
                                                "mitigation.quality_filter": True})
    with pytest.raises(RuntimeError, match="generation 0: the mitigations removed all 8 synthetic samples"):
        run_trial(cfg)


def test_an_os_refusal_no_check_foresaw_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """The CLI's last resort (path_rules.os_error_line): an OS refusal about a named file is the
    user's to fix; an OSError of another kind, or about no file, may be a bug and stays loud."""
    import collapse_ray.cli as cli_module

    def refuse(error):
        def command(args):
            raise error
        return command

    monkeypatch.setattr(cli_module, "cmd_validate", refuse(PermissionError(errno.EACCES, "Permission denied", "/srv/x")))
    assert cli(["validate", "any.yaml"]) == EXIT_CODE
    assert capsys.readouterr().err.splitlines() == [
        "error: '/srv/x': Permission denied; choose a path this user can use (--debug shows where it was reached)"]
    with pytest.raises(PermissionError):
        cli(["validate", "any.yaml", "--debug"])
    for bug in (FileNotFoundError(errno.ENOENT, "No such file or directory", "/srv/x"), OSError(errno.EACCES, "no file")):
        monkeypatch.setattr(cli_module, "cmd_validate", refuse(bug))
        with pytest.raises(OSError):
            cli(["validate", "any.yaml"])


@pytest.mark.parametrize("text", ["a" * 255, "a" * 256, "d/" + "é" * 127, "d/" + "é" * 128,
                                  "/".join(["d" * 200] * 20) + "/" + "x" * 75, "/".join(["d" * 200] * 20) + "/" + "x" * 76])
def test_path_text_is_refused_exactly_where_the_os_refuses_to_look_it_up(tmp_path, monkeypatch, text):
    """Byte limits, not characters ('é' is two bytes in UTF-8), at the OS's own boundary: where the
    check passes a path, looking it up says 'missing'; where it refuses, the lookup raises."""
    from collapse_ray.path_rules import check_path_text

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()   # the OS answers 'missing' at the first missing directory, before a longer name
    try:
        os.stat(text)
    except FileNotFoundError:
        check_path_text(text, "f")
    except OSError as e:
        assert e.errno == errno.ENAMETOOLONG
        with pytest.raises(ConfigError, match="^f: "):
            check_path_text(text, "f")


@pytest.mark.parametrize("text", ["tab\there", "line\nbreak", "del\x7f", "nul\x00"])
def test_a_path_with_a_control_character_is_refused(text):
    from collapse_ray.path_rules import check_path_text

    with pytest.raises(ConfigError, match="holds a control character"):
        check_path_text(text, "f")
