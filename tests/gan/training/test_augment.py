"""ADA augmentation: identity at p=0, shapes, ranges, gradients, per-transform behaviour, and the p update."""

from __future__ import annotations

import math

import pytest
import torch

from gan.errors import ConfigError
from gan.training.augment import (
    AUGMENT_PRESETS,
    TRANSFORM_NAMES,
    AdaController,
    AugmentPipe,
    _filter_bank,
    downsample2x,
    upsample2x,
)


def images(n: int = 6, c: int = 3, res: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Smooth content in [-1, 1]: a few random blobs, so resampling has something to preserve.
    x = torch.rand(n, c, res // 4, res // 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(res, res), mode="bilinear", align_corners=False)


def test_presets_are_the_official_specs() -> None:
    assert set(AUGMENT_PRESETS) == {
        "blit",
        "geom",
        "color",
        "filter",
        "noise",
        "cutout",
        "bg",
        "bgc",
        "bgcf",
        "bgcfn",
        "bgcfnc",
    }
    assert set(AUGMENT_PRESETS["bgcfnc"]) == set(TRANSFORM_NAMES)
    assert set(AUGMENT_PRESETS["bgc"]) == set(AUGMENT_PRESETS["blit"]) | set(AUGMENT_PRESETS["geom"]) | set(
        AUGMENT_PRESETS["color"]
    )
    with pytest.raises(ConfigError):
        AugmentPipe.from_preset("everything")
    with pytest.raises(ConfigError):
        AugmentPipe(p=1.5)


@pytest.mark.parametrize("preset", sorted(AUGMENT_PRESETS))
def test_identity_at_p0(preset: str) -> None:
    pipe = AugmentPipe.from_preset(preset)
    x = images(res=32)
    assert torch.equal(pipe(x), x)


def test_filtering_refuses_images_smaller_than_its_reach() -> None:
    with pytest.raises(ConfigError, match="must exceed 21 px"):
        AugmentPipe(imgfilter=1)(images(res=16))  # even at p=0: the set-up is wrong, not the draw


def test_filter_bank_sums_to_an_impulse() -> None:
    bank = _filter_bank()
    total = bank.sum(axis=0)
    centre = bank.shape[1] // 2
    assert bank.shape == (4, 43)
    assert abs(total[centre] - 1) < 1e-9 and abs(total).sum() - 1 < 1e-9


def test_resampling_round_trip_is_near_identity() -> None:
    """Up then down with the orthogonal sym6 filter keeps a smooth image (the official design)."""
    pipe = AugmentPipe()
    x = images(res=32)
    up = upsample2x(x, pipe.Hz_geom)
    assert up.shape[-2:] == (64, 64)
    down = downsample2x(up, pipe.Hz_geom, crop=0)
    assert down.shape == x.shape
    inner = down[..., 8:-8, 8:-8]
    assert (inner - x[..., 8:-8, 8:-8]).abs().max() < 0.02


@pytest.mark.parametrize("name", TRANSFORM_NAMES)
def test_each_transform_alone(name: str) -> None:
    torch.manual_seed(0)
    pipe = AugmentPipe(**{name: 1}, p=1.0)
    x = images(n=8, res=32 if name == "imgfilter" else 16).requires_grad_(True)  # the filter reflects 21 px
    y = pipe(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.equal(y.detach(), x.detach()), "p=1 must change some image"
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    lo, hi = float(x.detach().min()), float(x.detach().max())
    if name in ("xflip", "rotate90", "xint"):
        # Pixel blitting only moves pixels (reflection padding brings in copies): same value range.
        assert float(y.min()) >= lo - 0.05 and float(y.max()) <= hi + 0.05
    elif name in ("scale", "rotate", "aniso", "xfrac"):
        # Resampling may ring a little around edges but stays near the input's range.
        assert float(y.min()) >= lo - 0.3 and float(y.max()) <= hi + 0.3
    elif name == "cutout":
        zeroed = (y == 0).flatten(1).float().mean(dim=1)
        assert (zeroed > 0).all() and (zeroed <= 0.25 + 1e-6).all()  # a half x half square, maybe clipped


def closest(a: torch.Tensor, candidates: list[torch.Tensor]) -> tuple[int, float, float]:
    """Index of the candidate nearest to a, its max error, and the runner-up's max error."""
    errors = sorted((float((a - c).abs().max()), i) for i, c in enumerate(candidates))
    return errors[0][1], errors[0][0], errors[1][0]


def test_pixel_blitting_moves_pixels() -> None:
    """x-flips and quarter turns, executed (as officially) through the resampling filters: each output
    is, to the filters' small blur, exactly one of the flips/turns and clearly none of the others."""
    torch.manual_seed(1)
    x = images(n=16, res=32)
    for pipe, transforms in [
        (AugmentPipe(xflip=1, p=1.0), [lambda b: b, lambda b: b.flip(-1)]),
        (AugmentPipe(rotate90=1, p=1.0), [lambda b, k=k: torch.rot90(b, k, dims=(1, 2)) for k in range(4)]),
    ]:
        seen = set()
        for a, b in zip(pipe(x), x, strict=True):
            which, err, other = closest(a, [t(b) for t in transforms])
            assert err < 0.06 < other
            seen.add(which)
        assert len(seen) == len(transforms)


def test_color_transforms_act_on_colour() -> None:
    torch.manual_seed(2)
    x = images(n=64)
    grey = x.mean(dim=1, keepdim=True).expand_as(x).contiguous()
    # Hue rotation and saturation leave grey pixels grey (they act around the luma axis).
    for name in ("hue", "saturation"):
        y = AugmentPipe(**{name: 1}, p=1.0)(grey)
        assert torch.allclose(y, grey, atol=1e-5)
    # Brightness shifts every channel alike; contrast scales; luma flip negates greys.
    y = AugmentPipe(brightness=1, p=1.0)(x)
    shift = (y - x).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)
    assert 0.1 < float(shift[:, 0].std()) < 0.3  # brightness_std = 0.2
    y = AugmentPipe(lumaflip=1, p=1.0)(grey)
    assert all(
        torch.allclose(a, b, atol=1e-5) or torch.allclose(a, -b, atol=1e-5)
        for a, b in zip(y, grey, strict=True)
    )
    single = AugmentPipe(brightness=1, contrast=1, p=1.0)(x[:, :1])
    assert single.shape == (64, 1, 16, 16)


def test_probability_follows_p() -> None:
    torch.manual_seed(3)
    x = images(n=2000, res=4)
    pipe = AugmentPipe(brightness=1, p=0.3)
    changed = ((pipe(x) - x).flatten(1).abs().amax(dim=1) > 0).float().mean()
    assert abs(float(changed) - 0.3) < 0.05
    # Rotation is split into pre and post so that P(any rotation) = p, not 2p - p^2.
    pipe = AugmentPipe(rotate=1, p=0.3)
    moved = (
        ((pipe(images(n=1000, res=8)) - images(n=1000, res=8)).flatten(1).abs().amax(dim=1) > 1e-6)
        .float()
        .mean()
    )
    assert abs(float(moved) - 0.3) < 0.06


def test_gradients_flow_through_bgcfnc() -> None:
    torch.manual_seed(4)
    x = images(n=4, res=32).requires_grad_(True)
    y = AugmentPipe.from_preset("bgcfnc", p=1.0)(x)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_rotation_is_a_rotation() -> None:
    """A 90-degree turn through the general (resampling) path matches torch.rot90 inside the image."""
    x = images(n=1, res=32)
    pipe = AugmentPipe(rotate=1, rotate_max=1, p=1.0)
    # Force theta = +-90 degrees through the matrix path by drawing until both rotations combine to it.
    torch.manual_seed(0)
    from gan.training import augment

    n = 1
    G_inv = augment.rotate2d(torch.full([n], math.pi / 2), n, x.device)
    y = pipe._resample(x, G_inv, 32, 32)
    ref = [torch.rot90(x, k, dims=(2, 3)) for k in (1, 3)]
    errors = [float((y - r)[..., 4:-4, 4:-4].abs().max()) for r in ref]
    assert min(errors) < 0.05


# -- ADA ----------------------------------------------------------------------------------------------


def test_ada_raises_p_when_d_is_overconfident_and_lowers_it_otherwise() -> None:
    pipe = AugmentPipe.from_preset("bgc")
    ada = AdaController(pipe, target=0.6, interval=4, kimg=1)  # 1 kimg: a fast, visible step
    batch = 16
    step = batch * 4 / 1000
    for _ in range(4):
        ada.observe(torch.ones(batch))  # D(real) all positive: r_t = 1 > 0.6
        ada.step(batch)
    assert ada.rt == 1.0
    assert float(pipe.p) == pytest.approx(step)
    for _ in range(8):
        ada.observe(torch.full([batch], 3.0))
        ada.step(batch)
    assert float(pipe.p) == pytest.approx(3 * step)
    for _ in range(4):
        ada.observe(torch.tensor([1.0, -1.0, -1.0, -1.0]).repeat(4))  # r_t = -0.5 < target
        ada.step(batch)
    assert float(pipe.p) == pytest.approx(2 * step)
    for _ in range(400):
        ada.observe(-torch.ones(batch))
        ada.step(batch)
    assert float(pipe.p) == 0.0  # clamped
    for _ in range(400):
        ada.observe(torch.ones(batch))
        ada.step(batch)
    assert float(pipe.p) == 1.0


def test_ada_state_round_trip() -> None:
    pipe = AugmentPipe.from_preset("bgc")
    ada = AdaController(pipe, kimg=1)
    for _ in range(6):
        ada.observe(torch.ones(8))
        ada.step(8)
    state = ada.state_dict()
    other = AdaController(AugmentPipe.from_preset("bgc"), kimg=1)
    other.load_state_dict(state)
    for a in (ada, other):
        for _ in range(2):
            a.observe(torch.ones(8))
            a.step(8)
    assert float(ada.pipe.p) == float(other.pipe.p) > 0
