"""Projection over HTTP on PostgreSQL and Redis, run by a real `python -m worker` process.

One worker (inference queue) serves the whole module. Models are official fixture pickles, converted to
our format and registered directly (POST /v1/models is another part; this test needs only a Model row
and its file). The distance is the `simple` stand-in, so no VGG16 file is needed.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import owner_key_for
from api.services.projections import load_projection_w
from gan.io.checkpoint import load_generator, load_network, save_generator
from gan.perceptual import SimpleFeatureDistance
from gan.projection import prepare_target, render_ws, w_stats
from tests.servers import PostgresServer, RedisServer, WorkerProcesses, settings_env
from worker.db.migrate import upgrade_head
from worker.db.models import Artifact, Model
from worker.db.session import make_engine, make_session_factory
from worker.settings import Settings
from worker.storage import make_storage

pytestmark = pytest.mark.integration

FIXTURES = Path("/work/shared/fixtures/official")
KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
STEPS = 40


@pytest.fixture(scope="module")
def service(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Settings for the app and its one worker; the worker lives as long as the module."""
    redis_server.flush()
    url = postgres_server.create_database()
    upgrade_head(url)
    values: dict[str, Any] = {
        "data_dir": tmp_path_factory.mktemp("projections") / "data",
        "database_url": url,
        "broker_url": redis_server.url,
        "job_lease_seconds": 20.0,
        "heartbeat_seconds": 0.5,
        "api_keys": f"{KEY_A},{KEY_B}",
        "projection_distance": "simple",
    }
    log_dir = tmp_path_factory.mktemp("worker-logs")
    workers = WorkerProcesses(log_dir)
    env = settings_env(**{k: v for k, v in values.items() if k != "api_keys"}, api_keys=values["api_keys"])
    workers.spawn(env, queues="inference")
    try:
        yield values
    finally:
        workers.stop_all()
        print(workers.logs())


@pytest.fixture(scope="module")
def settings(service: dict[str, Any]) -> Settings:
    return Settings(**service)


@pytest.fixture(scope="module")
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def register_fixture(settings: Settings, name: str, owner_key: str | None, tmp_path: Path) -> tuple[str, Any]:
    """Convert an official fixture pickle to our format, store it, and add its Model row."""
    G = load_network(FIXTURES / name / "network.pkl")
    path = save_generator(G, tmp_path / f"{name}.safetensors")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    key = make_storage(settings).put_bytes(f"models/{digest}.safetensors", data)
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        existing = session.query(Model).filter_by(owner_key=owner_key, sha256=digest).one_or_none()
        if existing is not None:  # registered by an earlier test of this module
            return existing.id, load_generator(path)
        model = Model(
            name=name,
            architecture=G.config.architecture,
            resolution=G.img_resolution,
            z_dim=G.z_dim,
            w_dim=G.w_dim,
            c_dim=G.c_dim,
            num_ws=G.num_ws,
            file_key=key,
            sha256=digest,
            size_bytes=len(data),
            format="ours",
            config=G.config.to_dict(),
            source=f"test:{name}",
            owner_key=owner_key,
        )
        session.add(model)
        session.commit()
        return model.id, load_generator(path)


def wait_for(
    client: TestClient, url: str, done: Callable[[dict[str, Any]], bool], key: str, timeout: float = 180.0
):
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(url, headers=auth(key)).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, f"{url} stuck: {body}"
        time.sleep(0.2)


def finished(body: dict[str, Any]) -> bool:
    return body["state"] in {"succeeded", "failed", "canceled"}


def png_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    PIL.Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def read_artifact(settings: Settings, artifact_id: str) -> tuple[Artifact, bytes]:
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        row = session.get(Artifact, artifact_id)
        assert row is not None
        session.expunge(row)
    with make_storage(settings).open(row.file_key) as f:
        data = f.read()
    assert hashlib.sha256(data).hexdigest() == row.sha256 and len(data) == row.size_bytes
    return row, data


def decode_png(data: bytes) -> np.ndarray:
    with PIL.Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.array(image.convert("RGB"))


