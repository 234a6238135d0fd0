"""Editing directions over HTTP, end to end on a real inference worker (Redis + PostgreSQL): SeFa listed
and equal to the library's, `edit=` on the sampling routes equal to `stylegan generate --edit`, a user's
own direction (JSON and .npy), a GANSpace job with progress, edit grids, a sweep video, and the refusals."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from api.cli import main as stylegan
from gan.editing import load_directions, sefa
from gan.io.official_pickle import load_official_networks
from tests.api.inference_service import Service, fixture_dir, max_diff, png_pixels, start_service
from tests.api.test_events import parse_sse
from tests.servers import PostgresServer, RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[Service]:
    yield from start_service(tmp_path_factory, postgres_server, redis_server)


@pytest.mark.parametrize("name", ["sg2ada_uncond", "sg3t"])
def test_sefa_directions_are_the_library_s(service: Service, name: str) -> None:
    fixture = fixture_dir(name)
    model_id = service.upload(fixture)
    response = service.http.get(f"/v1/models/{model_id}/directions", params={"layers": "coarse", "k": 4})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [d["id"] for d in items] == [f"sefa-coarse-{r}" for r in range(4)]
    G = load_official_networks(fixture / "network.pkl")["G_ema"]
    for item, mine in zip(items, sefa(G, "coarse", 4), strict=True):
        assert (
            item["method"] == "sefa"
            and item["layers"] == "coarse"
            and item["eigenvalue"] == pytest.approx(mine.value)
        )
        np.testing.assert_allclose(item["vector"], mine.vector, atol=1e-6)
    again = service.http.get(f"/v1/models/{model_id}/directions", params={"layers": "Coarse", "k": 2})
    assert [d["vector"] for d in again.json()["items"]] == [d["vector"] for d in items[:2]]  # stored once


def test_an_edited_image_is_the_command_s(service: Service, tmp_path: Path) -> None:
    fixture = fixture_dir("sg2ada_uncond")
    model_id = service.upload(fixture)
    base = f"/v1/models/{model_id}/images/42.png"
    # Usable at once: a SeFa id not listed yet is computed on first use.
    edited = service.http.get(base, params={"psi": 0.7, "edit": ["sefa-all-0:3", "sefa-middle-1:-2@0-3"]})
    assert edited.status_code == 200, edited.text
    plain = service.http.get(base, params={"psi": 0.7})
    zero = service.http.get(base, params={"psi": 0.7, "edit": "sefa-all-0:0"})
    assert png_pixels(zero.content).tolist() == png_pixels(plain.content).tolist()
    assert len({edited.headers["etag"], plain.headers["etag"], zero.headers["etag"]}) == 3

    dirs = tmp_path / "d.npz"
    assert (
        stylegan(["directions", "--network", str(fixture / "network.pkl"), "--k", "2", "--out", str(dirs)])
        == 0
    )
    assert (
        stylegan(
            [
                "directions",
                "--network",
                str(fixture / "network.pkl"),
                "--layers",
                "middle",
                "--k",
                "2",
                "--out",
                str(tmp_path / "m.npz"),
            ]
        )
        == 0
    )
    merged = {**load_directions(dirs), **load_directions(tmp_path / "m.npz")}
    from gan.editing import save_directions

    save_directions(tmp_path / "all.npz", list(merged.values()))
    assert stylegan(
        ["generate", "--network", str(fixture / "network.pkl"), "--seeds", "42", "--trunc", "0.7",
         "--directions", str(tmp_path / "all.npz"), "--edit", "sefa-all-0:3", "--edit", "sefa-middle-1:-2@0-3",
         "--outdir", str(tmp_path / "out")]
    ) == 0  # fmt: skip
    assert (
        max_diff(png_pixels(edited.content), png_pixels((tmp_path / "out" / "seed0042.png").read_bytes()))
        <= 1
    )

    cached = service.http.get(
        base,
        params={"psi": 0.7, "edit": ["sefa-all-0:3", "sefa-middle-1:-2@0-3"]},
        headers={"If-None-Match": edited.headers["etag"]},
    )
    assert cached.status_code == 304
    mix = service.http.get(
        f"/v1/models/{model_id}/mix.png", params={"row": 1, "col": 2, "edit": "sefa-all-0:3"}
    )
    assert (
        mix.status_code == 200
        and mix.content
        != service.http.get(f"/v1/models/{model_id}/mix.png", params={"row": 1, "col": 2}).content
    )
    rnd = service.http.get(f"/v1/models/{model_id}/images/random.png", params={"edit": "sefa-all-0:1.5"})
    assert rnd.status_code == 200 and "edit=sefa-all-0%3A1.5" in rnd.headers["link"]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"edit": "nope:1"}, "unknown direction 'nope'"),
        ({"edit": "sefa-all-0:nan"}, "finite"),
        ({"edit": "sefa-all-0:inf"}, "finite"),
        ({"edit": "sefa-all-0:1e309"}, "finite"),
        ({"edit": "sefa-all-0:1000"}, "outside"),
        ({"edit": "sefa-all-0"}, "ID:STRENGTH"),
        ({"edit": "sefa-all-0:1@0-40"}, "out of range"),
        ({"edit": "sefa-fine-0:1"}, "unknown direction 'sefa-fine-0'"),  # 32 px: no fine layers
        ({"edit": ["sefa-all-0:1"] * 9}, "edit"),
    ],
)
def test_bad_edits_are_422_naming_edit(service: Service, params: dict[str, object], needle: str) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    response = service.http.get(f"/v1/models/{model_id}/images/1.png", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    assert "edit" in detail and needle in detail, detail


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"layers": "fine"}, 422),
        ({"layers": "0-99"}, 422),
        ({"layers": "x"}, 422),
        ({"k": 0}, 422),
        ({"k": 65}, 422),
        ({"method": "pca"}, 422),
    ],
)
def test_bad_direction_queries(service: Service, params: dict[str, object], status: int) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    response = service.http.get(f"/v1/models/{model_id}/directions", params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_user_s_own_direction(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    url = f"/v1/models/{model_id}/directions"
    vector = np.random.RandomState(0).randn(128)
    created = service.http.post(
        url, json={"method": "user", "name": "smile", "vector": vector.tolist(), "layers": "coarse"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "smile" and created.json()["layers"] == "coarse"
    buf = io.BytesIO()
    np.save(buf, (2 * vector)[None].astype(np.float32))  # InterFaceGAN saves [1, w_dim]
    uploaded = service.http.post(url, files={"file": ("age.npy", buf.getvalue())}, data={"name": "age"})
    assert uploaded.status_code == 201, uploaded.text
    listed = service.http.get(url, params={"method": "user"}).json()["items"]
    assert [d["id"] for d in listed] == ["age", "smile"]
    np.testing.assert_allclose(listed[0]["vector"], 2 * vector, rtol=1e-6)

    one = service.http.get(f"/v1/models/{model_id}/images/7.png", params={"edit": "smile:1"})
    two = service.http.get(f"/v1/models/{model_id}/images/7.png", params={"edit": "age:0.5@coarse"})
    assert one.status_code == two.status_code == 200
    assert max_diff(png_pixels(one.content), png_pixels(two.content)) <= 1  # the same step, two ways

    for body, field in [
        ({"method": "user", "name": "smile", "vector": [1.0] * 3}, "vector"),
        ({"method": "user", "name": "Bad Name", "vector": [1.0] * 128}, "name"),
        ({"method": "user", "name": "sefa", "vector": [1.0] * 128}, "name"),
        ({"method": "user", "name": "z", "vector": [0.0] * 128}, "vector"),
        ({"method": "user", "name": "z", "vector": [1.0] * 128, "layers": "fine"}, "layers"),
        ({"method": "pca"}, "method"),
        ({"method": "ganspace", "samples": 10}, "samples"),
    ]:
        response = service.http.post(url, json=body)
        assert response.status_code == 422 and field in response.json()["detail"], (body, response.text)
    nan = service.http.post(
        url,
        content=b'{"method": "user", "name": "q", "vector": [NaN]}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422, nan.text
    junk = service.http.post(url, files={"file": ("x.npy", b"not npy")}, data={"name": "junk"})
    assert junk.status_code == 422 and "file" in junk.json()["detail"]
    assert service.http.delete(f"{url}/age").status_code == 204
    assert service.http.delete(f"{url}/age").status_code == 404
    assert service.http.delete(f"{url}/sefa-all-0").status_code == 404
    gone = service.http.get(f"/v1/models/{model_id}/images/7.png", params={"edit": "age:1"})
    assert gone.status_code == 422


def test_ganspace_job_reports_progress_and_stores_directions(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg3t"))
    response = service.http.post(
        f"/v1/models/{model_id}/directions", json={"method": "ganspace", "samples": 6000, "k": 3}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    job = service.wait_job(job_id)
    assert job["state"] == "succeeded", job
    events, _ = parse_sse(service.http.get(f"/v1/jobs/{job_id}/events").text)
    progress = [e["data"] for e in events if e["event"] == "progress"]
    samples = [p.get("samples") for p in progress]
    counted = [n for n in samples if n]
    assert len(counted) >= 2 and counted == sorted(counted) and counted[-1] == 6000, events
    items = service.http.get(f"/v1/models/{model_id}/directions", params={"method": "ganspace"}).json()[
        "items"
    ]
    assert [d["id"] for d in items] == [f"ganspace-all-{r}" for r in range(3)]
    assert items[0]["sigma"] > items[2]["sigma"] > 0 and 0 < items[0]["variance"] < 1
    image = service.http.get(f"/v1/models/{model_id}/images/3.png", params={"edit": "ganspace-all-0:2"})
    assert image.status_code == 200


def test_edit_grid_and_sweep_video(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    response = service.http.post(
        f"/v1/models/{model_id}/edit-grids",
        json={"direction": "sefa-all-0", "seeds": [0, 1], "strengths": [-4, 0, 4]},
    )
    assert response.status_code == 202, response.text
    job = service.wait_job(response.json()["id"])
    assert job["state"] == "succeeded", job
    grid = png_pixels(service.http.get(job["result"]["url"]).content)
    assert grid.shape == (2 * 32, 3 * 32, 3)
    plain = png_pixels(service.http.get(f"/v1/models/{model_id}/images/1.png", params={"psi": 0.7}).content)
    assert max_diff(grid[32:, 32:64], plain) <= 1  # strength 0 is the unedited image
    for body, field in [
        ({"direction": "nope", "seeds": [0], "strengths": [1]}, "direction"),
        ({"direction": "sefa-all-0", "seeds": [0], "strengths": [1], "layers": "0-99"}, "direction"),
        ('{"direction": "sefa-all-0", "seeds": [0], "strengths": [NaN]}', "strengths"),
    ]:
        raw = body if isinstance(body, str) else json.dumps(body)
        headers = {"content-type": "application/json"}
        refused = service.http.post(f"/v1/models/{model_id}/edit-grids", content=raw, headers=headers)
        assert refused.status_code == 422 and field in refused.text, refused.text

    video = service.http.post(
        f"/v1/models/{model_id}/videos",
        json={
            "seeds": [5],
            "frames": 6,
            "fps": 6,
            "format": "gif",
            "sweep": {"direction": "sefa-all-0", "start": -4, "stop": 4},
        },
    )
    assert video.status_code == 202, video.text
    job = service.wait_job(video.json()["id"])
    assert job["state"] == "succeeded", job
    from PIL import Image

    clip = Image.open(io.BytesIO(service.http.get(job["result"]["url"]).content))
    assert clip.n_frames == 6
    bad = service.http.post(
        f"/v1/models/{model_id}/videos", json={"seeds": [5], "frames": 6, "sweep": {"direction": "nope"}}
    )
    assert bad.status_code == 422 and "sweep" in bad.json()["detail"], bad.text


def test_a_key_s_directions_are_its_own(service: Service) -> None:
    keys = ("key-a-" + "x" * 20, "key-b-" + "y" * 20)
    http = service.app(api_keys=keys)
    a, b = ({"Authorization": f"Bearer {k}"} for k in keys)
    with (fixture_dir("sg2ada_uncond") / "network.pkl").open("rb") as fh:
        uploaded = http.post("/v1/models", files={"file": ("a.pkl", fh)}, data={"name": "a"}, headers=a)
    assert uploaded.status_code in (200, 201), uploaded.text
    model_id = uploaded.json()["id"]
    url = f"/v1/models/{model_id}/directions"
    created = http.post(url, json={"method": "user", "name": "mine", "vector": [1.0] * 128}, headers=a)
    assert created.status_code == 201, created.text
    assert [d["id"] for d in http.get(url, params={"method": "user"}, headers=a).json()["items"]] == ["mine"]
    assert (
        http.get(f"/v1/models/{model_id}/images/3.png", params={"edit": "mine:1"}, headers=a).status_code
        == 200
    )
    # Another key: the model, and so its directions, do not exist for it.
    for response in (
        http.get(url, params={"method": "user"}, headers=b),
        http.get(f"/v1/models/{model_id}/images/3.png", params={"edit": "mine:1"}, headers=b),
        http.post(url, json={"method": "user", "name": "theirs", "vector": [1.0] * 128}, headers=b),
        http.post(url, json={"method": "ganspace", "samples": 1000}, headers=b),
        http.delete(f"{url}/mine", headers=b),
        http.post(
            f"/v1/models/{model_id}/edit-grids",
            json={"direction": "mine", "seeds": [0], "strengths": [1]},
            headers=b,
        ),
    ):
        assert response.status_code == 404, response.text
    assert http.get(url).status_code == 401
