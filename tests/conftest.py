import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Real data shared beside the repo (never copied into it); .ci/run sets COLLAPSE_RAY_DATA_DIR."""
    path = Path(os.environ.get("COLLAPSE_RAY_DATA_DIR", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real data directory {path} not found (set COLLAPSE_RAY_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> str:
    """One cache for the tiny base model, so the test session builds it once."""
    return str(tmp_path_factory.mktemp("tiny-model-cache"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_mlflow(directory: Path):
    """An ``mlflow server`` on 127.0.0.1 with its SQLite store and artifacts in ``directory``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{directory / 'server.db'}",
         "--artifacts-destination", str(directory / "artifacts")],
        stdout=open(directory / "mlflow-server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (directory / "mlflow-server.log").read_text()
            time.sleep(1)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)   # the server and its worker: the group it leads
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    """An ``mlflow server`` for one test, stopped after it."""
    with serve_mlflow(tmp_path) as uri:
        yield uri
