"""The job handlers: kind -> the function that runs a job of that kind (worker/tasks/run.py calls it
with the job's JobContext and its stored params). What each kind accepts lives in worker/job_kinds.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from worker.tasks.context import JobContext
from worker.tasks.dataset_prepare import run_dataset_prepare
from worker.tasks.directions import run_edit_grid, run_ganspace
from worker.tasks.mix_grid import run_mix_grid
from worker.tasks.model_import import run_model_import
from worker.tasks.probe import run_probe
from worker.tasks.projection import run_projection
from worker.tasks.training import run_training
from worker.tasks.video import run_video

Handler = Callable[[JobContext, dict[str, Any]], dict[str, Any]]

HANDLERS: Mapping[str, Handler] = {
    "probe": run_probe,
    "mix_grid": run_mix_grid,
    "video": run_video,
    "model_import": run_model_import,
    "projection": run_projection,
    "dataset_prepare": run_dataset_prepare,
    "training": run_training,
    "ganspace": run_ganspace,
    "edit_grid": run_edit_grid,
}
