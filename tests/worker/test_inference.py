"""The inference worker's parts without Celery: the model cache (LRU by count and bytes, one load per
cold model however many threads ask) and the micro-batcher (concurrent rows share a forward pass and
get the pixels they would get alone)."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.config import GeneratorConfig, MappingConfig, StyleGAN2SynthesisConfig
from gan.generator import Generator
from gan.io.checkpoint import save_generator
from gan.mixing import style_mix
from worker.inference.batcher import MicroBatcher, SynthesisGroup
from worker.inference.engine import ModelCache, ModelFileMissing, weights_bytes
from worker.inference.messages import (
    ImageOptions,
    MixRequest,
    ModelRef,
    SampleRequest,
    SeedLatent,
    WLatent,
    WRequest,
    encode_w,
)
from worker.inference.render import RenderError, decode_w, encode_image, render
from worker.storage import LocalStorage


def tiny_generator(seed: int, c_dim: int = 0) -> Generator:
    torch.manual_seed(seed)
    config = GeneratorConfig(
        z_dim=16,
        w_dim=16,
        c_dim=c_dim,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=StyleGAN2SynthesisConfig(channel_base=128, channel_max=16),
    )
    G = Generator(config)
    w_avg = G.mapping.w_avg
    assert w_avg is not None
    with torch.no_grad():
        w_avg.copy_(torch.randn_like(w_avg))  # away from 0, so psi matters
    return G


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path / "files")
    for i in range(3):
        path = tmp_path / f"g{i}.safetensors"
        save_generator(tiny_generator(i), path)
        store.put_file(f"models/g{i}.safetensors", path)
    return store


def test_cache_keeps_the_most_recent_models_by_count(storage: LocalStorage) -> None:
    cache = ModelCache(storage, torch.device("cpu"), max_models=2, max_bytes=10**9)
    a = cache.get("models/g0.safetensors")
    cache.get("models/g1.safetensors")
    assert cache.get("models/g0.safetensors") is a  # a hit, and g0 is now the most recent
    cache.get("models/g2.safetensors")
    assert cache.keys() == ["models/g0.safetensors", "models/g2.safetensors"]
    assert cache.loads == 3


def test_cache_bounds_bytes(storage: LocalStorage) -> None:
    one = weights_bytes(
        ModelCache(storage, torch.device("cpu"), 1, 10**9).get("models/g0.safetensors").sampler.G
    )
    cache = ModelCache(storage, torch.device("cpu"), max_models=10, max_bytes=2 * one + one // 2)
    for i in range(3):
        cache.get(f"models/g{i}.safetensors")
    assert len(cache) == 2 and cache.total_bytes <= 2 * one + one // 2
    # A single model over the byte bound still loads (it is needed now) and is the only one kept.
    small = ModelCache(storage, torch.device("cpu"), max_models=10, max_bytes=1)
    small.get("models/g0.safetensors")
    small.get("models/g1.safetensors")
    assert small.keys() == ["models/g1.safetensors"]


def test_cache_loads_a_cold_model_once_for_many_threads(storage: LocalStorage) -> None:
    cache = ModelCache(storage, torch.device("cpu"), max_models=2, max_bytes=10**9)
    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(lambda _: cache.get("models/g1.safetensors"), range(8)))
    assert cache.loads == 1 and all(m is loaded[0] for m in loaded)


def test_cache_missing_file(storage: LocalStorage) -> None:
    with pytest.raises(ModelFileMissing, match="missing"):
        ModelCache(storage, torch.device("cpu"), 1, 10**9).get("models/nope.safetensors")


def test_batcher_groups_concurrent_rows_and_matches_single_rows(storage: LocalStorage) -> None:
    sampler = ModelCache(storage, torch.device("cpu"), 1, 10**9).get("models/g0.safetensors").sampler
    seeds = list(range(8))
    ws = sampler.ws_for_seeds(seeds, psi=0.7)
    alone = sampler.images_from_ws(ws, batch_size=1)  # [8, H, W, C], one forward pass each
    sizes: list[int] = []
    batcher = MicroBatcher(max_batch=4, max_wait_s=0.2, observe=sizes.append)
    group = SynthesisGroup("models/g0.safetensors", "const")
    try:
        start = threading.Barrier(8)

        def one(i: int) -> tuple[np.ndarray, int]:
            start.wait()
            result = batcher.submit(group, sampler, ws[i], noise_seed=seeds[i]).result(timeout=30)
            return result.image, result.batch_size

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(8)))
    finally:
        batcher.close()
    assert sorted(sizes) == [4, 4], f"8 rows at once with max_batch 4 should run as two passes, got {sizes}"
    assert all(size == 4 for _, size in results)
    for i, (image, _) in enumerate(results):
        # Batched rows differ from single ones only in float32 summation order: at most one grey level.
        diff = np.abs(image.astype(int) - alone[i].astype(int))
        assert diff.max() <= 1, f"seed {i}: batched pixels differ by {diff.max()}"


def test_batcher_keeps_incompatible_rows_apart(storage: LocalStorage) -> None:
    cache = ModelCache(storage, torch.device("cpu"), 2, 10**9)
    s0 = cache.get("models/g0.safetensors").sampler
    s1 = cache.get("models/g1.safetensors").sampler
    batcher = MicroBatcher(max_batch=8, max_wait_s=0.1)
    try:
        futures = [
            batcher.submit(SynthesisGroup("models/g0.safetensors", "const"), s0, s0.ws_for_seeds([1])[0]),
            batcher.submit(SynthesisGroup("models/g1.safetensors", "const"), s1, s1.ws_for_seeds([1])[0]),
            batcher.submit(SynthesisGroup("models/g0.safetensors", "none"), s0, s0.ws_for_seeds([1])[0]),
            batcher.submit(SynthesisGroup("models/g0.safetensors", "const"), s0, s0.ws_for_seeds([2])[0]),
        ]
        results = [f.result(timeout=30) for f in futures]
    finally:
        batcher.close()
    assert [r.batch_size for r in results] == [2, 1, 1, 2]
    assert not np.array_equal(results[0].image, results[1].image), "two models, one seed: different images"


def test_batcher_reports_a_failed_pass_to_every_caller(storage: LocalStorage) -> None:
    sampler = ModelCache(storage, torch.device("cpu"), 1, 10**9).get("models/g0.safetensors").sampler
    batcher = MicroBatcher(max_batch=4, max_wait_s=0.05)
    try:
        # translate on a StyleGAN2 model fails inside the pass: the caller must get the error, not hang.
        future = batcher.submit(
            SynthesisGroup("models/g0.safetensors", "const", translate=(0.1, 0.0)),
            sampler,
            sampler.ws_for_seeds([0])[0],
        )
        with pytest.raises(Exception, match="StyleGAN3"):
            future.result(timeout=30)
        with pytest.raises(ValueError, match="ws must be"):
            batcher.submit(SynthesisGroup("m", "const"), sampler, torch.zeros(3, 16))
    finally:
        batcher.close()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_render_sample_and_mix_match_the_library(storage: LocalStorage) -> None:
    cache = ModelCache(storage, torch.device("cpu"), 2, 10**9)
    batcher = MicroBatcher(max_batch=4, max_wait_s=0.0)
    model = ModelRef(file_key="models/g2.safetensors")
    sampler = cache.get(model.file_key).sampler
    try:
        out = render(SampleRequest(model=model, image=ImageOptions(psi=0.5), seed=7), cache, batcher, 30)
        png = _pixels(out.data)
        assert np.array_equal(png, sampler.images([7], psi=0.5)[0])
        assert out.content_type == "image/png" and out.batch_size == 1 and out.width == 16

        mix = MixRequest(
            model=model,
            image=ImageOptions(psi=0.7),
            row=SeedLatent(seed=3),
            col=SeedLatent(seed=9),
            styles="0-2",
        )
        expected = style_mix(sampler, [3], [9], [0, 1, 2], psi=0.7)[(3, 9)]
        got = _pixels(render(mix, cache, batcher, 30).data)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1

        # A projected w renders as itself: the w of seed 7 gives seed 7's image, alone or as a mix's row.
        w = sampler.ws_for_seeds([7], psi=0.5)[0].numpy()
        from_w = render(WRequest(model=model, w=encode_w(w)), cache, batcher, 30)
        assert np.array_equal(_pixels(from_w.data), png)
        # (the column is seed 7 at the same psi, so the mix copies styles equal to the row's own)
        w_row = mix.model_copy(
            update={"row": WLatent.from_array(w), "col": SeedLatent(seed=7), "image": ImageOptions(psi=0.5)}
        )
        assert np.array_equal(_pixels(render(w_row, cache, batcher, 30).data), png)
    finally:
        batcher.close()


def test_render_refuses_what_the_model_cannot_do(storage: LocalStorage) -> None:
    cache = ModelCache(storage, torch.device("cpu"), 2, 10**9)
    batcher = MicroBatcher(max_batch=4, max_wait_s=0.0)
    model = ModelRef(file_key="models/g0.safetensors")
    refused: list[tuple[SampleRequest | WRequest | MixRequest, str]] = [
        (SampleRequest(model=model, seed=1, image=ImageOptions(translate=(0.1, 0.0))), "translate"),
        (SampleRequest(model=model, seed=1, image=ImageOptions(class_idx=0)), "seed"),  # unconditional
        (MixRequest(model=model, row=SeedLatent(seed=1), col=SeedLatent(seed=2), styles="fine"), "styles"),
        (MixRequest(model=model, row=SeedLatent(seed=1), col=WLatent(w=b"\0" * 8), styles="0"), "col"),
        (WRequest(model=model, w=b"\0" * 12), "w"),
    ]
    try:
        for request, field in refused:
            with pytest.raises(RenderError) as caught:
                render(request, cache, batcher, 30)
            assert caught.value.field == field, request
    finally:
        batcher.close()


def test_w_decoding_round_trip_and_refusals() -> None:
    w = np.random.RandomState(0).randn(4, 16).astype(np.float32)
    assert np.array_equal(decode_w(encode_w(w), 4, 16, "row").numpy(), w)
    with pytest.raises(RenderError, match=r"\[5, 16\]"):
        decode_w(encode_w(w), 5, 16, "row")
    with pytest.raises(RenderError, match="non-finite"):
        decode_w(encode_w(np.full((4, 16), np.nan)), 4, 16, "row")


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("jpg", b"\xff\xd8\xff"), ("webp", b"RIFF")])
def test_encode_image(fmt: str, magic: bytes) -> None:
    image = np.random.RandomState(0).randint(0, 256, (16, 16, 3), dtype=np.uint8)
    assert encode_image(image, fmt).startswith(magic)
    assert encode_image(image[:, :, :1], fmt).startswith(magic)  # greyscale models


def test_render_says_where_the_time_went(storage: LocalStorage) -> None:
    cache = ModelCache(storage, torch.device("cpu"), 1, 10**9)
    # A lone row waits max_wait_s for companions before its pass: that wait is its batch-wait.
    batcher = MicroBatcher(max_batch=4, max_wait_s=0.05)
    model = ModelRef(file_key="models/g0.safetensors")
    try:
        out = render(SampleRequest(model=model, seed=3), cache, batcher, 30)
    finally:
        batcher.close()
    t = out.timings
    assert t is not None
    assert 0.05 <= t.batch_wait_s < 5 and 0 < t.synthesis_s < 5 and 0 < t.encode_s < 5
    assert t.batch_wait_s + t.synthesis_s + t.encode_s <= t.worker_s
