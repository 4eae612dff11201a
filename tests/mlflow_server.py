"""Test helpers: a real ``mlflow server`` on 127.0.0.1 that can be killed and restarted on the same
port, and a TCP proxy in front of it that loses the answer to one log-batch call."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` with a SQLite store and artifacts under ``root``; same port across restarts."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout_s: float = 180) -> None:
        self.starts += 1
        log = self.root / f"mlflow-server-{self.starts}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    with urllib.request.urlopen(self.uri + "/health", timeout=2) as resp:
                        if resp.status == 200:
                            return
                except OSError:
                    pass
                assert self.proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        except BaseException:   # a server too slow to answer would outlive the test that started it
            self.kill()
            raise

    def stop(self) -> None:
        """SIGTERM the server and its workers (the process group it leads), SIGKILL if they linger."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its workers (the process group it leads): no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextlib.contextmanager
def serve_mlflow(directory: Path):
    """An ``mlflow server`` with its store in ``directory``, yielded as its URI, stopped after."""
    server = MlflowServer(directory)
    try:
        server.start()
        yield server.uri
    finally:
        server.stop()


class LoseOneLogBatchAnswer:
    """Forwards every connection to the server, except that the server's answer to the first
    ``runs/log-batch`` call is thrown away and the client's connection closed: the server has
    committed the batch, the client hears nothing."""

    LOG_BATCH = b"POST /api/2.0/mlflow/runs/log-batch"

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.uri = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.log_batch_calls = 0
        self.answers_lost = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            lose = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, lose), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, lose), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, lose: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if data.startswith(self.LOG_BATCH):
                    with self.lock:
                        self.log_batch_calls += 1
                        if self.answers_lost == 0:
                            self.answers_lost = 1
                            lose.set()
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket, lose: threading.Event) -> None:
        try:
            while data := upstream.recv(65536):
                if lose.is_set():   # the server answered, so it has committed the batch
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
