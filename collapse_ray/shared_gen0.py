"""Generation 0 computed once for every trial that would compute the same one.

Generation 0 trains the base model on real data only, the same set for every regime of a seed,
and evaluates it greedily, so trials that differ only in regime or mitigation train and evaluate
the same model (what they sample from it, filter and measure as drift stays their own). The first
such trial to get there trains and evaluates it and publishes the model (hard links of its files)
and the task metrics under ``<output_dir>/_shared/gen0-<key>/``; the others wait for it on a
file lock and reuse it. The key hashes everything generation 0 depends on: the trial's config
fingerprint without its name, regime and mitigation. A published record carries checksums of the
model's files and is ignored if they no longer match; a trial that dies while computing releases
the lock (the kernel drops it) and the next one computes.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from collapse_ray.atomic_io import write_json_atomic
from collapse_ray.datatypes import ModelRef
from collapse_ray.train.base import TrainResult
from collapse_ray.trial_state import file_checksums

RECORD = "GEN0.json"


def generation0_key(fingerprint_data: dict) -> str:
    """``fingerprint_data``: what config_fingerprint hashes. Name, regime and mitigation leave."""
    data = {k: v for k, v in fingerprint_data.items() if k not in ("name", "regime", "mitigation")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Generation0:
    trained: TrainResult
    task_metrics: dict[str, float]
    source: str     # the trial that computed it


class SharedGeneration0:
    def __init__(self, output_dir: str | os.PathLike, key: str, trial: str):
        self.root = Path(output_dir) / "_shared" / f"gen0-{key}"
        self.trial = trial
        self._lock_fd: int | None = None

    def claim(self) -> Generation0 | None:
        """The published generation 0, waiting while another trial computes it; or None, and
        this trial now holds the claim and must :meth:`publish` (or :meth:`release`)."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root.parent / f"{self.root.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)   # blocks while another trial computes it
        found = self.load()
        if found is not None:
            os.close(fd)
            return found
        self._lock_fd = fd
        return None

    def load(self) -> Generation0 | None:
        try:
            record = json.loads((self.root / RECORD).read_text())
            if file_checksums(self.root / "model") != record["checksums"]:
                return None
            t = record["trained"]
            adapter = str(self.root / "model") if t["adapter"] else None
            model = ModelRef(str(self.root / "model") if not adapter else t["base_path"], adapter)
            trained = TrainResult(model, t["train_loss"], t["steps"], t["tokens"], t["seconds"])
            return Generation0(trained, record["task_metrics"], record["source"])
        except (OSError, ValueError, KeyError):
            return None

    def publish(self, trained: TrainResult, task_metrics: dict[str, float]) -> None:
        """Share this trial's generation 0 (its model's files hard-linked, copied across file
        systems) and give up the claim."""
        source = Path(trained.model.adapter or trained.model.path)
        tmp = self.root.with_name(self.root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp / "model", copy_function=_link_or_copy)
        write_json_atomic(tmp / RECORD, {
            "source": self.trial, "task_metrics": task_metrics, "checksums": file_checksums(tmp / "model"),
            "trained": {"adapter": trained.model.adapter is not None, "base_path": trained.model.path,
                        "train_loss": trained.train_loss, "steps": trained.steps, "tokens": trained.tokens,
                        "seconds": trained.seconds}})
        shutil.rmtree(self.root, ignore_errors=True)
        tmp.rename(self.root)
        self.release()

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
