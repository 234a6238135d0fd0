"""Detector loading (local, pickled, downloaded with sha256 and cache) and compute_metrics end to end."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from metrics_standin import StandInDetector, standin_archive, write_standin

from gan.cli import main
from gan.config import GeneratorConfig, MappingConfig, StyleGAN2SynthesisConfig
from gan.errors import FormatError
from gan.generator import build_generator
from gan.metrics import compute_metrics, load_detector
from gan.metrics.detector import DownloadError, fetch
from gan.training.dataset import ImageDataset, prepare_dataset
from gan.training.dataset_prepare import PrepareLimits
from tests.quiet_http import QuietLog


class _Canary:
    """Unpickling this would create the file `path`: proof that we never unpickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


class _ArchiveHolder:
    """Pickles as torch.jit.load(BytesIO(archive)): one plausible shape of NVIDIA's detector pickles."""

    def __init__(self, archive: bytes) -> None:
        self.archive = archive

    def __reduce__(self) -> tuple[object, tuple[io.BytesIO]]:
        return (torch.jit.load, (io.BytesIO(self.archive),))


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))


def test_local_torchscript_file(tmp_path: Path) -> None:
    det = load_detector(write_standin(tmp_path / "standin.pt"))
    x = images()
    want = StandInDetector()(x, return_features=True)
    torch.testing.assert_close(det(x), want)
    assert det.sha256 == hashlib.sha256((tmp_path / "standin.pt").read_bytes()).hexdigest()
    with pytest.raises(FormatError, match="uint8"):
        det(x.float())


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickled_torchscript_is_loaded_without_unpickling(tmp_path: Path, protocol: int) -> None:
    canary = tmp_path / "canary"
    data = pickle.dumps((_Canary(canary), _ArchiveHolder(standin_archive())), protocol=protocol)
    (tmp_path / "inception.pkl").write_bytes(data)
    det = load_detector(tmp_path / "inception.pkl")
    torch.testing.assert_close(det(images()), StandInDetector()(images(), return_features=True))
    assert not canary.exists()


