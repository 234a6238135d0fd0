"""The `projection` job: find the w whose image is closest to an uploaded target (GAN inversion).

Runs `gan.projection.project` (StyleGAN2 paper, section 5) on a stored model and writes the official
projector's outputs as artifacts: `projected_w.npz` (key "w", [1, num_ws, w_dim]), `proj.png` (that w
rendered with the model's constant noise), `target.png` (the target as the model saw it: centre square,
LANCZOS-resized) and, when asked, `proj.mp4` (target beside the projection, one frame per step, 10 fps).

The perceptual distance comes from settings: NVIDIA's VGG16 LPIPS file (loaded once per process, cached
on disk, checksum checked), or the `simple` stand-in for tests and offline use, which reconstructs
visibly worse. Progress is written at most every REPORT_INTERVAL_S (a 1000-step run on a GPU makes
about 20 steps a second; a database write per step would cost more than the step), and cancel is seen
between any two steps.
"""

from __future__ import annotations

import functools
import io
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.tasks.context import JobContext

if TYPE_CHECKING:
    from gan.perceptual import PerceptualDistance
    from worker.settings import Settings
    from worker.storage import Storage

# Progress rows per second at most; the last step is always written.
REPORT_INTERVAL_S = 0.5
# Frames per second of proj.mp4, as the official projector's video.
VIDEO_FPS = 10
# Uploaded targets live under this prefix, named by their sha256 (api/services/projections.py).
UPLOAD_PREFIX = "uploads/projections"
IMAGE_KEY_PATTERN = re.compile(rf"^{UPLOAD_PREFIX}/[0-9a-f]{{64}}\.(png|jpg|webp)$")
MAX_SEED = 2**32 - 1

# Artifact names, kinds and content types: one place, read by the API too.
W_ARTIFACT = ("projected_w.npz", "projected_w", "application/octet-stream")
IMAGE_ARTIFACT = ("proj.png", "image", "image/png")
TARGET_ARTIFACT = ("target.png", "target", "image/png")
VIDEO_ARTIFACT = ("proj.mp4", "video", "video/mp4")


class ProjectionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=36)
    image_key: str = Field(description="storage key of the uploaded target")
    space: Literal["w", "w+"] = "w"
    steps: int = Field(default=1000, ge=1, le=100_000)
    seed: int = Field(default=303, ge=0, le=MAX_SEED)
    save_video: bool = False
    class_idx: int | None = Field(default=None, ge=0)

    @field_validator("image_key")
    @classmethod
    def _uploaded_target(cls, key: str) -> str:
        # Only the upload area: a job must not be pointed at another key's model or artifact file.
        if not IMAGE_KEY_PATTERN.match(key):
            raise ValueError(f"must be a projection upload key ({UPLOAD_PREFIX}/<sha256>.png|jpg|webp)")
        return key


def perceptual_distance(settings: Settings) -> PerceptualDistance:
    """The distance the settings name; VGG16 is loaded once per process and source.

    A VGG16 file that cannot be had (no STYLEGAN_VGG16_PATH, the URL unreachable: an offline machine)
    fails the job within about VGG16_DOWNLOAD_TIMEOUT_S, with the two settings that fix it named.
    """
    from gan.errors import GanError
    from gan.metrics.detector import DownloadError

    if settings.projection_distance == "simple":
        from gan.perceptual import SimpleFeatureDistance

        return SimpleFeatureDistance()
    fix = (
        "set STYLEGAN_VGG16_PATH to a local copy of NVIDIA's vgg16.pt, or STYLEGAN_PROJECTION_DISTANCE=simple "
        "for the stand-in distance (no download; blurrier projections)"
    )
    if settings.vgg16_path is not None:
        if not settings.vgg16_path.is_file():
            raise GanError(f"STYLEGAN_VGG16_PATH={settings.vgg16_path} is not a file on this worker; {fix}")
        source = str(settings.vgg16_path)
    else:
        source = settings.vgg16_url
    try:
        return _vgg16(source, settings.vgg16_sha256, str(settings.data_dir / "cache" / "detectors"))
    except DownloadError as exc:
        raise GanError(
            f"projection needs the VGG16 LPIPS file (STYLEGAN_PROJECTION_DISTANCE=vgg16) and it could not "
            f"be downloaded: {exc}; {fix}"
        ) from exc


# Seconds any one network wait for the VGG16 download may take (connect, or one read): enough for a
# slow link, short enough that an offline worker fails the job at once rather than after minutes.
VGG16_DOWNLOAD_TIMEOUT_S = 10.0


@functools.lru_cache(maxsize=2)
def _vgg16(source: str, sha256: str | None, cache_dir: str) -> PerceptualDistance:
    from gan.perceptual import load_vgg16_lpips

    return load_vgg16_lpips(
        source, sha256=sha256, cache_dir=Path(cache_dir), progress=False, timeout_s=VGG16_DOWNLOAD_TIMEOUT_S
    )


