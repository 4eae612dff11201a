"""A trial driver process's trainer and generator, kept for the next trial Tune runs in it.

Tune reuses a finished trial's driver actor for its next trial of the same placement group
(``TuneConfig(reuse_actors=True)``, tune_runner.py). A trial's largest start-up on CPU is its
backends: the Ray Train worker group (controller, worker, Train's helpers) and the
vLLM actor (importing vLLM, building the engine). So the process keeps them when its trial
finishes, and the next trial takes them if it asks for the same ones (equal backend specs: the
same constructor arguments, and for vLLM the same placement group); otherwise they are closed and
built anew. Nothing of a trial's state lives in them: every training job names its init model,
texts and output, and every generation loads its weights into the engine behind the weight probe.

A trial that fails closes them, so a retry starts with fresh processes. When Tune stops the
driver (the grid's end, or no pending trial fits its placement group), the trainable's cleanup
closes them (tune_runner.closing_kept_backends) before Tune removes the driver's placement group,
which kills the process: a Train group's own placement group would outlive a kill. A driver killed
by anything else takes its actors along (Ray's owner fate-sharing), and the trial directory's
record of the group's placement group lets the trial's retry free it (train/worker_group.py).
"""
from __future__ import annotations

from typing import Any, Callable

from collapse_ray.backends import BackendSpec, build_generator, generator_spec, trainer_spec


class KeptBackends:
    def __init__(self) -> None:
        self._trainer: tuple[BackendSpec, Any] | None = None
        self._generator: tuple[tuple[BackendSpec, Any], Any] | None = None
        self._say: Callable[[str], None] = lambda msg: None
        self.reused = {"trainer": 0, "generator": 0}   # trials that took a kept one

    def for_trial(self, cfg, resources, placement_group, say: Callable[[str], None]):
        """The trainer and generator for this trial: kept ones where their spec matches."""
        self._say = say   # a kept trainer's progress lines carry the current trial's name
        spec = trainer_spec(cfg, resources)
        if self._trainer is not None and self._trainer[0] == spec:
            self.reused["trainer"] += 1
            say("ray train: this driver's worker group from its previous trial takes the jobs")
        else:
            self._close_trainer()
            self._trainer = (spec, spec.build(progress=self._progress))
        key = (generator_spec(cfg, resources), getattr(placement_group, "id", None))
        if self._generator is not None and self._generator[0] == key:
            self.reused["generator"] += 1
            say("vllm: this driver's engine from its previous trial generates")
        else:
            self._close_generator()
            self._generator = (key, build_generator(cfg, resources, placement_group))
        return self._trainer[1], self._generator[1]

    def close(self) -> None:
        self._close_trainer()
        self._close_generator()

    def _progress(self, msg: str) -> None:
        self._say(msg)

    def _close_trainer(self) -> None:
        kept, self._trainer = self._trainer, None
        if kept is not None:
            kept[1].close()

    def _close_generator(self) -> None:
        kept, self._generator = self._generator, None
        if kept is not None:
            kept[1].close()
