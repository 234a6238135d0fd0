"""Projection (GAN inversion): recovery of a generated image, determinism, callback, VGG16 loading, CLI.

Tiny SG2 and SG3 generators (16 px, 16 channels) with the stand-in `SimpleFeatureDistance`; each
projection is 100 steps over 1000 w samples, under a few seconds on one CPU thread.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from gan.cli import main
from gan.config import GeneratorConfig, MappingConfig, StyleGAN2SynthesisConfig, StyleGAN3SynthesisConfig
from gan.errors import FormatError, GanError
from gan.generator import Generator
from gan.io.checkpoint import save_generator
from gan.perceptual import SimpleFeatureDistance, load_vgg16_lpips
from gan.projection import (
    ProjectionStep,
    Space,
    learning_rate,
    noise_regularization,
    perceptual_resize,
    prepare_target,
    project,
    render_ws,
    w_noise_scale,
)

STEPS = 100
SAMPLES = 1000


def tiny_generator(architecture: str, c_dim: int = 0) -> Generator:
    torch.manual_seed(0)
    if architecture == "stylegan2":
        synthesis: StyleGAN2SynthesisConfig | StyleGAN3SynthesisConfig = StyleGAN2SynthesisConfig(
            channel_base=128, channel_max=16
        )
    else:
        synthesis = StyleGAN3SynthesisConfig(channel_base=256, channel_max=16, num_layers=4, num_fp16_res=0)
    config = GeneratorConfig(
        architecture=architecture,  # type: ignore[arg-type]
        z_dim=16,
        w_dim=16,
        c_dim=c_dim,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=synthesis,
    )
    return Generator(config).eval()


@pytest.fixture(scope="module", params=["stylegan2", "stylegan3-t"])
def G(request: pytest.FixtureRequest) -> Generator:
    return tiny_generator(request.param)


def known_target(G: Generator, seed: int = 5) -> tuple[torch.Tensor, np.ndarray]:
    """The w of a seed and its image: a target the generator can reach exactly."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    with torch.no_grad():
        ws = G.mapping(z, None)
    return ws, render_ws(G, ws)[0]


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())


# ------------------------------------------------------------------------------------------------------
# Projection


@pytest.mark.parametrize("space", ["w", "w+"])
def test_projection_recovers_a_generated_image(G: Generator, space: Space) -> None:
    ws_true, target = known_target(G)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    result = project(
        G, target, perceptual=SimpleFeatureDistance(), space=space, num_steps=STEPS, w_avg_samples=SAMPLES
    )

    assert result.ws.shape == (1, G.num_ws, G.w_dim)
    assert result.image.shape == (16, 16, 3) and result.image.dtype == np.uint8
    assert result.w_steps is not None and result.w_steps.shape == (STEPS, G.num_ws, G.w_dim)
    assert len(result.losses) == len(result.distances) == result.steps_done == STEPS
    torch.testing.assert_close(result.w_steps[-1:], result.ws, rtol=0, atol=0)
    if space == "w":  # one w broadcast to every layer
        assert torch.equal(result.ws, result.ws[:, :1].expand_as(result.ws))
    else:
        assert not torch.equal(result.ws[0, 0], result.ws[0, -1])

    # The learning rate is 0 at step 0 (linear ramp-up from 0), so w_steps[0] is the start, w_avg.
    start_image = render_ws(G, result.w_steps[:1].contiguous())[0]
    start_mse, final_mse = mse(start_image, target), mse(result.image, target)
    print(
        f"{G.config.architecture} {space}: distance {result.distances[0]:.4g} -> {result.distance:.4g}, "
        f"pixel MSE {start_mse:.1f} -> {final_mse:.1f}, |w - w_true| {float((result.ws - ws_true).norm()):.3f}"
    )
    # Margins: measured falls (this file's models, 100 steps) are 13x-130x in distance and 15x-50x in
    # pixel MSE; we ask for 2x and 4x so that another float summation order cannot flip the test, while
    # a projector that does not move, or moves the wrong way, fails.
    assert result.distance < 0.5 * result.distances[0]
    assert final_mse < 0.25 * start_mse
    # The image returned is the returned w rendered by the caller's model, which is left untouched.
    assert np.array_equal(render_ws(G, result.ws), result.image[None])
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_projection_is_deterministic_given_the_seed() -> None:
    G = tiny_generator("stylegan2")
    _, target = known_target(G)

    def run(seed: int) -> tuple[torch.Tensor, list[float]]:
        r = project(G, target, perceptual=SimpleFeatureDistance(), num_steps=20, w_avg_samples=200, seed=seed)
        return r.ws, r.losses

    ws_a, losses_a = run(1)
    ws_b, losses_b = run(1)
    assert torch.equal(ws_a, ws_b) and losses_a == losses_b
    ws_c, _ = run(2)  # another seed draws other noise maps and exploration noise
    assert not torch.equal(ws_a, ws_c)


