"""Mix-grid and video jobs end to end on a real inference worker (Redis + PostgreSQL): the grid artifact
equals `stylegan mix`'s grid.png, the video has the asked frames and streams with Range."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from api.cli import main as stylegan
from tests.api.inference_service import (
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


def test_mix_grid_job_equals_the_cli_grid(service: Service, tmp_path: Path) -> None:
    fixture = fixture_dir("sg2ada_uncond")
    model_id = service.upload(fixture)
    rows, cols = [0, 42], [1, 7, 1234]
    response = service.http.post(
        f"/v1/models/{model_id}/mix-grids", json={"rows": rows, "cols": cols, "styles": "0-3", "psi": 0.7}
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    job = service.wait_job(response.json()["id"])
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["url"] == f"/v1/artifacts/{result['artifact_id']}" and result["styles"] == [0, 1, 2, 3]

    artifact = service.http.get(result["url"])
    assert artifact.status_code == 200 and artifact.headers["content-type"].startswith("image/png")
    grid = png_pixels(artifact.content)
    assert stylegan(
        ["mix", "--network", str(fixture / "network.pkl"), "--rows", "0,42", "--cols", "1,7,1234",
         "--styles", "0-3", "--trunc", "0.7", "--outdir", str(tmp_path)]
    ) == 0  # fmt: skip
    expected = png_pixels((tmp_path / "grid.png").read_bytes())
    assert grid.shape == ((len(rows) + 1) * 32, (len(cols) + 1) * 32, 3)
    # Same code and batches; one grey level for float summation order across processes and thread counts.
    assert max_diff(grid, expected) <= 1


def test_mix_grid_refusals(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    url = f"/v1/models/{model_id}/mix-grids"
    response = service.http.post(url, json={"rows": [2**32], "cols": [1]})
    assert response.status_code == 422 and "rows" in response.json()["detail"]
    response = service.http.post(url, json={"rows": [1], "cols": [2], "class": 1})
    assert response.status_code == 422 and "class" in response.json()["detail"]
    small = service.app(mix_grid_max_cells=4)
    try:
        response = small.post(url, json={"rows": [1, 2, 3], "cols": [4, 5]})
        assert response.status_code == 422 and "STYLEGAN_MIX_GRID_MAX_CELLS" in response.json()["detail"]
    finally:
        small.__exit__(None, None, None)
    # styles are checked against the model's layers before a job exists (a 32 px model has no fine band).
    response = service.http.post(url, json={"rows": [1], "cols": [2], "styles": "fine"})
    assert response.status_code == 422 and response.json()["detail"].startswith("body styles:")
    assert "fine" in response.json()["detail"]
    assert service.http.post("/v1/models/nope/mix-grids", json={"rows": [1], "cols": [2]}).status_code == 404


def test_video_job_has_the_frames_and_streams_with_range(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg3t"))
    response = service.http.post(
        f"/v1/models/{model_id}/videos",
        json={"seeds": [0, 1, 2], "frames": 6, "fps": 10, "format": "gif", "space": "z",
              "translate": [[0, 0], [0.2, 0.1]], "rotate": [0, 20]},
    )  # fmt: skip
    assert response.status_code == 202, response.text
    job = service.wait_job(response.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["progress"] == 1.0
    result = job["result"]
    assert result["frames"] == 6 and result["content_type"] == "image/gif"

    video = service.http.get(result["url"])
    assert video.status_code == 200 and video.headers["content-type"].startswith("image/gif")
    assert len(video.content) == result["size_bytes"]
    gif = Image.open(io.BytesIO(video.content))
    assert gif.n_frames == 6 and gif.size == (64, 64)
    assert gif.info["duration"] == 100  # 10 fps

    part = service.http.get(result["url"], headers={"Range": "bytes=10-109"})
    assert part.status_code == 206, part.text
    assert part.content == video.content[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(video.content)}"


def test_mp4_video(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    job_id = service.http.post(
        f"/v1/models/{model_id}/videos",
        json={"seeds": [3, 4], "frames": 4, "fps": 24, "format": "mp4", "loop": True},
    ).json()["id"]
    job = service.wait_job(job_id)
    assert job["state"] == "succeeded", job
    data = service.http.get(job["result"]["url"]).content
    assert data[4:8] == b"ftyp" and job["result"]["content_type"] == "video/mp4"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"seeds": [1]}, "seeds"),  # one seed and no path: nothing to walk
        ({"seeds": [1, 2], "translate": [[0, 0], [1, 1]]}, "translate"),  # StyleGAN2
        ({"seeds": [1, 2], "rotate": [0, 10]}, "rotate"),
        ({"seeds": [1, 2], "format": "gif", "fps": 60}, "fps"),
        ({"seeds": [1, 2], "format": "avi"}, "format"),
        ({"seeds": [1, 2], "frames": 0}, "frames"),
        ({"seeds": [1, 2], "space": "x"}, "space"),
        ({"seeds": [1, 2], "psi": 3}, "psi"),
    ],
)
def test_video_refusals(service: Service, body: dict[str, object], field: str) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    response = service.http.post(f"/v1/models/{model_id}/videos", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


def test_video_frame_limit(service: Service) -> None:
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    small = service.app(video_max_frames=10)
    try:
        response = small.post(f"/v1/models/{model_id}/videos", json={"seeds": [1, 2], "frames": 11})
        assert response.status_code == 422 and "STYLEGAN_VIDEO_MAX_FRAMES" in response.json()["detail"]
    finally:
        small.__exit__(None, None, None)
    assert fixture_meta(fixture_dir("sg2ada_uncond"))["init_kwargs"]["img_resolution"] == 32


def test_mix_grid_and_video_jobs_carry_a_checked_webhook_url(service: Service) -> None:
    """Every job-creating route takes `webhook_url`, refused for a loopback address (the SSRF policy)
    and stored on the job otherwise. Last in the module: its jobs'
    notifications to an unreachable address are left to the worker's teardown."""
    model_id = service.upload(fixture_dir("sg2ada_uncond"))
    bodies = {
        "mix-grids": {"rows": [1], "cols": [2], "styles": "0-1"},
        "videos": {"seeds": [0, 1], "frames": 2, "format": "gif"},
    }
    for route, body in bodies.items():
        url = f"/v1/models/{model_id}/{route}"
        refused = service.http.post(url, json=body | {"webhook_url": "http://127.0.0.1:9/hook"})
        assert refused.status_code == 422 and "webhook_url" in refused.json()["detail"], refused.text
        hook = "https://1.1.1.1/stylegan-hook"  # a public address literal: no DNS on test machines
        accepted = service.http.post(url, json=body | {"webhook_url": hook})
        assert accepted.status_code == 202, accepted.text
        assert service.http.get(f"/v1/jobs/{accepted.json()['id']}").json()["webhook_url"] == hook
