"""Latent walks between seeds, StyleGAN3 walks along the input transform, and GIF/WebP/MP4 encoding.

Space: in z the walk follows great circles (slerp), because z ~ N(0, I) in 512 dimensions lives near
the sphere of radius sqrt(z_dim) and a straight line between two samples would pass through
low-probability, low-norm z (StyleGAN paper, section 4.2, for the perceptual path length in Z). In w
the walk is linear (lerp), as w has no such shell and the official `gen_video.py` interpolates w too.

Timing: `num_frames` frames in all. Without looping the first frame is the first seed and the last
frame the last seed. With looping the walk goes on from the last seed back to the first and stops one
step short of it, so that a looping player shows no repeated frame.

Encoding returns bytes and writes no file the caller did not ask for: GIF and WebP go through Pillow in
memory; MP4 (H.264, yuv420p) goes through the ffmpeg binary that the imageio-ffmpeg wheel bundles
(`imageio_ffmpeg.write_frames`), into a private temporary file that is read back and deleted, because an
MP4 writer must seek back to write its index and so cannot write to a pipe.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch

from gan.editing import Edit, Sweep, apply_edits, sweep_strengths
from gan.errors import GanError
from gan.sampling import Sampler, to_uint8
from gan.vocabulary import NoiseMode, check_noise_mode

Space = Literal["w", "z"]
VideoFormat = Literal["gif", "webp", "mp4"]
VIDEO_FORMATS: tuple[VideoFormat, ...] = ("gif", "webp", "mp4")

# A GIF frame delay is stored in centiseconds, and browsers replace delays under 2 cs with 10 cs, so a
# GIF above 50 fps would play at 10 fps.
MAX_GIF_FPS = 50.0


# ------------------------------------------------------------------------------------------------------
# Interpolation


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """a + t (b - a), elementwise."""
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the last dimension (Shoemake 1985).

    The angle Omega between a and b comes from their directions; the result is
    sin((1 - t) Omega) / sin Omega * a + sin(t Omega) / sin Omega * b, which keeps the norm when |a| = |b|
    and moves between unequal norms smoothly. Nearly parallel vectors (sin Omega ~ 0) fall back to lerp,
    the limit of the formula.
    """
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(-1, keepdim=True) / (
        a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True)
    )
    omega = torch.arccos(cos.clamp(-1, 1))
    sin = torch.sin(omega)
    near = sin.abs() < eps
    safe = torch.where(near, torch.ones_like(sin), sin)
    wa = torch.where(near, torch.full_like(sin, 1 - t), torch.sin((1 - t) * omega) / safe)
    wb = torch.where(near, torch.full_like(sin, t), torch.sin(t * omega) / safe)
    return (wa * a64 + wb * b64).to(a.dtype)


def frame_positions(num_keys: int, num_frames: int, loop: bool) -> list[tuple[int, int, float]]:
    """For each frame, (key index from, key index to, fraction t in [0, 1))."""
    if num_keys < 1:
        raise GanError("a walk needs at least one key")
    if num_frames < 1:
        raise GanError(f"frames must be >= 1, got {num_frames}")
    positions = []
    for f in range(num_frames):
        if loop:
            p = f * num_keys / num_frames
        else:
            p = f * (num_keys - 1) / (num_frames - 1) if num_frames > 1 else 0.0
        k = min(int(math.floor(p)), num_keys - 1)
        t = p - k
        nxt = (k + 1) % num_keys if loop else min(k + 1, num_keys - 1)
        positions.append((k, nxt, t))
    return positions


def interpolate(
    keys: torch.Tensor, num_frames: int, loop: bool, kind: Literal["lerp", "slerp"]
) -> torch.Tensor:
    """keys [K, ...] -> frames [num_frames, ...], `lerp` or `slerp` between consecutive keys."""
    fn = slerp if kind == "slerp" else lerp
    out = [fn(keys[k0], keys[k1], t) for k0, k1, t in frame_positions(keys.shape[0], num_frames, loop)]
    return torch.stack(out)


