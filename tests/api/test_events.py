"""GET /v1/jobs/{id}/events on the embedded default's SQLite: the stream is the job_events rows (state
events written by every transition, others appended), resumable, kept alive, closed at the end, and
visible only to the job's key. The job moves through worker.jobs directly: no worker is needed to test
the stream itself (the training tests read it from a real worker)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from worker import jobs
from worker.events import append_event

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


def parse_sse(text: str) -> tuple[list[dict[str, Any]], int]:
    """SSE frames -> [{id, event, data}] and the number of keep-alive comments."""
    events: list[dict[str, Any]] = []
    comments = 0
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        fields: dict[str, Any] = {}
        for line in frame.split("\n"):
            if line.startswith(":"):
                comments += 1
            elif line.startswith(("id: ", "event: ", "data: ")):
                name, _, value = line.partition(": ")
                fields[name] = value
        if "event" in fields:
            events.append(
                {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
            )
    return events, comments


def _finished_job(client: TestClient, owner_key: str | None = None) -> str:
    """A job that ran (claimed, two progress events, succeeded), written through worker.jobs."""
    sessions = client.app.state.session_factory  # type: ignore[attr-defined]
    with sessions() as session:
        job = jobs.create_job(session, kind="probe", params={}, owner_key=owner_key)
        claimed = jobs.claim(session, job.id, "w/1/a", 30)
        assert claimed is not None
        append_event(session, job.id, "progress", {"fraction": 0.5})
        append_event(session, job.id, "progress", {"fraction": 1.0, "loss": float("nan")})
        jobs.complete(session, job.id, "w/1/a", {"ok": True})
        return job.id


def test_stream_replays_every_event_then_closes(client: TestClient) -> None:
    job_id = _finished_job(client)
    response = client.get(f"/v1/jobs/{job_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events, _ = parse_sse(response.text)
    assert [(e["event"], e["data"].get("state", e["data"].get("fraction"))) for e in events] == [
        ("state", "running"),
        ("progress", 0.5),
        ("progress", 1.0),
        ("state", "succeeded"),
    ]
    assert events[2]["data"]["loss"] is None  # NaN is not JSON; it is sent as null
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 4


def test_last_event_id_and_after_return_only_later_events(client: TestClient) -> None:
    job_id = _finished_job(client)
    events, _ = parse_sse(client.get(f"/v1/jobs/{job_id}/events").text)
    second = events[1]["id"]
    resumed, _ = parse_sse(
        client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(second)}).text
    )
    assert resumed == events[2:]
    by_query, _ = parse_sse(client.get(f"/v1/jobs/{job_id}/events", params={"after": second}).text)
    assert by_query == events[2:]
    # Resuming after the terminal event: nothing left, and the stream closes at once.
    started = time.monotonic()
    tail, _ = parse_sse(
        client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(events[-1]["id"])}).text
    )
    assert tail == [] and time.monotonic() - started < 5
    bad = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]


def test_live_stream_sees_events_written_later_with_keepalives(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(events_poll_seconds=0.05, events_keepalive_seconds=0.2)
    sessions = client.app.state.session_factory  # type: ignore[attr-defined]
    with sessions() as session:
        job = jobs.create_job(session, kind="probe", params={})

    def run_job_slowly() -> None:
        time.sleep(0.5)
        with sessions() as session:
            jobs.claim(session, job.id, "w/1/b", 30)
            time.sleep(0.6)  # idle: keep-alives go out
            append_event(session, job.id, "progress", {"fraction": 0.5})
            time.sleep(0.2)
            jobs.complete(session, job.id, "w/1/b", {})

    writer = threading.Thread(target=run_job_slowly)
    writer.start()
    try:
        with client.stream("GET", f"/v1/jobs/{job.id}/events") as response:
            text = "".join(response.iter_text())
    finally:
        writer.join()
    events, keepalives = parse_sse(text)
    assert [e["event"] for e in events] == ["state", "progress", "state"]
    assert events[-1]["data"]["state"] == "succeeded"
    assert keepalives >= 2


def test_events_of_another_keys_job_are_404(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=(KEY_A, KEY_B))
    from api.deps import owner_key_for

    job_id = _finished_job(client, owner_key=owner_key_for(KEY_A))
    mine = client.get(f"/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {KEY_A}"})
    assert mine.status_code == 200 and len(parse_sse(mine.text)[0]) == 4
    theirs = client.get(f"/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {KEY_B}"})
    assert theirs.status_code == 404
    assert client.get("/v1/jobs/nope/events", headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 404