@pytest.mark.parametrize(
    ("fixture", "space", "save_video"),
    [("sg2ada_uncond_32", "w", True), ("sg3t_uncond_64", "w+", False)],
)
def test_projection_reconstructs_the_target(
    http: TestClient, settings: Settings, tmp_path: Path, fixture: str, space: str, save_video: bool
) -> None:
    model_id, G = register_fixture(settings, fixture, owner_key_for(KEY_A), tmp_path)
    # The target: another network's image would do, but the fixture's own seed-42 picture is a fair
    # one (reachable by the model, far from the average face the projection starts from).
    target_png = (FIXTURES / fixture / "seed0042_psi1.0.png").read_bytes()
    response = http.post(
        f"/v1/models/{model_id}/projections",
        files={"image": ("target.png", target_png, "image/png")},
        data={"space": space, "steps": str(STEPS), "seed": "5", "save_video": str(save_video).lower()},
        headers=auth(KEY_A),
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["state"] == "queued" and created["model_id"] == model_id
    assert response.headers["location"] == f"/v1/projections/{created['id']}"

    projection = wait_for(http, f"/v1/projections/{created['id']}", finished, KEY_A)
    job = http.get(f"/v1/jobs/{created['id']}", headers=auth(KEY_A)).json()
    assert projection["state"] == "succeeded", job
    assert job["kind"] == "projection" and job["progress"] == 1.0
    # The last step's progress is always written, whatever the throttle skipped.
    detail = job["progress_detail"]
    if save_video:
        assert detail == {"phase": "video", "frame": STEPS, "frames": STEPS}
    else:
        assert detail["phase"] == "optimize" and detail["step"] == detail["steps"] == STEPS
        assert detail["loss"] > 0
    result = job["result"]
    assert result["projection_id"] == created["id"] and result["steps_done"] == STEPS

    # Artifacts: types, shapes, the official npz layout.
    _, w_data = read_artifact(settings, result["w_artifact_id"])
    with np.load(io.BytesIO(w_data), allow_pickle=False) as npz:
        assert list(npz.keys()) == ["w"]
        w = npz["w"]
    assert w.dtype == np.float32 and w.shape == (1, G.num_ws, G.w_dim)
    if space == "w":  # one w broadcast to every layer
        assert np.array_equal(w[0], np.broadcast_to(w[0, :1], w[0].shape))
    else:
        assert not np.allclose(w[0, 0], w[0, -1])
    image_row, image_data = read_artifact(settings, result["image_artifact_id"])
    target_row, target_data = read_artifact(settings, result["target_artifact_id"])
    assert image_row.content_type == target_row.content_type == "image/png"
    proj, target = decode_png(image_data), decode_png(target_data)
    R = G.img_resolution
    assert proj.shape == target.shape == (R, R, 3)
    with PIL.Image.open(io.BytesIO(target_png)) as original:
        assert np.array_equal(target, prepare_target(original, R).numpy())
    if save_video:
        video_row, video = read_artifact(settings, result["video_artifact_id"])
        assert video_row.content_type == "video/mp4" and video[4:8] == b"ftyp"
        assert projection["video_url"] == f"/v1/artifacts/{result['video_artifact_id']}"
    else:
        assert result["video_artifact_id"] is None and projection["video_url"] is None

    # proj.png is the stored w rendered with the model's constant noise; load_projection_w (what the
    # sampling routes call) returns that same w. ±1 grey level: the worker runs on one thread.
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        loaded = load_projection_w(session, make_storage(settings), created["id"], owner_key_for(KEY_A))
    assert np.array_equal(loaded, w)
    rendered = render_ws(G, torch.from_numpy(loaded))[0]
    assert np.abs(rendered.astype(int) - proj.astype(int)).max() <= 1
    # The sampling route renders the projection through the inference worker: the same picture.
    served = http.get(f"/v1/models/{model_id}/images/w/{created['id']}.png", headers=auth(KEY_A))
    assert served.status_code == 200, served.text
    assert np.abs(decode_png(served.content).astype(int) - proj.astype(int)).max() <= 1
    assert projection["render_url"] == f"/v1/models/{model_id}/images/w/{created['id']}.png"

    # Closer than where it started (w_avg rendered), measured independently of the worker.
    simple = SimpleFeatureDistance()
    w_avg, _ = w_stats(G, 10000, torch.device("cpu"), torch.zeros([1, 0]))
    start = render_ws(G, w_avg.expand(1, G.num_ws, G.w_dim).contiguous())[0]

    def dist(image: np.ndarray) -> float:
        def f(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).permute(2, 0, 1)[None].float()

        return float(simple(f(image), f(target)))

    d_start, d_proj = dist(start), dist(proj)
    print(f"{fixture} {space}: simple distance to target {d_start:.4f} at w_avg -> {d_proj:.4f} projected")
    # Measured: 0.85 -> 0.13 (SG2, w) and 0.024 -> 0.0003 (SG3, w+) in 40 steps; half is a wide margin.
    assert d_proj < 0.5 * d_start, (d_start, d_proj)
    assert result["distance"] == pytest.approx(d_proj, rel=0.05, abs=1e-3)


def test_projections_are_private_to_their_key(http: TestClient, settings: Settings, tmp_path: Path) -> None:
    model_id, G = register_fixture(settings, "sg2ada_uncond_32", owner_key_for(KEY_A), tmp_path)
    target = png_bytes(np.full((20, 30, 3), 128, np.uint8))
    form = {"steps": "2"}
    # Key B cannot project with key A's model...
    refused = http.post(
        f"/v1/models/{model_id}/projections",
        files={"image": ("t.png", target)},
        data=form,
        headers=auth(KEY_B),
    )
    assert refused.status_code == 404 and refused.headers["content-type"] == "application/problem+json"
    created = http.post(
        f"/v1/models/{model_id}/projections",
        files={"image": ("t.png", target)},
        data=form,
        headers=auth(KEY_A),
    )
    assert created.status_code == 202, created.text
    pid = created.json()["id"]
    # ...nor see A's projection, its job or its w.
    assert http.get(f"/v1/projections/{pid}", headers=auth(KEY_B)).status_code == 404
    assert http.get(f"/v1/jobs/{pid}", headers=auth(KEY_B)).status_code == 404
    done = wait_for(http, f"/v1/projections/{pid}", finished, KEY_A)
    assert done["state"] == "succeeded", done
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        from api.errors import NotFound

        with pytest.raises(NotFound):
            load_projection_w(session, make_storage(settings), pid, owner_key_for(KEY_B))
        assert load_projection_w(session, make_storage(settings), pid, owner_key_for(KEY_A)).shape == (
            1,
            G.num_ws,
            G.w_dim,
        )
    # A job id that is not a projection is not a projection.
    probe = http.post("/v1/jobs", json={"kind": "probe"}, headers=auth(KEY_A)).json()
    assert http.get(f"/v1/projections/{probe['id']}", headers=auth(KEY_A)).status_code == 404


def test_a_walk_starts_from_a_projected_w(http: TestClient, settings: Settings, tmp_path: Path) -> None:
    model_id, G = register_fixture(settings, "sg2ada_uncond_32", owner_key_for(KEY_A), tmp_path)
    target = png_bytes(np.full((32, 32, 3), 90, np.uint8))
    created = http.post(
        f"/v1/models/{model_id}/projections",
        files={"image": ("t.png", target)},
        data={"steps": "2"},
        headers=auth(KEY_A),
    )
    assert created.status_code == 202, created.text
    pid = created.json()["id"]
    assert wait_for(http, f"/v1/projections/{pid}", finished, KEY_A)["state"] == "succeeded"
    videos = f"/v1/models/{model_id}/videos"
    body = {"seeds": [3], "frames": 5, "fps": 5, "format": "gif", "start_projection": pid}
    response = http.post(videos, json=body, headers=auth(KEY_A))
    assert response.status_code == 202, response.text
    job = wait_for(http, f"/v1/jobs/{response.json()['id']}", finished, KEY_A)
    assert job["state"] == "succeeded", job
    _, clip = read_artifact(settings, job["result"]["artifact_id"])
    frames = PIL.Image.open(io.BytesIO(clip))
    assert frames.n_frames == 5
    # The first frame is the projection's own image (GIF's palette aside), the last the seed's.
    first = np.asarray(frames.convert("RGB"), dtype=int)
    own = http.get(f"/v1/models/{model_id}/images/w/{pid}.png", headers=auth(KEY_A))
    assert own.status_code == 200
    reference = np.asarray(PIL.Image.open(io.BytesIO(own.content)).convert("RGB"), dtype=int)
    assert np.abs(first - reference).mean() < 8
    # Another key's projection does not exist; a z walk cannot start from a w.
    assert http.post(videos, json=body, headers=auth(KEY_B)).status_code == 404
    other = http.post(f"/v1/models/{model_id}/videos", json={**body, "space": "z"}, headers=auth(KEY_A))
    assert other.status_code == 422 and "start_projection" in other.json()["detail"]
