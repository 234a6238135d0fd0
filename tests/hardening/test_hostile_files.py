"""Hostile archives and images, bounded reports, bounded heavy work, the public demo, run folders.

- Zip entries with a bad CRC or a size that lies either way are rejected with a reason naming the entry
  (they were a 500); images that are bombs, truncated or huge are rejected by their header.
- A rejection report is bounded (first entries, names cut, the full count beside it) in the row, every
  listing and the 422, and its bytes count in the storage quota.
- Heavy work within requests holds one of STYLEGAN_HEAVY_MAX_CONCURRENT slots; past them, 503 with
  Retry-After, at once.
- With API keys on, the bundled demo model samples for every key, as it is listed for every key.
- A training job's run folders, a killed attempt's included, are gone once it succeeds.

Each test prints its figure (bytes, sizes, times).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.heavy import heavy_work_of
from tests.api.conftest import migrated_settings
from tests.api.test_datasets import png
from tests.api.test_training_validation import fixture_pickle, register_model
from worker import jobs
from worker.db.models import Checkpoint, Dataset, Job
from worker.db.session import make_engine, make_session_factory
from worker.demo_model import DEMO_SOURCE_PREFIX
from worker.settings import Settings
from worker.storage import make_storage
from worker.tasks.dataset_prepare import REPORT_MAX_CHARS, REPORT_MAX_ENTRIES, prepare_and_register
from worker.tasks.run import execute_job

KEY_A, KEY_B = "a" * 24, "b" * 24


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- zip entries whose data does not match their header ------------------------------------------------


def patched_zip(entries: dict[str, bytes], patch: Callable[[bytearray, dict[str, int]], None]) -> bytes:
    """A stored (uncompressed) zip of `entries`, then `patch(raw, offsets)` edits its bytes in place;
    `offsets` maps each name to its local header's offset."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    raw = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        offsets = {info.filename: info.header_offset for info in zf.infolist()}
    patch(raw, offsets)
    return bytes(raw)


def _central(raw: bytearray, name: str) -> int:
    """Offset of `name`'s central directory record."""
    at = raw.find(b"PK\x01\x02")
    while at != -1:
        n = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46 : at + 46 + n] == name.encode():
            return at
        at = raw.find(b"PK\x01\x02", at + 4)
    raise AssertionError(name)


def bad_crc(raw: bytearray, offsets: dict[str, int]) -> None:
    at = offsets["crc.png"]
    raw[at + 30 + len("crc.png") + 100] ^= 0xFF  # one byte of the data: the CRC no longer matches


