"""DNS rebinding: a name that resolves to an allowed address when it is checked and to a private one
when the connection is made must still be reached at the checked address (worker/net.py `pinned`).

The test plays both sides on loopback: 127.0.0.2 stands for "a public address" (the check is told so),
and a second server on 127.0.0.1, same port, stands for the private service behind the firewall. The
resolver answers 127.0.0.2 the first time a name is looked up and 127.0.0.1 every time after. Without
pinning, the HTTP client's own lookup lands on the private server; with it, the private server is
never asked. Both outgoing paths are covered: URL model imports and webhook deliveries.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.quiet_http import QuietLog
from worker import jobs, net
from worker.db.migrate import upgrade_head
from worker.db.models import WebhookDelivery
from worker.db.session import make_engine, make_session_factory
from worker.settings import Settings
from worker.tasks.model_import import download
from worker.webhooks import deliver

NAME = "rebind.stylegan.test"
APPROVED, PRIVATE = "127.0.0.2", "127.0.0.1"


class Server:
    """Answers every GET and POST with its own name, and counts what it was asked."""

    def __init__(self, address: str, port: int, name: bytes) -> None:
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(QuietLog, http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.requests.append((self.command, self.headers.get("Host", "")))
                self.send_response(200)
                self.send_header("Content-Length", str(len(name)))
                self.end_headers()
                self.wfile.write(name)

            do_GET = do_POST = _answer

        self.httpd = http.server.ThreadingHTTPServer((address, port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Server, Server, int]]:
    with socket.socket() as probe:
        probe.bind((APPROVED, 0))
        port = probe.getsockname()[1]
    approved = Server(APPROVED, port, b"approved")
    private = Server(PRIVATE, port, b"private")
    lookups = {"count": 0}
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != NAME:
            return real_getaddrinfo(host, *args, **kwargs)
        lookups["count"] += 1
        address = APPROVED if lookups["count"] == 1 else PRIVATE
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    real_problem = net._address_problem

    def approved_is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        return None if str(address) == APPROVED else real_problem(address)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    monkeypatch.setattr(net, "_address_problem", approved_is_public)
    try:
        yield approved, private, port
    finally:
        approved.close()
        private.close()


def test_the_rebinding_resolver_really_rebinds(rebinding: tuple[Server, Server, int]) -> None:
    """The stage itself: a client that resolves again after the check reaches the private server."""
    approved, private, port = rebinding
    url = f"http://{NAME}:{port}/x"
    net.check_public_url(url, allow_private=False)  # first lookup: the approved address
    assert httpx.get(url, timeout=5).content == b"private"  # the client's own lookup: rebound


def test_a_url_import_downloads_from_the_checked_address(
    rebinding: tuple[Server, Server, int], tmp_path: Path
) -> None:
    approved, private, port = rebinding
    digest, size = download(
        f"http://{NAME}:{port}/network.pkl",
        tmp_path / "network.pkl",
        allow_private=False,
        max_bytes=1024,
        timeout_seconds=5,
        on_progress=lambda done, total: None,
    )
    assert (tmp_path / "network.pkl").read_bytes() == b"approved"
    assert approved.requests == [("GET", f"{NAME}:{port}")], "the Host header names the original host"
    assert private.requests == []
    print(f"URL import under rebinding: {size} bytes from the checked address, 0 requests to the private one")


def test_a_webhook_is_delivered_to_the_checked_address(
    rebinding: tuple[Server, Server, int], tmp_path: Path
) -> None:
    approved, private, port = rebinding
    settings = Settings(data_dir=tmp_path, allow_private_urls=False, webhook_timeout_seconds=5.0)
    upgrade_head(settings.effective_database_url)
    sessions: sessionmaker[Session] = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        job = jobs.create_job(session, kind="probe", params={}, webhook_url=f"http://{NAME}:{port}/hook")
        assert jobs.claim(session, job.id, "w1", 30) is not None
        jobs.complete(session, job.id, "w1", {})
        (row,) = session.query(WebhookDelivery).all()
        delivery_id = row.id
    assert deliver(settings, sessions, delivery_id, 0) == "delivered"
    assert approved.requests == [("POST", f"{NAME}:{port}")]
    assert private.requests == []
    print("webhook under rebinding: delivered to the checked address, 0 requests to the private one")
