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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from gan.errors import GanError
from gan.io.checkpoint import load_generator
from gan.metrics.detector import DownloadError
from gan.perceptual import PerceptualDistance, SimpleFeatureDistance, load_vgg16_lpips
from gan.projection import ProjectionStep, open_image, prepare_target, project, render_ws
from gan.video import encode_video
from worker.artifacts import store_artifact
from worker.db.models import Model
from worker.job_kinds import ProjectionParams
from worker.settings import Settings
from worker.storage import Storage
from worker.tasks.context import JobContext

# Progress rows per second at most; the last step is always written.
REPORT_INTERVAL_S = 0.5
# Frames per second of proj.mp4, as the official projector's video.
VIDEO_FPS = 10

# Artifact names, kinds and content types: one place, read by the API too.
W_ARTIFACT = ("projected_w.npz", "projected_w", "application/octet-stream")
IMAGE_ARTIFACT = ("proj.png", "image", "image/png")
TARGET_ARTIFACT = ("target.png", "target", "image/png")
VIDEO_ARTIFACT = ("proj.mp4", "video", "video/mp4")


def perceptual_distance(settings: Settings) -> PerceptualDistance:
    """The distance the settings name; VGG16 is loaded once per process and source.

    A VGG16 file that cannot be had (no STYLEGAN_VGG16_PATH, the URL unreachable: an offline machine)
    fails the job within about VGG16_DOWNLOAD_TIMEOUT_S, with the two settings that fix it named.
    """
    if settings.projection_distance == "simple":
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
    p = ProjectionParams.model_validate(params)
    settings, storage, device = ctx.settings, ctx.storage, ctx.device
    with ctx.sessions() as session:
        # The API checked this too; a job row written another way must not reach another key's model.
        model_key = ctx.load_visible(session, Model, p.model_id).file_key
    if not storage.exists(p.image_key):
        raise GanError("the uploaded target image is no longer in storage; upload it again")

    # First: a VGG16 file that cannot be had fails the job before any model is loaded.
    perceptual = perceptual_distance(settings)
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
    with ctx.sessions() as session:
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
