"""The built-in `probe` job: proves the whole path (API -> broker -> worker -> database) without a GPU.

It sleeps for `seconds` while reporting progress, honours cancel, and can fail on purpose so that the
failure path can be tested end to end too.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.tasks.context import JobContext

# A probe is a diagnostic, not a way to park a worker: an hour is far beyond any test or check.
MAX_PROBE_SECONDS = 3600.0
# Progress steps: enough for a visible progress bar, few enough to keep database writes cheap.
PROBE_STEPS = 20


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    seconds: float = Field(default=0.0, ge=0.0, le=MAX_PROBE_SECONDS)
    queue: Literal["inference", "training"] = "inference"
    fail_message: str | None = Field(default=None, min_length=1, max_length=1000)

    @field_validator("seconds", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        # Strict mode refuses ints for a float field; an int number of seconds is fine, a bool is not.
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


def run_probe(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Sleep `seconds` in PROBE_STEPS slices, reporting progress after each."""
    probe = ProbeParams.model_validate(params)
    started = time.monotonic()
    ctx.report(0.0, {"step": 0, "steps": PROBE_STEPS})
    for step in range(1, PROBE_STEPS + 1):
        ctx.sleep(probe.seconds / PROBE_STEPS)
        ctx.report(step / PROBE_STEPS, {"step": step, "steps": PROBE_STEPS})
    if probe.fail_message is not None:
        raise ProbeFailed(probe.fail_message)
    return {
        "slept_seconds": round(time.monotonic() - started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "attempt": ctx.attempt,
    }


class ProbeFailed(Exception):
    """The failure a probe was asked for; its message becomes the job's error."""
