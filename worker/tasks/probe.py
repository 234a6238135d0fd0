"""The built-in `probe` job: proves the whole path (API -> broker -> worker -> database) without a GPU.

It sleeps for `seconds` while reporting progress, honours cancel, and can fail on purpose so that the
failure path can be tested end to end too.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from worker.job_kinds import ProbeParams
from worker.tasks.context import JobContext

# Progress steps: enough for a visible progress bar, few enough to keep database writes cheap.
PROBE_STEPS = 20


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
