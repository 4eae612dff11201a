"""CPU-seconds and peak memory of this process and its children, per generation.

Node-wide numbers (psutil.cpu_percent, virtual_memory) would be shared by every trial running
on the node; a trial's own process tree is what it alone used. Processes Ray starts for a
trial (Ray Train workers, the vLLM actor) are children of the raylet, not of the trial driver,
so they are outside this tree.
"""
from __future__ import annotations

import sys
import threading

import psutil

_MB = 1024 * 1024


class ProcessTreeMeter:
    """``start()`` once, then ``sample()`` at the end of each generation: the CPU-seconds the
    tree used since the previous sample and the peak resident memory (sum over the tree) seen
    since then, polled every ``interval_s`` on a daemon thread."""

    def __init__(self, interval_s: float = 1.0, pid: int | None = None):
        self.interval_s = interval_s
        self.process = psutil.Process(pid)
        self._cpu_at_last_sample = 0.0
        self._peak_rss = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "ProcessTreeMeter":
        self._cpu_at_last_sample = self._tree_cpu_seconds()
        self._peak_rss = self._tree_rss()
        self._reset_gpu_peak()
        self._thread = threading.Thread(target=self._poll, name="process-tree-meter", daemon=True)
        self._thread.start()
        return self

    def sample(self) -> dict[str, float]:
        cpu = self._tree_cpu_seconds()
        rss = self._tree_rss()
        with self._lock:
            peak, self._peak_rss = max(self._peak_rss, rss), rss
        used, self._cpu_at_last_sample = cpu - self._cpu_at_last_sample, cpu
        return {"sys/cpu_seconds": used, "sys/peak_rss_mb": peak / _MB, **self._gpu_sample()}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = self._tree_rss()
            with self._lock:
                self._peak_rss = max(self._peak_rss, rss)

    def _members(self) -> list[psutil.Process]:
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            return [self.process]

    def _tree_cpu_seconds(self) -> float:
        total = 0.0
        for i, proc in enumerate(self._members()):
            try:
                t = proc.cpu_times()
            except psutil.Error:   # exited between listing and reading
                continue
            total += t.user + t.system
            if i == 0:   # children that already exited and were waited for
                total += t.children_user + t.children_system
        return total

    def _tree_rss(self) -> int:
        total = 0
        for proc in self._members():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    @staticmethod
    def _cuda():
        torch = sys.modules.get("torch")   # never import torch just to measure
        try:
            return torch.cuda if torch is not None and torch.cuda.is_available() else None
        except Exception:
            return None

    def _reset_gpu_peak(self) -> None:
        cuda = self._cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()

    def _gpu_sample(self) -> dict[str, float]:
        cuda = self._cuda()
        if cuda is None:
            return {}
        out = {"sys/gpu_peak_mem_mb": cuda.max_memory_allocated() / _MB}
        cuda.reset_peak_memory_stats()
        try:
            out["sys/gpu_util_pct"] = float(cuda.utilization())   # needs pynvml; absent on some installs
        except Exception:
            pass
        return out
