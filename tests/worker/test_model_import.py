"""worker/model_import.py and the download of worker/tasks/model_import.py without HTTP API: the child
process's verdicts, the per-hop address check, the byte cap and the redirect limit, and the bundled demo
file lookup."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.quiet_http import QuietLog
from worker.catalog import BUNDLED_CATALOG, load_catalog
from worker.demo_model import bundled_demo_path
from worker.job_kinds import ModelImportParams
from worker.model_import import ImportLimits, ModelImportError, run_sandboxed_import
from worker.tasks.model_import import MAX_REDIRECTS, download

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official"
BODY = bytes(range(256)) * 64  # 16 KiB


class _Handler(QuietLog, BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path.startswith("/loop/"):  # /loop/N redirects to /loop/N+1 forever
            n = int(self.path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("Location", f"/loop/{n + 1}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/undeclared":  # no Content-Length: the cap must count the bytes themselves
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(BODY)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def fetch(url: str, dst: Path, *, allow_private: bool = True, max_bytes: int = 1 << 20) -> tuple[str, int]:
    seen: list[tuple[int, int | None]] = []
    result = download(
        url, dst, allow_private=allow_private, max_bytes=max_bytes, timeout_seconds=5,
        on_progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert seen and seen[-1][0] == result[1], "the last progress report is the whole file"
    return result


def test_download_checksums_and_sizes(server: str, tmp_path: Path) -> None:
    sha, size = fetch(f"{server}/file", tmp_path / "f")
    assert (sha, size) == (hashlib.sha256(BODY).hexdigest(), len(BODY))
    assert (tmp_path / "f").read_bytes() == BODY


def test_loopback_refused_before_connecting(server: str, tmp_path: Path) -> None:
    with pytest.raises(ModelImportError, match="loopback") as info:
        fetch(f"{server}/file", tmp_path / "f", allow_private=False)
    assert server.removeprefix("http://").split(":")[0] in str(info.value)
    assert not (tmp_path / "f").exists()


def test_byte_cap_declared_and_streamed(server: str, tmp_path: Path) -> None:
    with pytest.raises(ModelImportError, match="over the download limit"):
        fetch(f"{server}/file", tmp_path / "a", max_bytes=1000)
    with pytest.raises(ModelImportError, match="more than the download limit of 1000 bytes"):
        fetch(f"{server}/undeclared", tmp_path / "b", max_bytes=1000)


def test_redirect_loop_stops(server: str, tmp_path: Path) -> None:
    with pytest.raises(ModelImportError, match=f"redirects more than {MAX_REDIRECTS} times"):
        fetch(f"{server}/loop/0", tmp_path / "f")


def test_params_refuse_other_schemes_and_bad_checksums() -> None:
    with pytest.raises(ValueError, match="only http and https"):
        ModelImportParams(url="file:///etc/passwd")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        ModelImportParams(url="https://example.org/x.pkl", sha256="xyz")
    assert ModelImportParams(url="https://example.org/x.pkl", sha256="AB" * 32).sha256 == "ab" * 32


def test_sandbox_refusal_names_the_global(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    dst = tmp_path / "out.safetensors"
    with pytest.raises(ModelImportError, match="refused global 'posix.system'"):
        run_sandboxed_import(evil, dst, ImportLimits())
    assert not dst.exists()


def test_sandbox_converts_an_official_pickle(tmp_path: Path) -> None:
    pkl = sorted(FIXTURES.glob("sg*/network.pkl"))[0]
    dst = tmp_path / "out.safetensors"
    info = run_sandboxed_import(pkl, dst, ImportLimits(), source="test")
    assert dst.is_file() and info.format == "official-pkl" and info.source == "test"
    assert info.num_ws > 0 and info.num_params > 0 and info.config["img_resolution"] == info.resolution


def test_bundled_catalog_reads_and_demo_lookup(tmp_path: Path) -> None:
    entries = load_catalog(BUNDLED_CATALOG)
    assert len({e.name for e in entries}) == len(entries) > 20
    assert bundled_demo_path(tmp_path) is None
    (tmp_path / "b.safetensors").write_bytes(b"x")
    (tmp_path / "a.safetensors").write_bytes(b"x")
    assert bundled_demo_path(tmp_path) == tmp_path / "a.safetensors"
