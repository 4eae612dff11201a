"""Mid-run MLflow calls that ride out a server outage: retried with backoff until a deadline,
then one line that says what was lost and how to get it back.

Only transient failures are retried (no connection, a timeout, a 5xx or 429 answer); a 4xx is
a bug or a refusal and is raised at once. Each attempt is one MLflow client call, which itself
retries per ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``; the deadline is checked between attempts.
A retried call must be idempotent: callers re-read what the server already holds in each attempt.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TypeVar

T = TypeVar("T")
MAX_DELAY_S = 30.0


def is_transient(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return status >= 500 or status == 429
    return isinstance(exc, (OSError, TimeoutError))   # requests' ConnectionError is an OSError


class Retrier:
    def __init__(self, uri: str, budget_s: float, say: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.uri, self.budget_s = uri, budget_s
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.sleep, self.clock = sleep, clock
        self.gave_up = False

    def call(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it succeeds, a non-transient error, or ``budget_s`` has passed."""
        deadline, delay = None, 1.0
        while True:
            try:
                result = attempt()
            except Exception as e:   # noqa: BLE001 - sorted by is_transient, the rest re-raised
                if not is_transient(e):
                    raise
                now = self.clock()
                if deadline is None:
                    deadline = now + self.budget_s
                    self.say(f"tracking: MLflow at {self.uri} failed while {what} ({_first_line(e)}); "
                             f"retrying for up to {self.budget_s:g} s")
                if now >= deadline:
                    self.gave_up = True
                    from collapse_ray.tracking import TrackingError   # imported by now: tracking imports us

                    raise TrackingError(
                        f"tracking.uri: MLflow at {self.uri} did not answer for {self.budget_s:g} s while {what} "
                        f"({_first_line(e)}); the trial's finished generations are on disk: once the server "
                        f"answers, run again to resume (it logs what MLflow lacks)") from None
                self.sleep(min(delay, deadline - now))
                delay = min(2 * delay, MAX_DELAY_S)
                continue
            if deadline is not None:
                self.say(f"tracking: MLflow at {self.uri} answers again; {what} done")
            return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