def test_callback_sees_every_step_and_can_stop() -> None:
    G = tiny_generator("stylegan2")
    _, target = known_target(G)
    seen: list[ProjectionStep] = []

    def watch(info: ProjectionStep) -> bool:
        seen.append(info)
        return False

    result = project(
        G, target, perceptual=SimpleFeatureDistance(), num_steps=12, w_avg_samples=200, callback=watch
    )
    assert [s.step for s in seen] == list(range(12))
    assert [s.loss for s in seen] == result.losses and not result.stopped_early
    assert seen[-1].ws.shape == (1, G.num_ws, G.w_dim) and torch.equal(seen[-1].ws, result.ws)
    assert seen[0].images.shape == (1, 3, 16, 16)

    stops: list[int] = []

    def stop_after_five(info: ProjectionStep) -> bool:
        stops.append(info.step)
        return info.step == 4

    result = project(
        G,
        target,
        perceptual=SimpleFeatureDistance(),
        num_steps=12,
        w_avg_samples=200,
        callback=stop_after_five,
    )
    assert stops == [0, 1, 2, 3, 4]
    assert result.stopped_early and result.steps_done == 5 and len(result.losses) == 5
    assert result.w_steps is not None and result.w_steps.shape[0] == 5
    assert torch.equal(result.w_steps[-1:], result.ws)


def test_bad_arguments_fail_early() -> None:
    G = tiny_generator("stylegan2")
    _, target = known_target(G)
    d = SimpleFeatureDistance()
    with pytest.raises(GanError, match="target must be"):
        project(G, np.zeros((32, 32, 3), np.uint8), perceptual=d, num_steps=1, w_avg_samples=2)
    with pytest.raises(GanError, match="target must be"):
        project(G, torch.zeros(16, 16, 3), perceptual=d, num_steps=1, w_avg_samples=2)  # float must be CHW
    with pytest.raises(GanError, match="within"):
        project(G, torch.full((3, 16, 16), 300.0), perceptual=d, num_steps=1, w_avg_samples=2)
    with pytest.raises(GanError, match="space"):
        project(G, target, perceptual=d, space="z", num_steps=1)  # type: ignore[arg-type]
    with pytest.raises(GanError, match="num_steps"):
        project(G, target, perceptual=d, num_steps=0)
    with pytest.raises(GanError, match="class"):
        project(G, target, perceptual=d, num_steps=1, w_avg_samples=2, class_idx=1)  # unconditional


def test_conditional_model_needs_a_class() -> None:
    G = tiny_generator("stylegan2", c_dim=3)
    target = np.full((16, 16, 3), 128, np.uint8)
    with pytest.raises(GanError, match="conditional"):
        project(G, target, perceptual=SimpleFeatureDistance(), num_steps=2, w_avg_samples=10)
    result = project(
        G, target, perceptual=SimpleFeatureDistance(), num_steps=2, w_avg_samples=10, class_idx=2
    )
    assert result.ws.shape == (1, G.num_ws, G.w_dim)


# ------------------------------------------------------------------------------------------------------
# Pieces


def test_large_images_are_area_downsampled_to_256() -> None:
    x = torch.rand([1, 3, 512, 512])
    y = perceptual_resize(x)
    torch.testing.assert_close(y, F.avg_pool2d(x, 2))  # area = mean of each 2x2 block
    small = torch.rand([1, 3, 64, 64])
    assert perceptual_resize(small) is small  # up to 256 px the image is compared as it is


