"""POST /v1/datasets prepared within the request (the embedded default's SQLite; no broker needed):
hostile zips are judged file by file, images sent as repeated fields, defaults, thumbnails, ownership,
delete refused while a training job uses the set."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import Callable

import numpy as np
import PIL.Image
import pytest
from fastapi.testclient import TestClient

from worker import jobs
from worker.db.models import Dataset

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


def png(size: tuple[int, int] = (40, 40), seed: int = 0) -> bytes:
    """A solid-colour RGB PNG (width, height): colours differ by seed, so thumbnails can be matched."""
    colour = np.random.RandomState(seed).randint(0, 256, 3).astype(np.uint8)
    image = np.broadcast_to(colour, (size[1], size[0], 3)).copy()
    buf = io.BytesIO()
    PIL.Image.fromarray(image).save(buf, format="png")
    return buf.getvalue()


def hostile_zip(good: int = 5) -> tuple[bytes, set[tuple[str, str]]]:
    """A zip of `good` images plus one entry of each kind the preparation must refuse, and the
    (name, reason) pairs it must report."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(good):
            zf.writestr(f"photos/img{i}.png", png(seed=i))
        zf.writestr("notes.txt", b"not an image at all\n")
        whole = png((64, 64), seed=99)
        # Noise does not compress, so cutting the file short cuts into the image data.
        noise = np.random.RandomState(1).randint(0, 256, (64, 64, 3)).astype(np.uint8)
        noisy = io.BytesIO()
        PIL.Image.fromarray(noise).save(noisy, format="png")
        zf.writestr("truncated.png", noisy.getvalue()[: len(noisy.getvalue()) // 2])
        zf.writestr(zipfile.ZipInfo("../evil.png"), whole)
        zf.writestr(zipfile.ZipInfo("/etc/absolute.png"), whole)
        link = zipfile.ZipInfo("link.png")
        link.create_system = 3  # Unix, so the mode bits below mean what they say
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("bomb.png", b"\0" * (8 * 1024 * 1024))  # deflates ~1000:1
    expected = {
        ("notes.txt", "not an image"),
        ("truncated.png", "truncated"),
        ("../evil.png", "unsafe path"),
        ("/etc/absolute.png", "unsafe path"),
        ("link.png", "symlink"),
        ("bomb.png", "compression ratio"),
    }
    return buf.getvalue(), expected


def test_hostile_zip_is_accepted_with_exactly_its_rejections(client: TestClient) -> None:
    data, expected = hostile_zip(good=5)
    response = client.post("/v1/datasets", files={"file": ("mixed.zip", data, "application/zip")})
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"
    assert body["image_count"] == 5
    assert {(r["name"], r["reason"]) for r in body["rejected"]} == expected
    assert len(body["rejected"]) == len(expected)
    # 40 px images: the largest power of two not above the median side, never below 32.
    assert body["resolution"] == 32 and body["name"] == "mixed"
    assert body["has_labels"] is False and body["num_classes"] is None
    assert len(body["thumbnails"]) == 5

    # Thumbnails are the prepared images: the right size, and the colours of the good files in order.
    colours = []
    for url in body["thumbnails"]:
        thumb = client.get(url)
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
        image = np.asarray(PIL.Image.open(io.BytesIO(thumb.content)))
        assert image.shape == (32, 32, 3)
        colours.append(tuple(image[16, 16]))
    sent = [tuple(np.random.RandomState(i).randint(0, 256, 3)) for i in range(5)]
    assert colours == sent
    assert client.get(f"/v1/datasets/{body['id']}/thumbnails/5.png").status_code == 404

    assert client.get(f"/v1/datasets/{body['id']}").json() == body
    listing = client.get("/v1/datasets").json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == body["id"]


def test_images_as_repeated_fields_with_labels_and_a_hostile_name(client: TestClient) -> None:
    files = [
        ("file", ("a.png", png((64, 48), 1), "image/png")),
        ("file", ("b.png", png((64, 64), 2), "image/png")),
        ("file", ("c.png", png((80, 64), 3), "image/png")),
        ("file", ("readme.md", b"# hello", "text/markdown")),
        ("file", ("../up.png", png((64, 64), 4), "image/png")),
    ]
    labels = json.dumps({"a.png": 0, "b.png": 2, "c.png": 1})
    response = client.post(
        "/v1/datasets", files=files, data={"labels": labels, "transform": "pad", "name": "three"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "three" and body["image_count"] == 3
    assert body["has_labels"] is True and body["num_classes"] == 3
    # A file name is kept as sent, so one that climbs out of its folder is refused, never written.
    assert {(r["name"], r["reason"]) for r in body["rejected"]} == {
        ("readme.md", "not an image"),
        ("../up.png", "unsafe path"),
    }
    assert body["resolution"] == 64  # shorter sides 48, 64, 64 (the refused file is not counted)
    thumb = PIL.Image.open(io.BytesIO(client.get(body["thumbnails"][0]).content))
    assert thumb.size == (body["resolution"], body["resolution"])


def test_explicit_resolution_and_bad_form_fields(client: TestClient) -> None:
    one = {"file": ("one.png", png((64, 64)), "image/png")}
    ok = client.post("/v1/datasets", files=one, data={"resolution": "64"})
    assert ok.status_code == 201 and ok.json()["resolution"] == 64 and ok.json()["image_count"] == 1
    for fields, named in (
        ({"resolution": "48"}, "resolution"),
        ({"resolution": "4096"}, "resolution"),
        ({"transform": "stretch"}, "transform"),
        ({"labels": "{not json"}, "labels"),
        ({"labels": "[1, 2]"}, "labels"),
        ({"webhook_url": "http://127.0.0.1:9/hook"}, "webhook_url"),  # loopback: the SSRF policy
    ):
        bad = client.post("/v1/datasets", files=one, data=fields)
        assert bad.status_code == 422, (fields, bad.text)
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert named in bad.json()["detail"]
    missing = client.post("/v1/datasets", data={"name": "x"})
    assert missing.status_code == 422 and "file" in missing.json()["detail"]


def test_nothing_usable_is_422_listing_every_rejection(client: TestClient) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", b"text")
        zf.writestr("../b.png", png())
        zf.writestr("tiny.png", png((8, 8)))
    response = client.post("/v1/datasets", files={"file": ("bad.zip", buf.getvalue(), "application/zip")})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "no usable images" in problem["detail"]
    assert {(r["name"], r["reason"]) for r in problem["rejected"]} == {
        ("a.txt", "not an image"),
        ("../b.png", "unsafe path"),
        ("tiny.png", "too small"),
    }
    assert client.get("/v1/datasets").json()["total"] == 0


def test_datasets_are_per_key_and_delete_waits_for_training(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=(KEY_A, KEY_B))
    a = {"Authorization": f"Bearer {KEY_A}"}
    b = {"Authorization": f"Bearer {KEY_B}"}
    data, _ = hostile_zip(good=2)
    created = client.post("/v1/datasets", files={"file": ("x.zip", data)}, headers=a).json()
    dataset_id = created["id"]
    assert client.get(f"/v1/datasets/{dataset_id}", headers=b).status_code == 404
    assert client.get(f"/v1/datasets/{dataset_id}/thumbnails/0.png", headers=b).status_code == 404
    assert client.get("/v1/datasets", headers=b).json()["total"] == 0
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=b).status_code == 404

    # A queued training job on it (written directly: this app has no broker) blocks the delete.
    sessions = client.app.state.session_factory  # type: ignore[attr-defined]
    with sessions() as session:
        job = jobs.create_job(
            session, kind="training", params={"dataset_id": dataset_id, "cfg": "stylegan2", "kimg": 1}
        )
    refused = client.delete(f"/v1/datasets/{dataset_id}", headers=a)
    assert refused.status_code == 409 and job.id in refused.json()["detail"]
    with sessions() as session:
        jobs.request_cancel(session, job.id)

    settings = client.app.state.settings  # type: ignore[attr-defined]
    with sessions() as session:
        key = session.get(Dataset, dataset_id).file_key  # type: ignore[union-attr]
    stored = settings.data_dir / "files" / key
    assert stored.is_file()
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=a).status_code == 204
    assert client.get(f"/v1/datasets/{dataset_id}", headers=a).status_code == 404
    assert not stored.exists()


@pytest.mark.parametrize("limit", [0])
def test_large_upload_becomes_a_job_and_a_dead_broker_is_503(
    make_client: Callable[..., TestClient], limit: int
) -> None:
    client = make_client(dataset_inline_max_bytes=limit, broker_timeout_seconds=0.5)
    response = client.post("/v1/datasets", files={"file": ("one.png", png(), "image/png")})
    # The test app's broker is unreachable: the job is written, then marked failed, and the answer says so.
    assert response.status_code == 503, response.text
    assert "broker" in response.json()["detail"]
    failed = client.get("/v1/jobs", params={"kind": "dataset_prepare"}).json()["items"]
    assert len(failed) == 1 and failed[0]["state"] == "failed"


def test_a_dotzip_that_is_not_a_zip_says_so(client: TestClient) -> None:
    real = io.BytesIO()
    with zipfile.ZipFile(real, "w") as zf:
        zf.writestr("a.png", png())
    for name, content in (
        ("faces.zip", b"this is a text file, renamed\n"),
        ("FACES.ZIP", png()),  # an image renamed: still not a zip
        ("cut.zip", real.getvalue()[:-30]),  # truncated: the zip directory is gone
        ("upload.bin", real.getvalue()[:-30]),  # starts like a zip, whatever its name
    ):
        response = client.post("/v1/datasets", files={"file": (name, content, "application/zip")})
        assert response.status_code == 422, (name, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["type"] == "/problems/not-a-zip-archive"
        assert f"form field file: {name!r} is not a zip archive" in problem["detail"]
    mixed = client.post(
        "/v1/datasets",
        files=[
            ("file", ("a.png", png(), "image/png")),
            ("file", ("more.zip", real.getvalue(), "application/zip")),
        ],
    )
    assert mixed.status_code == 422 and "'more.zip' is a .zip among 2 files" in mixed.json()["detail"]
    assert client.get("/v1/datasets").json()["total"] == 0
    ok = client.post("/v1/datasets", files={"file": ("faces.zip", real.getvalue(), "application/zip")})
    assert ok.status_code == 201, ok.text