def short_declared_size(raw: bytearray, offsets: dict[str, int]) -> None:
    central = _central(raw, "short.png")
    size = struct.unpack_from("<I", raw, central + 24)[0]
    struct.pack_into("<I", raw, central + 24, size // 2)  # declares half of what is there
    struct.pack_into("<I", raw, offsets["short.png"] + 22, size // 2)


def long_declared_size(raw: bytearray, offsets: dict[str, int]) -> None:
    central = _central(raw, "long.png")
    size = struct.unpack_from("<I", raw, central + 24)[0]
    for at in (central + 20, central + 24, offsets["long.png"] + 18, offsets["long.png"] + 22):
        struct.pack_into("<I", raw, at, size * 2)  # declares twice what is there


@pytest.mark.parametrize(
    ("name", "patch", "expected"),
    [
        ("crc.png", bad_crc, "CRC"),
        ("short.png", short_declared_size, ""),
        ("long.png", long_declared_size, ""),
    ],
)
def test_a_damaged_zip_entry_is_rejected_by_name(
    make_client: Callable[..., TestClient], name: str, patch: Callable[..., None], expected: str
) -> None:
    client = make_client()
    entries = {f"good{i}.png": png(seed=i) for i in range(3)} | {name: png(seed=9)}
    upload = patched_zip(entries, patch)
    started = time.perf_counter()
    response = client.post("/v1/datasets", files={"file": ("set.zip", upload, "application/zip")})
    print(
        f"{name}: {response.status_code} in {(time.perf_counter() - started) * 1000:.0f} ms: {response.text[:300]}"
    )
    assert response.status_code in (201, 422), response.text
    body = response.json()
    rejected = {r["name"]: r for r in body["rejected"]}
    if response.status_code == 201:
        assert body["image_count"] == 3
        assert rejected[name]["reason"] == "damaged archive entry"
        assert expected in rejected[name]["detail"]
    else:  # the archive's own directory no longer adds up: the whole file is refused, naming the field
        assert body["detail"].startswith("form field file")


def test_an_archive_of_damaged_entries_only_is_a_422_naming_them(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    upload = patched_zip({"crc.png": png(seed=1)}, bad_crc)
    response = client.post("/v1/datasets", files={"file": ("set.zip", upload, "application/zip")})
    print(response.status_code, response.text[:300])
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["rejected"][0]["name"] == "crc.png"
    assert response.json()["rejected_count"] == 1


def _png_header(width: int, height: int) -> bytes:
    """A PNG declaring width x height RGB whose pixel data is a few bytes: a bomb by its header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_image_bombs_truncated_and_huge_images_are_rejected(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    full = png((64, 64), seed=3)
    entries = {
        "good.png": png(seed=1),
        "huge.png": _png_header(100_000, 100_000),  # 10^10 pixels declared in 33 bytes
        "wide.png": _png_header(60_000, 1_500),  # 90 Mpx: over the limit by its header alone
        "truncated.png": full[: len(full) // 2],
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    started = time.perf_counter()
    response = client.post("/v1/datasets", files={"file": ("set.zip", buf.getvalue(), "application/zip")})
    seconds = time.perf_counter() - started
    print(f"image bombs: {response.status_code} in {seconds * 1000:.0f} ms: {response.json()['rejected']}")
    assert response.status_code == 201, response.text
    reasons = {r["name"]: r["reason"] for r in response.json()["rejected"]}
    assert reasons == {
        "huge.png": "decompression bomb",
        "wide.png": "decompression bomb",
        "truncated.png": "truncated",
    }
    assert seconds < 10


# -- bounded rejection reports -------------------------------------------------------------------------


def test_the_rejection_report_is_bounded_and_counted_in_the_quota(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(api_keys=(KEY_A,), quota_max_storage_bytes=10**9)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(4):
            zf.writestr(f"img{i}.png", png(seed=i))
        for i in range(450):  # the attack: 450 rejected files with 64 KB names
            zf.writestr(f"{i:04d}" + "x" * (64 * 1024 - 10) + ".txt", b"not an image")
    response = client.post(
        "/v1/datasets", files={"file": ("set.zip", buf.getvalue(), "application/zip")}, headers=auth(KEY_A)
    )
    assert response.status_code == 201, response.text[:300]
    body = response.json()
    listing = client.get("/v1/datasets", headers=auth(KEY_A))
    print(
        f"450 rejections with 64 KB names: POST answer {len(response.content)} bytes, "
        f"GET /v1/datasets {len(listing.content)} bytes (was 28 MB), size_bytes {body['size_bytes']}"
    )
    assert body["rejected_count"] == 450
    assert len(body["rejected"]) == REPORT_MAX_ENTRIES
    assert all(len(r["name"]) <= REPORT_MAX_CHARS for r in body["rejected"])
    assert len(listing.content) < 100_000 and listing.json()["items"][0]["rejected_count"] == 450
    # The stored report counts in the quota: size_bytes is the zip plus the report's JSON.
    sessions = client.app.state.session_factory  # type: ignore[attr-defined]
    with sessions() as session:
        row = session.get(Dataset, body["id"])
        assert row is not None
        zip_bytes = make_storage(client.app.state.settings).size(row.file_key)  # type: ignore[attr-defined]
        report = len(json.dumps(row.rejected).encode())
        assert row.size_bytes == zip_bytes + report and report > 0
        assert len(row.rejected) == REPORT_MAX_ENTRIES and row.rejected_count == 450


def test_a_report_with_nothing_usable_is_bounded_too(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(300):
            zf.writestr(f"{i:04d}" + "y" * 20_000 + ".txt", b"text")
    response = client.post("/v1/datasets", files={"file": ("set.zip", buf.getvalue(), "application/zip")})
    print(f"300 rejections, nothing usable: 422 of {len(response.content)} bytes")
    assert response.status_code == 422
    assert response.json()["rejected_count"] == 300 and len(response.json()["rejected"]) == REPORT_MAX_ENTRIES
    assert len(response.content) < 100_000


# -- heavy work within requests ---------------------------------------------------------------------------


def test_heavy_work_past_its_slots_is_a_503_with_retry_after(make_client: Callable[..., TestClient]) -> None:
    client = make_client(heavy_max_concurrent=1, heavy_retry_after_seconds=7)
    heavy = heavy_work_of(client.app)  # type: ignore[arg-type]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with heavy.slot("a test's own work"):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        upload = {"file": ("set.zip", png(), "image/png")}
        started = time.perf_counter()
        busy = [
            client.post("/v1/datasets", files=upload),
            client.post("/v1/models", files={"file": ("net.pkl", b"\x80\x04N.", "application/octet-stream")}),
        ]
        seconds = time.perf_counter() - started
    finally:
        release.set()
        holder.join()
    print(f"heavy work busy: {[r.status_code for r in busy]} in {seconds * 1000:.0f} ms")
    for response in busy:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "7"
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "STYLEGAN_HEAVY_MAX_CONCURRENT" in response.json()["detail"]
    # The slot is back: the same upload now goes through.
    assert client.post("/v1/datasets", files={"file": ("one.png", png(), "image/png")}).status_code == 201


# -- the public demo model ----------------------------------------------------------------------------------


def test_the_demo_model_samples_for_every_key(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(api_keys=(KEY_A, KEY_B))
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    sessions = client.app.state.session_factory  # type: ignore[attr-defined]
    model_id = register_model(settings, sessions, fixture_pickle("sg2ada_uncond_32"))
    with sessions() as session:  # as ensure_demo_model registers it: no owner, a demo: source
        session.execute(
            sa.text("UPDATE models SET source = :s WHERE id = :id"),
            {"s": f"{DEMO_SOURCE_PREFIX}x", "id": model_id},
        )
        session.commit()
    for key in (KEY_A, KEY_B):
        listed = [m["id"] for m in client.get("/v1/models", headers=auth(key)).json()["items"]]
        assert model_id in listed
        response = client.get(f"/v1/models/{model_id}/images/1.png", headers=auth(key))
        print(f"demo sampled with key {key[0]}: {response.status_code} {response.text[:120]}")
        # No inference worker runs here: a 503 saying so means the model was found (it was a 404).
        assert response.status_code in (200, 503), response.text
        assert response.status_code != 404
        if response.status_code == 503:
            assert "worker" in response.json()["detail"]


# -- training run folders ------------------------------------------------------------------------------------


def _run_first_attempt(settings_json: str, job_id: str) -> None:
    """Child process: attempt 1 of the training job (killed by the test once it has a checkpoint)."""
    settings = Settings.model_validate_json(settings_json)
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    execute_job(settings, sessions, job_id, "doomed-worker")


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_a_killed_attempts_run_folder_is_gone_after_success(tmp_path: Path) -> None:
    settings = migrated_settings(
        tmp_path / "data", job_lease_seconds=2.0, heartbeat_seconds=0.5, broker_url="redis://127.0.0.1:9/0"
    )
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    model_id = register_model(settings, sessions, fixture_pickle("sg2ada_uncond_32"))
    source = tmp_path / "faces.zip"
    with zipfile.ZipFile(source, "w") as zf:
        for i in range(8):
            zf.writestr(f"{i}.png", png((32, 32), seed=i))
    with sessions() as session:
        dataset, _ = prepare_and_register(
            settings, session, make_storage(settings), source, name="faces", resolution=32,
            transform="center-crop", labels=None, owner_key=None,
        )  # fmt: skip
        params = {
            "dataset_id": dataset.id, "base_model_id": model_id, "kimg": 0.04,
            "batch": 4, "tick": 0.004, "cbase": 1024, "cmax": 64, "preview_images": 4, "snap": 1,
        }  # fmt: skip
        job, _ = jobs.submit_job(session, kind="training", params=params)
    job_dir = tmp_path / "data" / "training" / job.id

    child = multiprocessing.get_context("spawn").Process(
        target=_run_first_attempt, args=(settings.model_dump_json(), job.id)
    )
    child.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sessions() as session:
            if session.scalar(
                sa.select(sa.func.count()).select_from(Checkpoint).where(Checkpoint.job_id == job.id)
            ):
                break
        assert child.is_alive(), "the first attempt ended before its first checkpoint"
        time.sleep(0.2)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    left = _folder_bytes(job_dir / "attempt-1")
    assert (job_dir / "attempt-1").is_dir()

    time.sleep(settings.job_lease_seconds + 0.5)
    with sessions() as session:
        assert jobs.reconcile_expired_leases(session) == [job.id]
    assert execute_job(settings, sessions, job.id, "second-worker") == "succeeded"
    with sessions() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.attempts == 2
    print(
        f"killed attempt left {left} bytes in {job_dir.name}/attempt-1; after success: exists={job_dir.exists()}"
    )
    assert not job_dir.exists()