def test_schedules_follow_the_official_shape() -> None:
    lrs = [learning_rate(s, 1000, 0.1, 0.25, 0.05) for s in range(1000)]
    assert lrs[0] == 0.0  # ramp-up starts from zero
    assert lrs[25] == pytest.approx(0.05)  # halfway up the linear ramp-up
    assert all(lr == pytest.approx(0.1) for lr in lrs[50:750])  # flat between the ramps
    assert lrs[875] == pytest.approx(0.05)  # halfway down the cosine
    assert all(a >= b for a, b in zip(lrs[750:], lrs[751:], strict=False)) and lrs[-1] < 1e-4
    scales = [w_noise_scale(s, 1000, 2.0, 0.05, 0.75) for s in range(1000)]
    assert scales[0] == pytest.approx(0.1) and scales[375] == pytest.approx(0.1 * 0.25)
    assert all(s == 0.0 for s in scales[750:])


def test_noise_regularization_penalises_structure() -> None:
    g = torch.Generator().manual_seed(0)
    white = torch.randn([64, 64], generator=g)
    smooth = F.interpolate(torch.randn([1, 1, 8, 8], generator=g), size=(64, 64), mode="bilinear")[0, 0]
    smooth = (smooth - smooth.mean()) / smooth.std()
    reg_white = float(noise_regularization([white]))
    reg_smooth = float(noise_regularization([smooth]))
    # White noise: each autocorrelation is a mean of ~4096 products, ~1/64 in size, squared ~2.4e-4.
    assert reg_white < 1e-2 < reg_smooth


def test_prepare_target_centre_crops_then_resizes() -> None:
    wide = np.zeros((20, 30, 3), np.uint8)
    wide[:, :5] = (255, 0, 0)  # cropped away
    wide[:, 25:] = (255, 0, 0)
    wide[:, 5:25] = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    t = prepare_target(wide, 20)
    assert t.dtype == torch.uint8 and t.shape == (20, 20, 3)
    assert np.array_equal(t.numpy(), wide[:, 5:25])  # the centre square, resize to the same size a no-op
    small = prepare_target(PIL.Image.fromarray(wide[:, 5:25]).convert("RGBA"), 16)
    want = np.array(PIL.Image.fromarray(wide[:, 5:25]).resize((16, 16), PIL.Image.Resampling.LANCZOS))
    assert np.array_equal(small.numpy(), want)
    grey = prepare_target(np.full((10, 12), 77, np.uint8), 8)
    assert grey.shape == (8, 8, 3) and bool((grey == 77).all())
    with pytest.raises(FormatError):
        prepare_target(np.zeros((4, 4, 3), np.float32), 8)


# ------------------------------------------------------------------------------------------------------
# NVIDIA's VGG16 file


class StandInVGG(torch.nn.Module):
    """The call signature of NVIDIA's vgg16.pt: `(img, resize_images, return_lpips)`, float [0, 255]."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.weight = torch.nn.Parameter(torch.randn([8, 3, 3, 3], generator=g))  # a parameter, as VGG's

    def forward(
        self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False
    ) -> torch.Tensor:
        if resize_images:
            img = F.interpolate(img, size=(224, 224), mode="area")
        f = F.conv2d(img / 127.5 - 1, self.weight, padding=1)  # [N, 8, H, W]
        if return_lpips:  # unit length across channels, then averaged over positions (as LPIPS)
            f = f / (f.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()
            positions = f.shape[2] * f.shape[3]
            return f.flatten(1) / math.sqrt(positions)
        return f.mean(dim=(2, 3))


def vgg_archive() -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(StandInVGG()), buf)
    return buf.getvalue()


class _Canary:
    """Unpickling this would create `path`: proof that the loader never unpickles."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


class _ArchiveHolder:
    """Pickles as torch.jit.load(BytesIO(archive)): the shape of a pickled TorchScript module."""

    def __init__(self, archive: bytes) -> None:
        self.archive = archive

    def __reduce__(self) -> tuple[object, tuple[io.BytesIO]]:
        return (torch.jit.load, (io.BytesIO(self.archive),))


