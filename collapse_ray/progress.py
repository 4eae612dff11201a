"""Progress lines for long work: which generation, which phase, how long, and an ETA."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class Progress:
    def __init__(self, label: str, total_generations: int, first_generation: int = 0, stream=None):
        self.label = label
        self.total = total_generations
        self.first = first_generation
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.generation = first_generation
        self.phase_seconds: dict[str, float] = {}

    def note(self, message: str) -> None:
        """A line about the trial as a whole (before its generations start: loading, checking)."""
        print(f"[{self.label}] {message}", file=self.stream, flush=True)

    def resume_at(self, first_generation: int) -> None:
        """Known once the trial's state is read: where a resumed trial continues."""
        self.first = self.generation = first_generation

    def say(self, message: str) -> None:
        print(f"[{self.label}] gen {self.generation}/{self.total - 1} {message}", file=self.stream, flush=True)

    def begin_generation(self, generation: int) -> None:
        self.generation = generation
        self.phase_seconds = {}
        done = generation - self.first
        eta = ""
        if done > 0:
            per_gen = (time.monotonic() - self.started) / done
            eta = f", ETA {format_duration(per_gen * (self.total - generation))}"
        self.say(f"started (elapsed {format_duration(time.monotonic() - self.started)}{eta})")

    @contextmanager
    def phase(self, name: str):
        self.say(f"{name} ...")
        t0 = time.monotonic()
        yield
        seconds = time.monotonic() - t0
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + seconds
        self.say(f"{name} done in {format_duration(seconds)}")


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