def _read_local(storage: Storage, key: str, stack: tempfile.TemporaryDirectory[str]) -> Path:
    """A local path for `key`: in place for local storage, else a copy in a temp dir."""
    path = storage.local_path(key)
    if path is not None:
        return path
    copy = Path(stack.name) / Path(key).name
    with storage.open(key) as src:
        copy.write_bytes(src.read())
    return copy


def run_projection(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import PIL.Image
    import torch

    from gan.errors import GanError
    from gan.io.checkpoint import load_generator
    from gan.projection import ProjectionStep, open_image, prepare_target, project, render_ws
    from worker.artifacts import store_artifact
    from worker.celery_app import process_sessions
    from worker.db.models import Job, Model
    from worker.storage import make_storage

    p = ProjectionParams.model_validate(params)
    settings = ctx.settings
    storage = make_storage(settings)
    sessions = process_sessions(settings)
    with sessions() as session:
        job = session.get(Job, ctx.job_id)
        model = session.get(Model, p.model_id)
        owner_key = job.owner_key if job is not None else None
        # The API checked this too; a job row written another way must not reach another key's model.
        if model is None or model.owner_key not in (None, owner_key):
            raise GanError(f"model {p.model_id} does not exist (deleted after the projection was queued?)")
        model_key = model.file_key
    if not storage.exists(p.image_key):
        raise GanError("the uploaded target image is no longer in storage; upload it again")

    # First: a VGG16 file that cannot be had fails the job before any model is loaded.
    perceptual = perceptual_distance(settings)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scratch = tempfile.TemporaryDirectory(prefix="projection-")
    try:
        G = load_generator(_read_local(storage, model_key, scratch)).to(device)
        with storage.open(p.image_key) as f:
            image = open_image(f.read())
    finally:
        scratch.cleanup()
    if (p.class_idx is None) != (G.c_dim == 0):
        raise GanError(f"this model has {G.c_dim} classes: class_idx must be given exactly when c_dim > 0")
    target = prepare_target(image, G.img_resolution)  # uint8 [R, R, 3]

    # Work units: the optimisation steps, then (with a video) one rendered frame per step.
    units = p.steps * (2 if p.save_video else 1)
    last_report = 0.0

    def report(done: int, detail: dict[str, Any], force: bool = False) -> None:
        nonlocal last_report
        ctx.check()
        now = time.monotonic()
        if force or now - last_report >= REPORT_INTERVAL_S:
            last_report = now
            ctx.report(min(done / units, 0.99), detail)

    def on_step(info: ProjectionStep) -> None:
        detail = {"phase": "optimize", "step": info.step + 1, "steps": info.num_steps, "loss": info.loss}
        report(info.step + 1, detail | {"distance": info.distance}, force=info.step + 1 == info.num_steps)

    ctx.report(0.0, {"phase": "optimize", "step": 0, "steps": p.steps})
    result = project(
        G,
        target,
        perceptual=perceptual,
        space=p.space,
        num_steps=p.steps,
        seed=p.seed,
        class_idx=p.class_idx,
        device=device,
        keep_steps=p.save_video,
        callback=on_step,
    )

    def png(array: np.ndarray) -> bytes:
        out = io.BytesIO()
        PIL.Image.fromarray(array, "RGB").save(out, format="PNG")
        return out.getvalue()

    w_file = io.BytesIO()
    np.savez(w_file, w=result.ws.numpy())  # [1, num_ws, w_dim] float32, as the official projector
    outputs = [(W_ARTIFACT, w_file.getvalue()), (IMAGE_ARTIFACT, png(result.image))]
    outputs.append((TARGET_ARTIFACT, png(target.numpy())))
    if p.save_video:
        from gan.video import encode_video

        assert result.w_steps is not None
        w_steps, target_np = result.w_steps, target.numpy()

        def frames() -> Any:
            for step in range(w_steps.shape[0]):
                detail = {"phase": "video", "frame": step + 1, "frames": p.steps}
                report(p.steps + step + 1, detail, force=step + 1 == p.steps)
                proj = render_ws(G, w_steps[step : step + 1].contiguous())[0]
                yield np.concatenate([target_np, proj], axis=1)  # [R, 2R, 3]: target | projection

        outputs.append((VIDEO_ARTIFACT, encode_video(frames(), "mp4", fps=VIDEO_FPS)))

    ctx.check()
    ids: dict[str, str] = {}
    with sessions() as session:
        for spec, data in outputs:
            name, kind, content_type = spec
            ids[kind] = store_artifact(
                session,
                storage,
                job_id=ctx.job_id,
                kind=kind,
                name=name,
                content_type=content_type,
                data=data,
            )
    return {
        "projection_id": ctx.job_id,
        "model_id": p.model_id,
        "w_artifact_id": ids["projected_w"],
        "image_artifact_id": ids["image"],
        "target_artifact_id": ids["target"],
        "video_artifact_id": ids.get("video"),
        "space": p.space,
        "seed": p.seed,
        "steps_done": result.steps_done,
        # LPIPS (or the stand-in's distance) between proj.png and target.png.
        "distance": result.distance,
    }
