"""`/v1/models` and `/v1/catalog` on the embedded default's SQLite file, without a broker: uploads run
the real sandboxed import child; JSON imports are checked here only up to the point where they would be
queued (the job path runs in test_models_integration.py)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from gan.config import GeneratorConfig, MappingConfig, StyleGAN2SynthesisConfig
from gan.generator import build_generator
from gan.io.checkpoint import load_generator, save_generator
from tests.gan.io.hostile import Reduce, fake_modules, legacy_archive, module_state, persistent, reduce_pickle
from worker.db.models import Model
from worker.db.session import make_engine, make_session_factory
from worker.demo_model import ensure_demo_model
from worker.storage import make_storage

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official"
FIXTURE_PICKLES = sorted(FIXTURES.glob("*/network.pkl"))
KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}


def test_fixtures_exist() -> None:
    assert FIXTURE_PICKLES, f"no fixtures under {FIXTURES}: an empty glob must not pass silently"


def upload(client: TestClient, path: Path, headers: dict[str, str] | None = None, **fields: str) -> Any:
    with path.open("rb") as fh:
        return client.post("/v1/models", files={"file": (path.name, fh)}, data=fields, headers=headers or {})


def leftovers(data_dir: Path) -> list[str]:
    """Files a refused upload must not leave: stored models and scratch files."""
    found = []
    for sub in ("files", "tmp"):
        root = data_dir / sub
        if root.exists():
            found += [str(p.relative_to(data_dir)) for p in root.rglob("*") if p.is_file()]
    return found


def expected_architecture(meta: dict[str, Any]) -> str:
    if meta["source_repo"] == "stylegan3":
        return "stylegan3-r" if meta["init_kwargs"]["use_radial_filters"] else "stylegan3-t"
    return "stylegan2"


@pytest.mark.parametrize("pkl", FIXTURE_PICKLES, ids=lambda p: p.parent.name)
def test_official_fixture_uploads_once(
    make_client: Callable[..., TestClient], tmp_path: Path, pkl: Path
) -> None:
    data_dir = tmp_path / "data"
    client = make_client(data_dir=data_dir)
    meta = json.loads((pkl.parent / "meta.json").read_text())
    kwargs = meta["init_kwargs"]

    response = upload(client, pkl)
    assert response.status_code == 201, response.text
    model = response.json()
    assert response.headers["location"] == f"/v1/models/{model['id']}"
    assert model["architecture"] == expected_architecture(meta)
    assert model["resolution"] == kwargs["img_resolution"]
    assert (model["z_dim"], model["w_dim"], model["c_dim"]) == (
        kwargs["z_dim"],
        kwargs["w_dim"],
        kwargs["c_dim"],
    )
    assert model["format"] == ("tf-pkl" if "tensorflow" in meta.get("format", "") else "official-pkl")
    assert model["sha256"] == hashlib.sha256(pkl.read_bytes()).hexdigest()
    assert "NVIDIA Source Code License" in model["license_note"] and "non-commercial" in model["license_note"]
    assert model["source"] == "upload:network.pkl" and model["demo"] is False
    assert model["links"]["image"] == f"/v1/models/{model['id']}/images/0.png"

    # Stored once, in our format, with the same generator config and the licence note inside the file.
    stored = data_dir / "files" / "models" / f"{model['sha256']}.safetensors"
    G = load_generator(stored)
    with client.app.state.session_factory() as session:
        assert G.config.to_dict() == session.get(Model, model["id"]).config
    assert G.num_ws == model["num_ws"]
    assert sum(p.numel() for p in G.parameters()) == model["num_params"]
    assert model["size_bytes"] == stored.stat().st_size

    again = upload(client, pkl, name="another name")
    assert again.status_code == 200 and again.json() == model
    listing = client.get("/v1/models").json()
    assert listing["total"] == 1 and [m["id"] for m in listing["items"]] == [model["id"]]
    assert client.get(f"/v1/models/{model['id']}").json() == model
    assert leftovers(data_dir) == [f"files/models/{model['sha256']}.safetensors"]


# --- hostile and broken files ----------------------------------------------------------------------------


def _system(canary: Path) -> bytes:
    return reduce_pickle("posix", "system", (f"touch {shlex.quote(str(canary))}",), 2)


def _eval(canary: Path) -> bytes:
    return reduce_pickle("builtins", "eval", (f"open({str(canary)!r}, 'w').close()",), 4)


def _nested_archive(canary: Path) -> bytes:
    archive = legacy_archive(_system(canary), ["0"], b"")
    storage = Reduce(torch.storage._load_from_bytes, archive)
    return pickle.dumps(Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (0,), (1,), False, {}), 4)


def _deep_inside_valid_file(canary: Path) -> bytes:
    with fake_modules() as mods:
        evil = Reduce(eval, f"open({str(canary)!r}, 'w').close()")
        state = module_state({"weight": torch.zeros(2, 2)}, evil_attribute=evil)
        return pickle.dumps({"G_ema": persistent(mods, "FullyConnectedLayer", state)}, protocol=3)


HOSTILE = {
    "os-system-reduce": (_system, "posix.system"),
    "builtins-eval": (_eval, "builtins.eval"),
    "nested-torch-archive": (_nested_archive, "posix.system"),
    "eval-deep-inside-a-network": (_deep_inside_valid_file, "builtins.eval"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pickle_is_422_and_leaves_nothing(
    make_client: Callable[..., TestClient], tmp_path: Path, name: str
) -> None:
    data_dir = tmp_path / "data"
    client = make_client(data_dir=data_dir)
    canary = tmp_path / "canary"
    build, refused_global = HOSTILE[name]
    evil = tmp_path / f"{name}.pkl"
    evil.write_bytes(build(canary))

    response = upload(client, evil)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    assert detail.startswith("body file: ") and f"refused global '{refused_global}'" in detail
    assert not canary.exists()
    assert client.get("/v1/models").json()["total"] == 0
    assert leftovers(data_dir) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (os.urandom(4096), "not a network file we read"),
        (b"\x80\x04\x95" + os.urandom(64), ""),  # looks like a pickle, is garbage
    ],
    ids=["random-bytes", "truncated-pickle"],
)
def test_malformed_file_is_422(
    make_client: Callable[..., TestClient], tmp_path: Path, content: bytes, reason: str
) -> None:
    data_dir = tmp_path / "data"
    client = make_client(data_dir=data_dir)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(content)
    response = upload(client, bad)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("body file: ") and reason in response.json()["detail"]
    assert leftovers(data_dir) == [] and client.get("/v1/models").json()["total"] == 0


def test_oversized_upload_is_413_and_leaves_nothing(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    pkl = FIXTURE_PICKLES[0]
    client = make_client(data_dir=data_dir, max_upload_bytes=pkl.stat().st_size // 2)
    response = upload(client, pkl)
    assert response.status_code == 413, response.text
    assert "limit" in response.json()["detail"]
    # The same cut-off for a streamed (chunked) body, which declares no length up front.
    body, content_type = _multipart_body(pkl)
    chunked = client.post(
        "/v1/models", content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
        headers={"Content-Type": content_type},
    )  # fmt: skip
    assert chunked.status_code == 413, chunked.text
    assert leftovers(data_dir) == [] and client.get("/v1/models").json()["total"] == 0


def _multipart_body(path: Path) -> tuple[bytes, str]:
    boundary = "testboundary7f3a"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return (
        head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def test_import_limits_say_which_was_hit(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    pkl = FIXTURE_PICKLES[0]
    # 256 MiB cannot even map torch's libraries (about 0.8 GB): the child fails its first allocation.
    small = make_client(data_dir=tmp_path / "d1", import_max_memory_bytes=256 * 1024**2)
    response = upload(small, pkl)
    assert response.status_code == 422 and "memory limit of 256 MiB" in response.json()["detail"]
    assert leftovers(tmp_path / "d1") == []

    slow = make_client(data_dir=tmp_path / "d2", import_timeout_seconds=0.2)
    response = upload(slow, pkl)
    assert response.status_code == 422 and "took longer than 0.2 s" in response.json()["detail"]
    assert leftovers(tmp_path / "d2") == []


def test_upload_fields_are_checked(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(data_dir=tmp_path / "data")
    missing = client.post("/v1/models", files={"name": (None, "x")})
    assert missing.status_code == 422 and missing.json()["detail"].startswith("body file: field required")
    unknown = client.post("/v1/models", files={"file": ("a.pkl", b"x"), "colour": (None, "red")})
    assert unknown.status_code == 422 and "body colour: unknown form field" in unknown.json()["detail"]
    wrong_type = client.post("/v1/models", content=b"abc", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and "text/plain" in wrong_type.json()["detail"]
    assert leftovers(tmp_path / "data") == []


def test_given_name_and_license_note_are_kept(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(data_dir=tmp_path / "data")
    response = upload(client, FIXTURE_PICKLES[0], name="my faces", license_note="CC-BY 4.0, trained by me")
    assert response.status_code == 201
    assert (
        response.json()["name"] == "my faces"
        and response.json()["license_note"] == "CC-BY 4.0, trained by me"
    )


# --- ours, ownership, the demo model -------------------------------------------------------------------


def tiny_generator_file(path: Path, *, license_note: str | None = None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = GeneratorConfig(
        z_dim=16,
        w_dim=16,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=StyleGAN2SynthesisConfig(channel_base=64, channel_max=16),
    )
    return save_generator(build_generator(config), path, license_note=license_note, source="tests")


def test_our_format_keeps_its_license_note(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(data_dir=tmp_path / "data")
    ours = tiny_generator_file(tmp_path / "tiny.safetensors", license_note="Apache-2.0 (test weights)")
    response = upload(client, ours)
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["format"] == "ours" and model["license_note"] == "Apache-2.0 (test weights)"
    assert (model["architecture"], model["resolution"], model["z_dim"], model["num_ws"]) == (
        "stylegan2",
        16,
        16,
        6,
    )
    assert model["name"] == "tiny"


def test_keys_see_only_their_own_models_and_share_files(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    client = make_client(data_dir=data_dir, api_keys=(KEY_A, KEY_B))
    ours = tiny_generator_file(tmp_path / "tiny.safetensors")
    assert client.post("/v1/models", files={"file": ("t", b"x")}).status_code == 401

    a = upload(client, ours, A).json()
    assert client.get(f"/v1/models/{a['id']}", headers=B).status_code == 404
    assert client.delete(f"/v1/models/{a['id']}", headers=B).status_code == 404
    assert client.get("/v1/models", headers=B).json()["total"] == 0

    b = upload(client, ours, B)
    assert b.status_code == 201 and b.json()["id"] != a["id"] and b.json()["sha256"] == a["sha256"]
    stored = data_dir / "files" / "models" / f"{a['sha256']}.safetensors"
    assert client.delete(f"/v1/models/{a['id']}", headers=A).status_code == 204
    assert client.get(f"/v1/models/{a['id']}", headers=A).status_code == 404
    assert stored.exists(), "B's model still uses the file"
    assert client.delete(f"/v1/models/{b.json()['id']}", headers=B).status_code == 204
    assert not stored.exists()


def test_demo_model_is_shared_idempotent_and_undeletable(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    client = make_client(data_dir=data_dir, api_keys=(KEY_A, KEY_B))
    settings = client.app.state.settings
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    demo_file = tiny_generator_file(tmp_path / "cartoon-faces.safetensors", license_note="Apache-2.0", seed=3)

    assert ensure_demo_model(sessions, make_storage(settings), None, scratch=tmp_path / "s") is None
    assert (
        ensure_demo_model(
            sessions, make_storage(settings), tmp_path / "absent.safetensors", scratch=tmp_path / "s"
        )
        is None
    )
    first = ensure_demo_model(sessions, make_storage(settings), demo_file, scratch=tmp_path / "s")
    assert first is not None
    second = ensure_demo_model(sessions, make_storage(settings), demo_file, scratch=tmp_path / "s")
    assert second is not None and second.id == first.id

    for headers in (A, B):
        listing = client.get("/v1/models", headers=headers).json()
        assert [m["id"] for m in listing["items"]] == [first.id] and listing["items"][0]["demo"] is True
    forbidden = client.delete(f"/v1/models/{first.id}", headers=A)
    assert forbidden.status_code == 403 and "demo" in forbidden.json()["detail"]
    assert client.get(f"/v1/models/{first.id}", headers=B).json()["license_note"] == "Apache-2.0"


# --- catalogue and JSON imports (refused before anything is queued) ---------------------------------------


def test_catalog_lists_official_networks(client: TestClient) -> None:
    response = client.get("/v1/catalog")
    assert response.status_code == 200
    items = response.json()["items"]
    names = {item["name"] for item in items}
    assert {
        "stylegan2-ada-ffhq",
        "stylegan2-ada-cifar10",
        "stylegan3-r-afhqv2-512x512",
        "stylegan3-t-ffhq-1024x1024",
    } <= names
    for item in items:
        assert item["url"].startswith("https://") and item["url"].endswith(".pkl")
        assert item["architecture"] in {"stylegan2", "stylegan3-t", "stylegan3-r"}
        assert item["resolution"] in {32, 256, 512, 1024}
        if not item["name"].startswith("stylegan2-ada-"):  # NGC names carry the resolution
            assert f"{item['resolution']}x{item['resolution']}" in item["url"]
        assert item["sha256"] is None, "NVIDIA publishes no checksums; the catalogue must not invent one"
        assert item["commercial_use"] is False and "NVIDIA" in item["license"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"url": "http://127.0.0.1:9/net.pkl"}, "url", "loopback"),
        ({"url": "http://10.1.2.3/net.pkl"}, "url", "private"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url", "link-local"),
        ({"url": "ftp://example.org/net.pkl"}, "url", "http"),
        ({"catalog": "no-such-network"}, "catalog", "no catalogue entry"),
        ({"catalog": "stylegan2-ada-ffhq", "url": "https://example.org/x.pkl"}, "body", "exactly one"),
        ({"url": "https://example.org/x.pkl", "sha256": "abc"}, "sha256", "64 hexadecimal"),
        ({"url": "https://example.org/x.pkl", "extra": 1}, "extra", "Extra inputs"),
    ],
    ids=["loopback", "private", "metadata", "ftp", "unknown-catalog", "both", "bad-sha", "extra"],
)
def test_json_import_is_checked_before_queueing(
    client: TestClient, body: dict[str, Any], field: str, words: str
) -> None:
    response = client.post("/v1/models", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"body {field}" in detail or (field == "body" and detail.startswith("body")), detail
    assert words in detail, detail
    assert client.get("/v1/jobs").json()["total"] == 0
