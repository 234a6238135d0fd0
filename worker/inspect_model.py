"""`python -m worker.inspect_model SRC DST`: the child process that reads a user's network file.

The parent (`worker.model_import.run_sandboxed_import`) starts it for every upload, URL import and the
demo model. It caps its own address space and CPU time before torch or any of the file is loaded, reads
the file through `gan.io.checkpoint.read_network` (allowlisted unpickling, bounded reads), writes the
generator in our format to DST with its licence note and source, and prints one line of JSON describing
it. A file the library refuses exits with EXIT_REFUSED and the library's one-line message on stderr;
running out of the memory cap exits with EXIT_MEMORY. Nothing else is written.

Only the standard library is imported at module level, so the limits are in force before torch maps its
libraries (about 0.8 GB of address space).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import Any

from gan.errors import GanError
from gan.io.checkpoint import read_network, save_generator

EXIT_OK, EXIT_BUG, EXIT_REFUSED, EXIT_MEMORY = 0, 1, 2, 3
ERROR_PREFIX = "error: "

# Official and TensorFlow pickles carry no licence of their own; NVIDIA's released networks (and
# networks fine-tuned from them) are under the NVIDIA Source Code License, which is non-commercial.
NVIDIA_LICENSE_NOTE = (
    "NVIDIA Source Code License-NC: NVIDIA's StyleGAN networks, and networks trained from them, may be "
    "used non-commercially only (research and evaluation); "
    "see https://github.com/NVlabs/stylegan3/blob/main/LICENSE.txt. "
    "Assumed for official-format network files unless the uploader states another licence."
)

# What read_network reports -> the `format` a Model row and the API show.
WIRE_FORMATS = {
    "stylegan-service": "ours",
    "official-pytorch-pickle": "official-pkl",
    "tensorflow-pickle": "tf-pkl",
}

# Messages that mean an allocation hit RLIMIT_AS: Python's MemoryError, torch's allocator, and the
# dynamic loader when even torch's shared libraries do not fit.
_MEMORY_MARKERS = (
    "can't allocate memory",
    "cannot allocate memory",
    "failed to map segment",
    "out of memory",
)


def limit_self(memory_bytes: int, cpu_seconds: int) -> None:
    """Cap this process: RLIMIT_AS makes an oversized allocation fail instead of swapping the host;
    RLIMIT_CPU sends SIGXCPU (which ends the process) at the soft limit and SIGKILL a little after."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not leave a core file behind


def convert(src: str, dst: str, *, license_note: str | None, source: str | None) -> dict[str, Any]:
    """Read SRC (any format we read), write it in ours to DST, and describe it."""
    loaded = read_network(src)
    fmt = WIRE_FORMATS[loaded.format]
    if fmt == "ours":
        # Our files carry their own note and origin; an uploader's explicit note replaces the note only.
        note = license_note or loaded.metadata.get("license")
        origin = loaded.metadata.get("source") or source
    else:
        note = license_note or NVIDIA_LICENSE_NOTE
        origin = source
    G = loaded.G
    save_generator(G, dst, license_note=note, source=origin)
    config = G.config
    return {
        "format": fmt,
        "architecture": config.architecture,
        "resolution": config.img_resolution,
        "img_channels": config.img_channels,
        "z_dim": config.z_dim,
        "w_dim": config.w_dim,
        "c_dim": config.c_dim,
        "num_ws": config.num_ws,
        "num_params": sum(p.numel() for p in G.parameters()),
        "license_note": note,
        "source": origin,
        "config": config.to_dict(),
    }


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError | OSError | ImportError) and any(
        m in str(exc).lower() for m in _MEMORY_MARKERS
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.inspect_model")
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--cpu-seconds", type=int, required=True)
    parser.add_argument("--license-note", default=None)
    parser.add_argument("--source", default=None)
    args = parser.parse_args(argv)
    limit_self(args.memory_bytes, args.cpu_seconds)
    try:
        info = convert(args.src, args.dst, license_note=args.license_note, source=args.source)
    except Exception as exc:
        if _is_memory_error(exc):
            sys.stderr.write(f"{ERROR_PREFIX}out of memory: {exc}\n")
            return EXIT_MEMORY
        if isinstance(exc, GanError):
            message = " ".join(str(exc).split())  # one line, whatever the library wrote
            sys.stderr.write(f"{ERROR_PREFIX}{message}\n")
            return EXIT_REFUSED
        raise
    sys.stdout.write(json.dumps(info) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