def fractions(num_frames: int, loop: bool) -> list[float]:
    """Each frame's place in [0, 1] along the whole walk, with the timing of `frame_positions`."""
    if num_frames < 1:
        raise GanError(f"frames must be >= 1, got {num_frames}")
    if loop:
        return [f / num_frames for f in range(num_frames)]
    return [f / (num_frames - 1) if num_frames > 1 else 0.0 for f in range(num_frames)]


def transform_path(
    num_frames: int,
    translate: tuple[tuple[float, float], tuple[float, float]] | None = None,
    rotate: tuple[float, float] | None = None,
    loop: bool = False,
) -> list[tuple[tuple[float, float] | None, float | None]]:
    """Per frame (translate, rotate) on straight lines from the start to the end value (StyleGAN3)."""
    out: list[tuple[tuple[float, float] | None, float | None]] = []
    for s in fractions(num_frames, loop):
        tr = None
        if translate is not None:
            (x0, y0), (x1, y1) = translate
            tr = (x0 + (x1 - x0) * s, y0 + (y1 - y0) * s)
        rot = None if rotate is None else rotate[0] + (rotate[1] - rotate[0]) * s
        out.append((tr, rot))
    return out


# ------------------------------------------------------------------------------------------------------
# Frames


def walk_frames(
    sampler: Sampler,
    seeds: Sequence[int],
    num_frames: int,
    space: Space = "w",
    psi: float = 1.0,
    cutoff: int | None = None,
    class_idx: int | None = None,
    noise_mode: NoiseMode = "const",
    loop: bool = False,
    translate: tuple[tuple[float, float], tuple[float, float]] | None = None,
    rotate: tuple[float, float] | None = None,
    batch_size: int = 8,
    edits: Sequence[Edit] = (),
    sweep: Sweep | None = None,
    start_ws: torch.Tensor | None = None,
) -> Iterator[np.ndarray]:
    """uint8 frames [H, W, C], one at a time, rendered `batch_size` per forward pass.

    The arguments are checked and the latents computed on the call; the frames are rendered as the
    returned iterator is consumed, so an encoder can stream them.

    `translate` ((x0, y0), (x1, y1)) and `rotate` (deg0, deg1) move a StyleGAN3 model's input transform
    along the walk; with a single seed they make a pure camera move over a fixed image.

    `edits` (gan.editing) move every frame's ws; `sweep` moves them along one direction, its strength
    going from `sweep.start` to `sweep.stop` over the frames (and back, looped): with a single seed, the
    classic editing clip. `start_ws` ([num_ws, w_dim], e.g. a projected photo's w) is the walk's first key,
    before the seeds' (space w only: a projected w has no z).
    """
    if space not in ("w", "z"):
        raise GanError(f"invalid space {space!r}: use w or z")
    has_path = translate is not None or rotate is not None
    if start_ws is not None and space != "w":
        raise GanError("a walk from a given w goes through w (space w): a projected w has no z")
    if len(seeds) + (start_ws is not None) < 2 and not has_path and sweep is None:
        raise GanError(
            "a walk needs at least two seeds, or one seed and a StyleGAN3 translate/rotate path or a sweep"
        )
    if has_path and not sampler.is_stylegan3:
        raise GanError("translate and rotate need a StyleGAN3 model (they move its Fourier input)")
    if batch_size < 1:
        raise GanError(f"batch size must be >= 1, got {batch_size}")

    if space == "z":
        zs = interpolate(sampler.zs_for_seeds(seeds), num_frames, loop, "slerp")  # [F, z_dim]
        ws = torch.cat(
            [
                sampler.ws_from_zs(zs[i : i + batch_size], psi=psi, cutoff=cutoff, class_idx=class_idx)
                for i in range(0, num_frames, batch_size)
            ]
        )
    else:
        keys = sampler.ws_for_seeds(seeds, psi=psi, cutoff=cutoff, class_idx=class_idx).cpu()
        if start_ws is not None:
            keys = torch.cat([torch.as_tensor(start_ws, dtype=keys.dtype)[None], keys])
        ws = interpolate(keys, num_frames, loop, "lerp")  # [F, num_ws, w_dim]
    ws = apply_edits(ws.cpu(), edits, sampler.config)
    if sweep is not None:
        strengths = sweep_strengths(sweep.start, sweep.stop, num_frames, loop)
        ws = torch.stack(
            [
                apply_edits(frame, [Edit(sweep.direction, s, sweep.layers)], sampler.config)
                for frame, s in zip(ws, strengths, strict=True)
            ]
        )

    path = transform_path(num_frames, translate, rotate, loop) if has_path else None
    check_noise_mode(noise_mode)
    return _render(sampler, ws, path, noise_mode, batch_size)


