"""Synchronous sampling end to end: HTTP -> Redis -> a real inference worker process (threads pool,
micro-batcher, model cache) -> Redis result -> HTTP, on PostgreSQL, with models uploaded over HTTP.

Pixel tolerance, everywhere below: one grey level. The fixtures' PNGs were computed by NVIDIA's code
one image per forward pass; ours may run a batch, and the rows of a batch differ from single rows only
in float32 summation order (gan.sampling.Sampler's docstring), which can move a rounded pixel by one.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from api.services.sampling import in_flight
from tests.api.inference_service import (
    FIXTURE_DIRS,
    Service,
    fixture_dir,
    fixture_meta,
    max_diff,
    png_pixels,
    start_service,
)
from tests.servers import PostgresServer, RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[Service]:
    yield from start_service(tmp_path_factory, postgres_server, redis_server)


def _query(meta: dict, seed: int, psi: float) -> dict[str, object]:
    query: dict[str, object] = {"psi": psi}
    c_dim = meta["init_kwargs"]["c_dim"]
    if c_dim:
        query["class"] = seed % c_dim  # meta.json: "one-hot at index seed % c_dim"
    return query


@pytest.mark.parametrize("fixture", FIXTURE_DIRS, ids=lambda d: d.name)
def test_seed_images_equal_the_official_pngs(service: Service, fixture: Path) -> None:
    meta = fixture_meta(fixture)
    model_id = service.upload(fixture)
    for seed in meta["seeds"]:
        for psi in meta["psis"]:
            response = service.http.get(
                f"/v1/models/{model_id}/images/{seed}.png", params=_query(meta, seed, psi)
            )
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/png"
            expected = png_pixels((fixture / f"seed{seed:04d}_psi{psi}.png").read_bytes())
            got = png_pixels(response.content)
            assert max_diff(got, expected) <= 1, f"{fixture.name} seed {seed} psi {psi}"


@pytest.mark.parametrize(
    "fixture", [d for d in FIXTURE_DIRS if fixture_meta(d).get("mix")], ids=lambda d: d.name
)
def test_mix_equals_the_official_mix(service: Service, fixture: Path) -> None:
    import numpy as np

    from gan.sampling import to_uint8

    meta = fixture_meta(fixture)
    mix = meta["mix"]
    expected = np.load(fixture / "expected.npz")
    model_id = service.upload(fixture)
    styles = ",".join(str(i) for i in mix["styles"])
    for row in mix["rows"]:
        for col in mix["cols"]:
            response = service.http.get(
                f"/v1/models/{model_id}/mix.png",
                params={"row": row, "col": col, "styles": styles, "psi": mix["psi"], "noise": "const"},
            )
            assert response.status_code == 200, response.text
            want = to_uint8(expected[f"mix_{row}_{col}"])[0]
            assert max_diff(png_pixels(response.content), want) <= 1, f"{fixture.name} mix {row}-{col}"


def test_etag_and_not_modified(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    url = f"/v1/models/{model_id}/images/7.png"
    first = service.http.get(url, params={"psi": 0.5})
    assert first.status_code == 200
    tag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag), "a strong ETag"
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    again = service.http.get(url, params={"psi": 0.5, "noise": "const"})  # the same request, spelt longer
    assert again.headers["etag"] == tag and again.content == first.content

    cached = service.http.get(url, params={"psi": 0.5}, headers={"If-None-Match": tag})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == tag
    assert "x-batch-size" not in cached.headers, "a 304 must not render"
    assert service.http.get(url, params={"psi": 0.5}, headers={"If-None-Match": '"other"'}).status_code == 200
    assert service.http.get(url, params={"psi": 0.6}).headers["etag"] != tag
    assert (
        service.http.get(f"/v1/models/{model_id}/images/7.webp", params={"psi": 0.5}).headers["etag"] != tag
    )

    for fmt, content_type, magic in (("jpg", "image/jpeg", b"\xff\xd8\xff"), ("webp", "image/webp", b"RIFF")):
        response = service.http.get(f"/v1/models/{model_id}/images/7.{fmt}", params={"psi": 0.5})
        assert response.status_code == 200 and response.headers["content-type"] == content_type
        assert response.content.startswith(magic)
        lossy = png_pixels(response.content)
        # Quality 90 on a noisy 32 px image: close to the PNG on average, not equal.
        assert abs(lossy.astype(float) - png_pixels(first.content).astype(float)).mean() < 20


def test_server_timing_says_where_the_time_went(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    response = service.http.get(f"/v1/models/{model_id}/images/11.png", params={"psi": 0.5})
    assert response.status_code == 200, response.text
    phases = {
        name: float(dur)
        for name, dur in re.findall(r"([a-z-]+);dur=([0-9.]+)", response.headers["server-timing"])
    }
    assert set(phases) == {"batch-wait", "synthesis", "encode", "worker", "broker", "inference"}
    # Milliseconds, each rounded to 0.1: the worker's parts fit in its time, which fits in the API's wait.
    assert phases["batch-wait"] + phases["synthesis"] + phases["encode"] <= phases["worker"] + 0.3
    assert phases["synthesis"] > 0 and phases["encode"] > 0
    assert abs(phases["worker"] + phases["broker"] - phases["inference"]) <= 0.2
    metrics = service.http.get("/metrics").text
    assert re.search(r'stylegan_inference_phase_seconds_count\{phase="synthesis"\} [1-9]', metrics)


def test_random_image_names_its_seed(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    response = service.http.get(f"/v1/models/{model_id}/images/random.png", params={"psi": 0.7})
    assert response.status_code == 200, response.text
    seed = int(response.headers["x-seed"])
    assert 0 <= seed < 2**32
    assert response.headers["cache-control"] == "no-store"
    link = re.fullmatch(r'<([^>]+)>; rel="canonical"', response.headers["link"])
    assert link is not None and link.group(1).startswith(f"/v1/models/{model_id}/images/{seed}.png?")
    permanent = service.http.get(link.group(1))
    assert permanent.status_code == 200 and permanent.content == response.content


def test_concurrent_requests_are_batched_and_equal_single_requests(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg3t"))
    seeds = list(range(100, 108))
    url = f"/v1/models/{model_id}/images/{{}}.png"
    service.http.get(url.format(99))  # the model is loaded before the burst
    start = threading.Barrier(len(seeds))

    def get(seed: int) -> tuple[int, bytes]:
        start.wait()
        response = service.http.get(url.format(seed))
        assert response.status_code == 200, response.text
        return int(response.headers["x-batch-size"]), response.content

    with ThreadPoolExecutor(len(seeds)) as pool:
        together = list(pool.map(get, seeds))
    sizes = [size for size, _ in together]
    assert max(sizes) > 1, f"8 requests at once should share forward passes, got batch sizes {sizes}"
    for seed, (_, content) in zip(seeds, together, strict=True):
        alone = service.http.get(url.format(seed), headers={"Cache-Control": "no-cache"})
        assert alone.headers["x-batch-size"] == "1"
        assert max_diff(png_pixels(content), png_pixels(alone.content)) <= 1, f"seed {seed}"

    metrics = service.http.get("/metrics").text
    count = re.search(r"^stylegan_inference_batch_size_count ([0-9.e+]+)$", metrics, re.M)
    single = re.search(r'^stylegan_inference_batch_size_bucket\{le="1.0"\} ([0-9.e+]+)$', metrics, re.M)
    assert count is not None and single is not None
    assert float(count.group(1)) > float(single.group(1)), "the histogram saw batches larger than one"


@pytest.mark.parametrize(
    "fixture_part, path, query, field",
    [
        ("sg2ada_uncond", "images/1.png", {"psi": 5}, "psi"),
        ("sg2ada_uncond", "images/1.png", {"psi": "nan"}, "psi"),
        ("sg2ada_uncond", f"images/{2**32}.png", {}, "seed"),
        ("sg2ada_uncond", "images/-1.png", {}, "seed"),
        ("sg2ada_uncond", "images/1.gif", {}, "format"),
        ("sg2ada_uncond", "images/1.png", {"noise": "loud"}, "noise"),
        ("sg2ada_uncond", "images/1.png", {"cutoff": 99}, "cutoff"),
        ("sg2ada_uncond", "images/1.png", {"class": 0}, "class"),
        ("sg2ada_cond", "images/1.png", {}, "class"),
        ("sg2ada_cond", "images/1.png", {"class": 4}, "class"),
        ("sg2ada_uncond", "images/1.png", {"translate": "0.1,0"}, "translate"),
        ("sg3t", "images/1.png", {"translate": "0.1"}, "translate"),
        ("sg2ada_uncond", "images/1.png", {"rotate": 10}, "rotate"),
        ("sg2ada_uncond", "mix.png", {"row": "x", "col": 1}, "row"),
        ("sg2ada_uncond", "mix.png", {"row": 1}, "col"),
        ("sg2ada_uncond", "mix.png", {"row": 1, "col": 2, "styles": "fine"}, "styles"),  # no 64 px layers
        ("sg2ada_uncond", "mix.png", {"row": 1, "col": 2, "styles": "0-40"}, "styles"),
    ],
)
def test_bad_parameters_are_422_naming_them(
    service: Service, fixture_part: str, path: str, query: dict[str, object], field: str
) -> None:
    model_id = service.upload(fixture_dir(fixture_part))
    response = service.http.get(f"/v1/models/{model_id}/{path}", params=query)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in response.json()["detail"], response.json()


def test_unknown_model_and_projection_are_404(service: Service) -> None:
    response = service.http.get("/v1/models/no-such-model/images/1.png")
    assert response.status_code == 404 and "no-such-model" in response.json()["detail"]
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    response = service.http.get(f"/v1/models/{model_id}/images/w/no-such-projection.png")
    assert response.status_code == 404, response.text
    response = service.http.get(f"/v1/models/{model_id}/mix.png", params={"row": "w:nope", "col": 1})
    assert response.status_code == 404, response.text


def test_resolution_over_the_limit_is_refused(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg3t"))
    small = service.app(max_resolution=32)
    try:
        response = small.get(f"/v1/models/{model_id}/images/1.png")
        assert response.status_code == 422 and "STYLEGAN_MAX_RESOLUTION" in response.json()["detail"]
    finally:
        small.__exit__(None, None, None)


def test_rate_limit_is_429_with_retry_after(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    limited = service.app(sample_rate_per_second=0.01, sample_burst=2)
    try:
        codes = [limited.get(f"/v1/models/{model_id}/images/{seed}.png").status_code for seed in (1, 2, 3)]
        assert codes == [200, 200, 429]
        refused = limited.get(f"/v1/models/{model_id}/images/4.png")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.headers["content-type"] == "application/problem+json"
        # A cached image costs nothing, so it is served even when the bucket is empty.
        first = limited.get(f"/v1/models/{model_id}/images/1.png", headers={"If-None-Match": "*"})
        assert first.status_code == 304
    finally:
        limited.__exit__(None, None, None)


def test_no_worker_answering_is_503_and_in_flight_cap_is_503(
    service: Service, redis_server: RedisServer
) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    # Another Redis database: the same server, but no worker listens there.
    lonely = service.app(
        broker_url=redis_server.url.rsplit("/", 1)[0] + "/5",
        sample_timeout_seconds=2.0,
        sample_max_in_flight=1,
    )
    try:
        results: list[object] = []
        waiting = threading.Thread(
            target=lambda: results.append(lonely.get(f"/v1/models/{model_id}/images/1.png")), daemon=True
        )
        started = time.monotonic()
        waiting.start()
        limit = in_flight(lonely.app)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while limit.current < 1:
            assert time.monotonic() < deadline, "the first request never started waiting"
            time.sleep(0.01)
        busy = lonely.get(f"/v1/models/{model_id}/images/2.png")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1", busy.text
        assert "STYLEGAN_SAMPLE_MAX_IN_FLIGHT" in busy.json()["detail"]
        waiting.join(30)
        timed_out = results[0]
        assert timed_out.status_code == 503 and int(timed_out.headers["retry-after"]) >= 1  # type: ignore[attr-defined]
        assert "no inference worker answered" in timed_out.json()["detail"]  # type: ignore[attr-defined]
        assert 1.5 < time.monotonic() - started < 20, "the wait is bounded by sample_timeout_seconds"
    finally:
        lonely.__exit__(None, None, None)

    unreachable = service.app(broker_url="redis://127.0.0.1:9/0", broker_timeout_seconds=0.5)
    try:
        response = unreachable.get(f"/v1/models/{model_id}/images/3.png")
        assert response.status_code == 503 and response.headers["retry-after"], response.text
    finally:
        unreachable.__exit__(None, None, None)


def test_grey_and_sizes_of_a_png(service: Service) -> None:
    """The PNG is the model's size and RGB; width and height come from the model, not the request."""
    fixture = fixture_dir("sg3r")
    model_id = service.upload(fixture)
    response = service.http.get(f"/v1/models/{model_id}/images/5.png")
    import io

    image = Image.open(io.BytesIO(response.content))
    resolution = fixture_meta(fixture)["init_kwargs"]["img_resolution"]
    assert image.size == (resolution, resolution) and image.mode == "RGB"


def test_the_inference_workers_log_holds_no_image_bytes(service: Service) -> None:
    model_id = service.upload(FIXTURE_DIRS[0])
    meta = fixture_meta(FIXTURE_DIRS[0])
    response = service.http.get(f"/v1/models/{model_id}/images/4242.png", params=_query(meta, 4242, 0.5))
    assert response.status_code == 200, response.text
    encoded = base64.b64encode(response.content).decode()

    def logged() -> str:
        return "\n".join(
            p.log_path.read_text(errors="replace")  # type: ignore[attr-defined]
            for p in service.workers.processes
        )

    deadline = time.monotonic() + 10
    while not re.search(r"stylegan\.render\[[^]]+\] succeeded in [0-9.]+s$", logged(), re.M):
        assert time.monotonic() < deadline, f"no success line for the render task:\n{service.workers.logs()}"
        time.sleep(0.1)
    text = logged()
    assert encoded[:64] not in text and "iVBORw0KGgo" not in text  # the PNG signature, base64-encoded
