"""POST /v1/models/{id}/projections refuses bad requests before anything is stored or queued.

No broker is needed: every request here is refused first (the app's broker URL is unreachable on
purpose, so a request that got through would show as 503)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from fastapi.testclient import TestClient

from gan.config import GeneratorConfig, MappingConfig, StyleGAN2SynthesisConfig
from gan.generator import Generator
from gan.io.checkpoint import save_generator
from worker.db.models import Job, Model
from worker.db.session import make_engine, make_session_factory
from worker.settings import Settings
from worker.storage import make_storage


def register_tiny_model(settings: Settings, owner_key: str | None, c_dim: int = 0) -> str:
    """A 16 px StyleGAN2 generator stored in our format with its Model row; returns the model id."""
    torch.manual_seed(0)
    config = GeneratorConfig(
        architecture="stylegan2",
        z_dim=16,
        w_dim=16,
        c_dim=c_dim,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=StyleGAN2SynthesisConfig(channel_base=128, channel_max=16),
    )
    G = Generator(config).eval()
    path = save_generator(G, settings.data_dir / f"tiny{c_dim}.safetensors")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    key = make_storage(settings).put_bytes(f"models/{digest}.safetensors", data)
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        model = Model(
            name="tiny", architecture="stylegan2", resolution=16, z_dim=16, w_dim=16, c_dim=c_dim,
            num_ws=G.num_ws, file_key=key, sha256=digest, size_bytes=len(data), format="ours",
            config=config.to_dict(), source="test", owner_key=owner_key,
        )  # fmt: skip
        session.add(model)
        session.commit()
        return model.id


def encode(array: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    PIL.Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


IMAGE = np.random.RandomState(1).randint(0, 256, (24, 20, 3), np.uint8)


@pytest.fixture
def client(make_client: Callable[..., TestClient], tmp_path: Path) -> TestClient:
    return make_client(
        data_dir=tmp_path / "data",
        projection_max_image_pixels=64 * 64,
        projection_max_image_bytes=20_000,
        projection_max_steps=50,
    )


@pytest.fixture
def model_id(client: TestClient) -> str:
    return register_tiny_model(client.app.state.settings, None)  # type: ignore[attr-defined]


def post(client: TestClient, model_id: str, image: bytes, **form: str) -> dict:
    response = client.post(
        f"/v1/models/{model_id}/projections", files={"image": ("target", image)}, data={"steps": "5", **form}
    )
    assert response.headers["content-type"] == "application/problem+json", response.text
    return {"status": response.status_code, **response.json()}


def nothing_stored(client: TestClient) -> bool:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    uploads = settings.data_dir / "files" / "uploads"
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        jobs = session.query(Job).count()
    return jobs == 0 and not (uploads.exists() and any(uploads.rglob("*.*")))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"this is not an image at all", "not a readable PNG, JPEG or WebP"),
        (b"", "empty"),
        (encode(IMAGE, "PNG")[:200], "not a readable"),  # truncated
        (encode(IMAGE, "GIF"), "must be PNG, JPEG or WebP, got GIF"),
        (encode(np.zeros((65, 64, 3), np.uint8), "PNG"), "64x65 is more than 4096 pixels"),
    ],
    ids=["bytes", "empty", "truncated", "gif", "too-many-pixels"],
)
def test_bad_images_are_422_naming_image(
    client: TestClient, model_id: str, image: bytes, message: str
) -> None:
    problem = post(client, model_id, image)
    assert problem["status"] == 422 and problem["detail"].startswith("image:"), problem
    assert message in problem["detail"], problem
    assert nothing_stored(client)


def test_oversized_image_is_413(client: TestClient, model_id: str) -> None:
    noise = np.random.RandomState(2).randint(0, 256, (60, 60, 3), np.uint8)  # ~10 kB as PNG... twice
    big = encode(noise, "PNG") + b"\0" * 20_000
    problem = post(client, model_id, big)
    assert problem["status"] == 413 and "image: more than 20000 bytes" in problem["detail"]
    assert nothing_stored(client)


def test_bad_fields_name_the_field(client: TestClient, model_id: str) -> None:
    png = encode(IMAGE, "PNG")
    for form, field in [
        ({"space": "z"}, "body space"),
        ({"steps": "0"}, "body steps"),
        ({"steps": "51"}, "body steps"),
        ({"seed": "-1"}, "body seed"),
        ({"class_idx": "1"}, "body class_idx"),
    ]:
        problem = post(client, model_id, png, **form)
        assert problem["status"] == 422 and field in problem["detail"], (form, problem)
    missing = client.post(f"/v1/models/{model_id}/projections", data={"steps": "3"})
    assert missing.status_code == 422 and "body image: field required" in missing.json()["detail"]
    assert nothing_stored(client)


def test_unknown_model_is_404(client: TestClient) -> None:
    problem = post(client, "no-such-model", encode(IMAGE, "PNG"))
    assert problem["status"] == 404 and "no-such-model" in problem["detail"]
    assert client.get("/v1/projections/no-such-projection").status_code == 404


def test_conditional_model_needs_a_class(client: TestClient) -> None:
    model_id = register_tiny_model(client.app.state.settings, None, c_dim=3)  # type: ignore[attr-defined]
    for form, message in [({}, "conditional"), ({"class_idx": "3"}, "below 3")]:
        problem = post(client, model_id, encode(IMAGE, "PNG"), **form)
        assert problem["status"] == 422 and problem["detail"].startswith("body class_idx:"), problem
        assert message in problem["detail"]


def test_a_valid_request_gets_as_far_as_the_broker(client: TestClient, model_id: str) -> None:
    # The unreachable broker makes this a 503 after the job row and the upload were written: proof
    # that a JPEG within the limits passes every check above.
    problem = post(client, model_id, encode(IMAGE, "JPEG"), steps="5", space="w+")
    assert problem["status"] == 503, problem
    settings = client.app.state.settings  # type: ignore[attr-defined]
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        (job,) = session.query(Job).all()
        assert job.kind == "projection" and job.state == "failed"
        assert job.params["space"] == "w+" and job.params["steps"] == 5
        assert job.params["image_key"].endswith(".jpg")
        assert make_storage(settings).exists(job.params["image_key"])