def test_vgg16_plain_torchscript_with_sha256(tmp_path: Path) -> None:
    path = tmp_path / "vgg16.pt"  # the projector's file: a torch.jit.save archive
    path.write_bytes(vgg_archive())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    lpips = load_vgg16_lpips(path, sha256=digest)
    assert lpips.sha256 == digest
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand([2, 3, 16, 16], generator=g) * 255, torch.rand([2, 3, 16, 16], generator=g) * 255
    ref = StandInVGG()
    want = (ref(a, False, True) - ref(b, False, True)).square().sum(dim=1)
    torch.testing.assert_close(lpips(a, b), want)
    assert float(lpips(a, a).abs().max()) == 0.0
    # Gradients reach the images and stop there: the network's weights are frozen.
    assert not any(p.requires_grad for p in lpips.module.parameters())
    a.requires_grad_(True)
    lpips(a, b).sum().backward()  # type: ignore[no-untyped-call]
    assert a.grad is not None and float(a.grad.abs().sum()) > 0
    with pytest.raises(FormatError, match="sha256 mismatch"):
        load_vgg16_lpips(path, sha256="0" * 64)

    G = tiny_generator("stylegan2")  # and it drives a projection
    _, target = known_target(G)
    result = project(G, target, perceptual=lpips, num_steps=30, w_avg_samples=200)
    assert result.distance < result.distances[0]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_vgg16_pickle_is_read_without_unpickling(tmp_path: Path, protocol: int) -> None:
    canary = tmp_path / "canary"
    data = pickle.dumps((_Canary(canary), _ArchiveHolder(vgg_archive())), protocol=protocol)
    (tmp_path / "vgg16.pkl").write_bytes(data)
    lpips = load_vgg16_lpips(tmp_path / "vgg16.pkl", sha256=hashlib.sha256(data).hexdigest())
    x = torch.rand([1, 3, 16, 16]) * 255
    torch.testing.assert_close(lpips.features(x), StandInVGG()(x, False, True))
    assert not canary.exists()


def test_hostile_vgg16_file_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    (tmp_path / "vgg16.pkl").write_bytes(pickle.dumps(_Canary(canary)))
    with pytest.raises(FormatError, match="no TorchScript archive"):
        load_vgg16_lpips(tmp_path / "vgg16.pkl")
    assert not canary.exists()


# ------------------------------------------------------------------------------------------------------
# stylegan project


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("project_cli")
    G = tiny_generator("stylegan2")
    network = save_generator(G, root / "tiny.safetensors")
    (root / "vgg16.pt").write_bytes(vgg_archive())
    target = root / "target.png"
    _, image = known_target(G)
    PIL.Image.fromarray(np.pad(image, ((0, 0), (4, 4), (0, 0)), mode="edge")).save(target)  # 16x24
    return {"network": Path(network), "vgg": root / "vgg16.pt", "target": target}


def test_cli_writes_the_official_outputs(tmp_path: Path, cli_files: dict[str, Path]) -> None:
    out = tmp_path / "out"
    argv = ["project", "--network", str(cli_files["network"]), "--target", str(cli_files["target"])]
    argv += ["--vgg", str(cli_files["vgg"]), "--steps", "6", "--space", "w+", "--save-video"]
    assert main([*argv, "--outdir", str(out)]) == 0
    G = tiny_generator("stylegan2")
    w = np.load(out / "projected_w.npz")["w"]
    assert w.shape == (1, G.num_ws, G.w_dim) and w.dtype == np.float32
    proj = np.array(PIL.Image.open(out / "proj.png"))
    assert np.array_equal(proj, render_ws(G, torch.from_numpy(w))[0])  # the PNG is the npz rendered
    target = np.array(PIL.Image.open(out / "target.png"))
    assert np.array_equal(target, known_target(G)[1])  # centre crop undid the padding
    import imageio_ffmpeg  # type: ignore[import-untyped]

    reader = imageio_ffmpeg.read_frames(str(out / "proj.mp4"))
    meta = next(reader)
    assert tuple(meta["size"]) == (32, 16) and meta["fps"] == pytest.approx(10)  # target | projection
    assert sum(1 for _ in reader) == 6  # one frame per step


@pytest.mark.parametrize("case", ["missing", "unreadable"])
def test_cli_bad_target_exits_2_with_one_line(
    tmp_path: Path, cli_files: dict[str, Path], case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "target.png"
    if case == "unreadable":
        target.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    out = tmp_path / "out"
    argv = ["project", "--network", str(cli_files["network"]), "--target", str(target)]
    argv += ["--vgg", str(cli_files["vgg"]), "--steps", "2", "--outdir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "target.png" in err
    assert not out.exists()
