"""Waiting with a deadline, for tests and the helper programs they start: never a fixed sleep."""

from __future__ import annotations

import time


def wait_for(what: str, predicate, seconds: float, poll_s: float = 0.5):
    """The first truthy value of predicate(), or TimeoutError naming what was awaited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"waited {seconds:.0f} s for {what}")
