"""Interpolation, walk timing, and the GIF/WebP/MP4 encoders (frame counts read back)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from gan.errors import GanError
from gan.video import (
    encode_video,
    format_for_path,
    frame_positions,
    interpolate,
    lerp,
    slerp,
    transform_path,
)


def test_slerp_endpoints_and_norm() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    ua, ub = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    mid = slerp(ua, ub, 0.5)
    torch.testing.assert_close(mid.norm(dim=-1), torch.ones(3))  # stays on the sphere
    assert (lerp(ua, ub, 0.5).norm(dim=-1) < 0.9).all()  # where a straight line would cut inside
    # Equal angles to both ends at t = 0.5.
    torch.testing.assert_close((mid * ua).sum(-1), (mid * ub).sum(-1))


def test_slerp_parallel_falls_back_to_lerp() -> None:
    a = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(slerp(a, 2 * a, 0.25), lerp(a, 2 * a, 0.25))


def test_frame_positions_without_loop_hit_both_ends() -> None:
    pos = frame_positions(3, 5, loop=False)
    assert pos[0] == (0, 1, 0.0) and pos[-1] == (2, 2, 0.0)
    assert [round(k + t, 6) for k, _, t in pos] == [0, 0.5, 1, 1.5, 2]


def test_frame_positions_with_loop_stop_short_of_the_start() -> None:
    pos = frame_positions(2, 4, loop=True)
    assert [(k0, k1, t) for k0, k1, t in pos] == [(0, 1, 0.0), (0, 1, 0.5), (1, 0, 0.0), (1, 0, 0.5)]


def test_interpolate_passes_through_the_keys() -> None:
    keys = torch.randn(3, 4, 5)
    frames = interpolate(keys, 9, loop=False, kind="lerp")
    assert frames.shape == (9, 4, 5)
    torch.testing.assert_close(frames[0], keys[0])
    torch.testing.assert_close(frames[4], keys[1])
    torch.testing.assert_close(frames[8], keys[2])
    torch.testing.assert_close(frames[2], (keys[0] + keys[1]) / 2)


def test_transform_path() -> None:
    path = transform_path(5, translate=((0.0, 0.0), (1.0, -2.0)), rotate=(0.0, 90.0))
    assert path[0] == ((0.0, 0.0), 0.0) and path[-1] == ((1.0, -2.0), 90.0)
    assert path[2] == ((0.5, -1.0), 45.0)
    assert transform_path(2, rotate=(10.0, 20.0))[0] == (None, 10.0)


def _frames(n: int, size: int = 16) -> list[np.ndarray]:
    rng = np.random.RandomState(0)
    return [rng.randint(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_pillow_formats_keep_frame_count_and_fps(fmt: str) -> None:
    from PIL import Image

    data = encode_video(_frames(7), fmt, fps=20)  # type: ignore[arg-type]
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == fmt.upper()
        assert im.n_frames == 7
        assert im.size == (16, 16)
        assert im.info.get("loop") == 0
        im.seek(3)
        im.load()  # WebP reports a frame's duration once it is decoded
        assert math.isclose(im.info["duration"], 50, abs_tol=1)  # 1000 / 20 ms


def test_mp4_keeps_frame_count() -> None:
    import imageio.v3 as iio

    frames = _frames(11, size=32)
    data = encode_video(iter(frames), "mp4", fps=24)
    got = iio.imread(data, extension=".mp4", plugin="pyav") if _has_pyav() else _read_mp4(data)
    assert len(got) == 11
    assert got[0].shape == (32, 32, 3)


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _read_mp4(data: bytes) -> list[np.ndarray]:
    import os
    import tempfile

    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "v.mp4")
        with open(path, "wb") as f:
            f.write(data)
        reader = imageio_ffmpeg.read_frames(path)
        meta = next(reader)
        w, h = meta["size"]
        assert math.isclose(meta["fps"], 24, rel_tol=1e-3)
        return [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in reader]


def test_encode_refuses() -> None:
    with pytest.raises(GanError):
        encode_video([], "gif", 10)
    with pytest.raises(GanError):
        encode_video(_frames(2), "gif", 60)  # browsers would slow it to 10 fps
    with pytest.raises(GanError):
        encode_video(_frames(2), "mp4", 0)
    with pytest.raises(GanError):
        encode_video(_frames(2), "avi", 10)  # type: ignore[arg-type]
    with pytest.raises(GanError):
        encode_video([np.zeros((4, 4, 3), np.float32)], "webp", 10)


def test_format_for_path() -> None:
    assert format_for_path("walk.MP4") == "mp4"
    assert format_for_path("a/b.gif") == "gif"
    with pytest.raises(GanError):
        format_for_path("walk.avi")
    with pytest.raises(GanError):
        format_for_path("walk")


# ------------------------------------------------------------------------------------------------------
# Walks on a tiny generator


def _tiny(architecture: str) -> torch.nn.Module:
    from gan.config import GeneratorConfig, MappingConfig, StyleGAN2SynthesisConfig, StyleGAN3SynthesisConfig
    from gan.generator import Generator

    torch.manual_seed(0)
    synthesis = (
        StyleGAN2SynthesisConfig(channel_base=128, channel_max=16)
        if architecture == "stylegan2"
        else StyleGAN3SynthesisConfig(channel_base=256, channel_max=16, num_layers=4, num_fp16_res=0)
    )
    config = GeneratorConfig(
        architecture=architecture,  # type: ignore[arg-type]
        z_dim=16,
        w_dim=16,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=synthesis,
    )
    return Generator(config)


@pytest.fixture(scope="module")
def sampler():  # type: ignore[no-untyped-def]
    from gan.sampling import Sampler

    return Sampler(_tiny("stylegan2"))


@pytest.mark.parametrize("space", ["w", "z"])
def test_walk_starts_and_ends_on_the_seeds(sampler, space: str) -> None:  # type: ignore[no-untyped-def]
    from gan.video import walk_frames

    frames = list(walk_frames(sampler, [0, 1], 5, space=space, psi=0.8, batch_size=2))  # type: ignore[arg-type]
    assert len(frames) == 5
    ends = sampler.images([0, 1], psi=0.8)
    # w space: the end frames are the seeds' ws exactly. z space: the slerp endpoints equal z up to
    # float64 -> float32 rounding, so a pixel may move by one level.
    assert np.abs(frames[0].astype(int) - ends[0].astype(int)).max() <= 1
    assert np.abs(frames[-1].astype(int) - ends[1].astype(int)).max() <= 1
    assert np.abs(frames[2].astype(int) - ends[0].astype(int)).mean() > 0.5  # the middle is elsewhere


def test_walk_refuses(sampler) -> None:  # type: ignore[no-untyped-def]
    from gan.video import walk_frames

    with pytest.raises(GanError):
        walk_frames(sampler, [0], 5)
    with pytest.raises(GanError, match="StyleGAN3"):
        walk_frames(sampler, [0, 1], 5, rotate=(0.0, 90.0))
    with pytest.raises(GanError):
        walk_frames(sampler, [0, 1], 0)


def test_stylegan3_transform_walk() -> None:
    from gan.sampling import Sampler
    from gan.video import walk_frames

    sg3 = Sampler(_tiny("stylegan3-t"))
    frames = list(walk_frames(sg3, [3], 3, rotate=(0.0, 40.0), batch_size=2))
    assert len(frames) == 3
    np.testing.assert_array_equal(frames[0], sg3.images([3], rotate=0.0)[0])
    np.testing.assert_array_equal(frames[2], sg3.images([3], rotate=40.0)[0])
    assert np.abs(frames[1].astype(int) - frames[0].astype(int)).max() > 0