def test_pickle_without_torchscript_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Canary(canary)))
    with pytest.raises(FormatError, match="no TorchScript archive"):
        load_detector(tmp_path / "evil.pkl")
    assert not canary.exists()
    with pytest.raises(FormatError, match="sha256 mismatch"):
        load_detector(write_standin(tmp_path / "s.pt"), sha256="0" * 64)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server over tmp_path/www; yields its base URL and the list of paths requested."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(QuietLog, http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_checks_sha256_and_caches(tmp_path: Path, server: tuple[str, list[str]]) -> None:
    base, requests = server
    data = standin_archive()
    (tmp_path / "www" / "inception-2015-12-05.pkl").write_bytes(data)
    url = f"{base}/inception-2015-12-05.pkl"
    cache = tmp_path / "cache"
    good = hashlib.sha256(data).hexdigest()

    with pytest.raises(FormatError, match="sha256 mismatch"):
        load_detector(url, sha256="f" * 64, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []  # no partial or rejected file left behind
    assert len(requests) == 1

    det = load_detector(url, sha256=good, cache_dir=cache, progress=False)
    assert det.name == "inception-2015-12-05" and len(requests) == 2
    assert len(list(cache.iterdir())) == 1

    load_detector(url, sha256=good, cache_dir=cache, progress=False)  # cache hit: no request
    load_detector(url, cache_dir=cache, progress=False)
    assert len(requests) == 2

    # A damaged cache entry fails the digest and is fetched again.
    (entry,) = cache.iterdir()
    entry.write_bytes(b"garbage")
    assert fetch(url, sha256=good, cache_dir=cache, progress=False).read_bytes() == data
    assert len(requests) == 3

    with pytest.raises(DownloadError):
        fetch(f"{base}/missing.pkl", cache_dir=cache, progress=False)
    assert len(list(cache.iterdir())) == 1


# -- compute_metrics ----------------------------------------------------------------------------------


def tiny_generator(c_dim: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    config = GeneratorConfig(
        z_dim=8,
        w_dim=8,
        c_dim=c_dim,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=StyleGAN2SynthesisConfig(channel_base=64, channel_max=8),
    )
    return build_generator(config).eval()


def make_dataset(tmp_path: Path, n: int = 24, labels: bool = False) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        a = np.zeros((32, 32, 3), np.uint8)
        a[:] = rng.integers(0, 256, 3)
        a[8:24, 8:24] = rng.integers(0, 256, 3)
        PIL.Image.fromarray(a).save(src / f"{i:03d}.png")
    label_map = {f"{i:03d}.png": i % 3 for i in range(n)} if labels else None
    out = tmp_path / "data.zip"
    prepare_dataset(src, out, 16, labels=label_map, limits=PrepareLimits(min_side=16))
    return out


class Replay(torch.nn.Module):
    """A 'generator' whose samples are the dataset's own images, in order: FID against the set is 0."""

    def __init__(self, data: Path) -> None:
        super().__init__()
        ds = ImageDataset(data)
        self.images = torch.from_numpy(np.stack([ds[i][0] for i in range(len(ds))])).float() / 127.5 - 1
        self.z_dim, self.c_dim, self.next = 4, 0, 0

    def forward(self, z: torch.Tensor, c: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        out = self.images[self.next : self.next + z.shape[0]]
        self.next += z.shape[0]
        return out


def test_compute_metrics_end_to_end(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    det = load_detector(write_standin(tmp_path / "standin.pt"))
    G = tiny_generator()
    names = ["fid50k_full", "kid50k_full", "pr50k3_full"]
    res = compute_metrics(names, G=G, data=data, detector=det, num_gen=24, batch=8)
    assert set(res) == {"fid50k_full", "kid50k_full", "pr50k3_full_precision", "pr50k3_full_recall"}
    assert all(np.isfinite(v) for v in res.values())
    assert res["fid50k_full"] > 1  # an untrained G is far from the data
    again = compute_metrics("fid50k_full", G=G, data=data, detector=det, num_gen=24, batch=5)
    # Seeded and independent of the batch size (an untrained G has zero noise strength, so the random
    # noise inputs, which are drawn per batch, do not enter here). Float32 convolutions sum in another
    # order at another batch size or thread count (~1e-7 relative per feature, seen up to 2.7e-6 on FID
    # after sqrtm); a seeding or batching bug would move FID by far more than the 1e-5 allowed.
    assert again["fid50k_full"] == pytest.approx(res["fid50k_full"], rel=1e-5)

    # Images that round-trip through the official uint8 quantisation reach the detector unchanged.
    replay = compute_metrics(
        ["fid50k_full", "pr50k3_full"], G=Replay(data), data=data, detector=det, num_gen=24, batch=8
    )
    assert abs(replay["fid50k_full"]) < 1e-4  # sqrtm of a rank-deficient 16x16 product: ~1e-6 of rounding
    assert replay["pr50k3_full_precision"] == replay["pr50k3_full_recall"] == 1.0


def test_conditional_generator_draws_dataset_labels(tmp_path: Path) -> None:
    data = make_dataset(tmp_path, labels=True)
    det = load_detector(write_standin(tmp_path / "standin.pt"))
    res = compute_metrics(
        ["kid50k_full"], G=tiny_generator(c_dim=3), data=data, detector=det, num_gen=12, max_real=12
    )
    assert np.isfinite(res["kid50k_full"])


def test_cli_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gan.io.checkpoint import save_generator

    data = make_dataset(tmp_path)
    net = save_generator(tiny_generator(), tmp_path / "g.safetensors")  # type: ignore[arg-type]
    det = write_standin(tmp_path / "standin.pt")
    argv = ["metrics", "--network", str(net), "--data", str(data), "--detector", str(det)]
    rc = main([*argv, "--metrics", "fid50k_full,kid50k_full", "--num-gen", "16"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert set(out["results"]) == {"fid50k_full", "kid50k_full"}
    rc = main([*argv, "--metrics", "fid_everything"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown metric" in err and err.count("\n") == 1
