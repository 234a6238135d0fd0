"""The `model_import` job: download a network from a URL (or a catalogue entry), check it, import it.

The download streams to the data dir's scratch folder with a size cap, a sha256 computed on the way and
progress reported as bytes of total. Redirects are followed by hand, with the same public-address check
on every hop (worker/net.py), so a public URL cannot bounce the worker onto the service's own network. A
given or catalogued sha256 must match before the file is parsed at all; then the file takes the same
sandboxed import as an upload (worker/model_import.py) and is registered for the job's owner. A job run
twice (a lost worker) finds the owner's model by sha256 and returns it.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from worker.job_kinds import ModelImportParams
from worker.model_import import (
    ImportLimits,
    ModelImportError,
    default_name,
    register_model,
    scratch_dir,
    scratch_file,
)
from worker.net import UnsafeUrl, pinned
from worker.tasks.context import JobContext

# Browsers and curl stop at 20 and 50; an honest download (CDN -> signed storage URL) needs two or three.
MAX_REDIRECTS = 5
# Progress is written to the database at most this often: a fast local download must not turn into
# thousands of UPDATEs, and a slow one still moves visibly.
PROGRESS_INTERVAL_S = 0.5
# The download is this share of the job's progress; the sandboxed import is the rest.
DOWNLOAD_SHARE = 0.9
_CHUNK = 1024 * 1024


def url_filename(url: str) -> str:
    """The last path segment of a URL (`ffhq.pkl`), or empty."""
    return posixpath.basename(urllib.parse.urlsplit(url).path)


def download(
    url: str,
    dst: Path,
    *,
    allow_private: bool,
    max_bytes: int,
    timeout_seconds: float,
    on_progress: Callable[[int, int | None], None],
) -> tuple[str, int]:
    """Stream `url` into `dst`; returns (sha256, size). ModelImportError for a refused URL, an HTTP
    error, a body over `max_bytes` or a broken connection. `dst` may be left partial; the caller
    removes it."""
    current = url
    timeout = httpx.Timeout(timeout_seconds)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                try:
                    target = pinned(current, allow_private)
                except UnsafeUrl as exc:
                    raise ModelImportError(f"url {current!r} refused: {exc}") from None
                # identity: a compressed transfer would make the byte cap and the checksum apply to
                # something other than the file.
                headers = {"Accept-Encoding": "identity", "User-Agent": "stylegan-service model import"}
                with client.stream(
                    "GET", target.url, headers=headers | target.headers, extensions=target.extensions
                ) as response:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise ModelImportError(f"{current} redirects without a Location header")
                        current = urllib.parse.urljoin(current, location)
                        continue
                    if response.status_code != 200:
                        raise ModelImportError(f"downloading {current} failed: HTTP {response.status_code}")
                    return _save_body(response, dst, current, max_bytes, on_progress)
    except httpx.HTTPError as exc:
        raise ModelImportError(f"downloading {current} failed: {type(exc).__name__}: {exc}") from None
    raise ModelImportError(f"{url} redirects more than {MAX_REDIRECTS} times")


def _save_body(
    response: Any, dst: Path, url: str, max_bytes: int, on_progress: Callable[[int, int | None], None]
) -> tuple[str, int]:
    declared = response.headers.get("content-length")
    total = int(declared) if declared is not None and declared.isdigit() else None
    if total is not None and total > max_bytes:
        raise ModelImportError(
            f"{url} is {total} bytes, over the download limit of {max_bytes} (STYLEGAN_MAX_DOWNLOAD_BYTES)"
        )
    digest = hashlib.sha256()
    size = 0
    last = time.monotonic()
    on_progress(0, total)
    with dst.open("wb") as out:
        for chunk in response.iter_raw(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ModelImportError(
                    f"{url} sent more than the download limit of {max_bytes} bytes (STYLEGAN_MAX_DOWNLOAD_BYTES)"
                )
            digest.update(chunk)
            out.write(chunk)
            if time.monotonic() - last >= PROGRESS_INTERVAL_S:
                on_progress(size, total)
                last = time.monotonic()
    if total is not None and size != total:
        raise ModelImportError(f"{url} ended after {size} of {total} bytes")
    on_progress(size, total)
    return digest.hexdigest(), size


def run_model_import(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Download, check and import; the result names the model (`model_id`)."""
    request = ModelImportParams.model_validate(params)
    settings = ctx.settings

    def progress(done: int, total: int | None) -> None:
        fraction = DOWNLOAD_SHARE * done / total if total else 0.0
        ctx.report(min(fraction, DOWNLOAD_SHARE), {"stage": "downloading", "bytes": done, "total": total})

    scratch = scratch_dir(settings)
    downloaded = scratch_file(scratch, ".download")
    try:
        sha256, size = download(
            request.url,
            downloaded,
            allow_private=settings.allow_private_urls,
            max_bytes=settings.max_download_bytes,
            timeout_seconds=settings.download_timeout_seconds,
            on_progress=progress,
        )
        if request.sha256 is not None and sha256 != request.sha256:
            raise ModelImportError(
                f"checksum mismatch for {request.url}: expected sha256 {request.sha256}, "
                f"the downloaded {size} bytes have sha256 {sha256}"
            )
        ctx.report(DOWNLOAD_SHARE, {"stage": "importing", "bytes": size, "total": size, "sha256": sha256})
        origin = request.catalog if request.catalog is not None else request.url
        with ctx.sessions() as session:
            model, created = register_model(
                session,
                ctx.storage,
                src=downloaded,
                sha256=sha256,
                owner_key=ctx.owner_key,
                name=request.name or request.catalog or default_name(url_filename(request.url), sha256),
                source=f"import:{origin}",
                limits=ImportLimits.from_settings(settings),
                scratch=scratch,
                license_note=request.license_note,
                job_id=ctx.job_id,
            )
        return {"model_id": model.id, "created": created, "sha256": sha256, "bytes": size}
    finally:
        downloaded.unlink(missing_ok=True)
