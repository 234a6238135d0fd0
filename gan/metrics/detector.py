"""Feature detectors for the metrics: the official Inception-v3 (FID, KID) and VGG16 (precision/recall).

NVIDIA ships them as `inception-2015-12-05.pkl` and `vgg16.pkl`: pickles around a TorchScript module
(a direct translation of the TensorFlow graph), called as `detector(images_uint8_nchw,
return_features=True)` -> `[N, 2048]` (Inception pool3) or `[N, 4096]` (VGG16 fc2). Unpickling such a
file would run whatever its globals name, so we never do: we read the pickle's opcodes without
executing them (`pickletools.genops`), take the TorchScript archive embedded in it as bytes, and hand
that to `torch.jit.load`, whose own reader only rebuilds tensors and TorchScript code. A file without
an embedded TorchScript archive is refused. A plain TorchScript archive (`torch.jit.save`) is accepted
as is; that is what the tests' stand-in network is.

Downloads go to a cache with a SHA-256 check: the bytes stream into a temporary file beside the cache
entry and are renamed into place only when the digest matches, so a mismatch or an interrupted
download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickletools
import re
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import torch

from gan.errors import FormatError, GanError
from gan.io.files import file_sha256

# URLs as in the official metrics code (stylegan3 metrics/*.py). NVIDIA publishes no checksum for them;
# pass `sha256=` to pin the copy you trust.
INCEPTION_URL = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/inception-2015-12-05.pkl"
VGG16_URL = (
    "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/vgg16.pkl"
)

MAX_DETECTOR_BYTES = 2 * 2**30  # the Inception file is ~95 MB, VGG16 ~530 MB
# Seconds any one network wait may take (connect, or one read) before a download is given up.
DOWNLOAD_TIMEOUT_S = 60.0


class DownloadError(GanError):
    """A detector URL could not be fetched (no network, HTTP error); nothing was left in the cache."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stylegan" / "detectors"


class FeatureDetector:
    """A TorchScript feature network: uint8 images [N, 3, H, W] -> features [N, D] float32."""

    def __init__(self, module: torch.jit.ScriptModule, name: str, sha256: str) -> None:
        self.module = module.eval()
        self.name = name
        self.sha256 = sha256

    def to(self, device: str | torch.device) -> FeatureDetector:
        self.module = self.module.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise FormatError(
                f"detectors take uint8 RGB images [N, 3, H, W], got {images.dtype} {list(images.shape)}"
            )
        features = self.module(images, return_features=True)
        if features.ndim != 2 or features.shape[0] != images.shape[0]:
            raise FormatError(f"detector {self.name} returned {list(features.shape)}, expected [N, D]")
        out: torch.Tensor = features.float()
        return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_url(text: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*://", text) is not None


def fetch(
    url: str,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """The cached copy of `url`, downloading it first if needed; a cache entry failing `sha256` is replaced.

    `timeout_s` bounds each network wait (connecting, then every read), not the whole download: a
    caller that must fail fast offline passes a few seconds without cutting a slow, steady transfer.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1]) or "detector"
    target = cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}_{name}"
    if target.is_file():
        if sha256 is None or file_sha256(target) == sha256.lower():
            return target
        target.unlink()  # a damaged or substituted cache entry
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=cache_dir)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=name)
            size = 0
            try:
                while chunk := response.read(1 << 20):
                    size += len(chunk)
                    if size > MAX_DETECTOR_BYTES:
                        raise FormatError(f"{url} is larger than {MAX_DETECTOR_BYTES} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            out.flush()
            os.fsync(out.fileno())
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise FormatError(
                f"sha256 mismatch for {url}: expected {sha256.lower()}, got {digest.hexdigest()}"
            )
        os.replace(tmp, target)
    except OSError as exc:  # URLError, HTTPError, timeouts and refused connections are all OSErrors
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"cannot download {url}: {exc}; pass a local file instead") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _is_torchscript_zip(data: bytes) -> bool:
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        return False
    # torch.jit.save writes <archive>/data.pkl, <archive>/constants.pkl and <archive>/code/...
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def embedded_torchscript(data: bytes) -> bytes:
    """The TorchScript archive inside a pickle, found by reading opcodes only (nothing is executed)."""
    found: list[bytes] = []
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8") and isinstance(
                arg, bytes | bytearray
            ):
                payload = bytes(arg)
            elif (
                opcode.name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8")
                and isinstance(arg, str)
                and arg.startswith("PK\x03\x04")
            ):
                payload = arg.encode("latin-1", errors="replace")  # protocol 2 stores bytes as latin-1 text
            else:
                continue
            if _is_torchscript_zip(payload):
                found.append(payload)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise FormatError(f"not a readable pickle: {exc}") from exc
    if not found:
        raise FormatError("the pickle holds no TorchScript archive; refusing to unpickle it")
    return max(found, key=len)


def load_detector(
    path_or_url: str | Path,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> FeatureDetector:
    """Load a detector from a local file or a URL (cached). `sha256` pins the file's bytes."""
    text = str(path_or_url)
    path = (
        fetch(text, sha256=sha256, cache_dir=cache_dir, progress=progress, timeout_s=timeout_s)
        if _is_url(text)
        else Path(text)
    )
    size = path.stat().st_size
    if size > MAX_DETECTOR_BYTES:
        raise FormatError(f"{path} is larger than {MAX_DETECTOR_BYTES} bytes")
    data = path.read_bytes()
    digest = _sha256(data)
    if sha256 is not None and digest != sha256.lower():
        raise FormatError(f"sha256 mismatch for {path}: expected {sha256.lower()}, got {digest}")
    archive = data if _is_torchscript_zip(data) else embedded_torchscript(data)
    try:
        module: Any = torch.jit.load(io.BytesIO(archive), map_location="cpu")
    except RuntimeError as exc:
        raise FormatError(f"{path}: TorchScript archive does not load: {str(exc).splitlines()[0]}") from exc
    name = Path(text.rsplit("/", 1)[-1]).stem
    return FeatureDetector(module, name, digest).to(device)