def _render(
    sampler: Sampler,
    ws: torch.Tensor,
    path: list[tuple[tuple[float, float] | None, float | None]] | None,
    noise_mode: NoiseMode,
    batch_size: int,
) -> Iterator[np.ndarray]:
    for start in range(0, ws.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        transform = None
        if path is not None:
            matrices = [sampler.transform(tr, rot) for tr, rot in path[rows]]
            transform = torch.stack([m for m in matrices if m is not None])  # [n, 3, 3]
        images = sampler.synthesize(ws[rows], noise_mode, transform=transform, batch_size=batch_size)
        yield from to_uint8(images)


# ------------------------------------------------------------------------------------------------------
# Encoding


def format_for_path(path: str | os.PathLike[str]) -> VideoFormat:
    """The video format a file name asks for, by its suffix."""
    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if suffix not in VIDEO_FORMATS:
        raise GanError(f"cannot tell the video format of {os.fspath(path)!r}: use a .mp4, .gif or .webp name")
    return suffix


def _rgb(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] not in (1, 3):
        raise GanError(f"frames must be uint8 [H, W, 1 or 3], got {frame.dtype} {frame.shape}")
    return np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame


def check_video_options(fmt: str, fps: float) -> None:
    """Refuse a format or frame rate before any frame is rendered."""
    if fmt not in VIDEO_FORMATS:
        raise GanError(f"unknown video format {fmt!r}: use one of {', '.join(VIDEO_FORMATS)}")
    if not (math.isfinite(fps) and fps > 0):
        raise GanError(f"fps must be a positive number, got {fps}")
    if fmt == "gif" and fps > MAX_GIF_FPS:
        raise GanError(
            f"GIF cannot play above {MAX_GIF_FPS:g} fps (browsers slow it to 10 fps); use webp or mp4"
        )


def encode_video(frames: Iterable[np.ndarray], fmt: VideoFormat, fps: float) -> bytes:
    """Encode uint8 [H, W, C] frames at `fps`.

    GIF and WebP encoders merge a frame identical to the one before into one longer frame, so such a
    file can hold fewer frames than were given, with the same total duration.
    """
    check_video_options(fmt, fps)
    if fmt == "mp4":
        return _encode_mp4(frames, fps)
    from PIL import Image

    images = [Image.fromarray(_rgb(f), "RGB") for f in frames]
    if not images:
        raise GanError("no frames to encode")
    buf = io.BytesIO()
    options: dict[str, object] = {"lossless": False, "quality": 90} if fmt == "webp" else {}
    images[0].save(
        buf,
        format=fmt.upper(),
        save_all=True,
        append_images=images[1:],
        duration=1000.0 / fps,  # milliseconds per frame
        loop=0,  # repeat forever
        **options,
    )
    return buf.getvalue()


def _encode_mp4(frames: Iterable[np.ndarray], fps: float) -> bytes:
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory(prefix="stylegan-video-") as tmp:
        path = os.path.join(tmp, "video.mp4")
        writer = None
        count = 0
        try:
            for frame in frames:
                frame = _rgb(frame)
                if writer is None:
                    h, w = frame.shape[:2]
                    if h % 2 or w % 2:  # yuv420p stores chroma at half resolution
                        raise GanError(f"MP4 needs even frame sizes, got {w}x{h}")
                    writer = imageio_ffmpeg.write_frames(
                        path, (w, h), fps=fps, codec="libx264", quality=8, macro_block_size=1
                    )
                    writer.send(None)  # start ffmpeg
                writer.send(np.ascontiguousarray(frame).tobytes())
                count += 1
        finally:
            if writer is not None:
                writer.close()
        if count == 0:
            raise GanError("no frames to encode")
        with open(path, "rb") as f:
            return f.read()
