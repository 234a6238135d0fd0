"""Keep freed host memory in the process, so that CPU passes do not page-fault their buffers back in.

A forward pass on the CPU allocates and frees the same activation buffers every call: megabytes at 64 px,
hundreds of megabytes at 256 px batch 4. glibc's malloc hands any block above its mmap threshold
(128 KiB, rising with use up to 32 MiB) to the kernel on free and asks for fresh pages on the next
malloc, and it trims its heap's top the same way; each fresh page is a minor fault and a zeroing, every
pass. Each thread also gets its own arena, whose heaps are trimmed too. Measured on a 2-vCPU AMD EPYC,
one torch thread, 2026-12-05 (bench/RESULTS.md, "host memory"): the demo model at batch 8 ran at
110-155 img/s from one process start to the next (about 10,000 faults a pass) and at ~180 with the
settings below (none); a 256 px StyleGAN2 at batch 4 took 5.2-5.5 s a pass from a thread (about 700,000
faults) and 3.6 s with them. The cost is resident memory: what a pass freed stays in the process for
the next one (+0.4 GB for that 256 px pass).

`keep_freed_memory` is for a program's entry point (`stylegan`, `python -m worker`), called before it
starts threads; the library never calls it on import, since the process is its user's to configure.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# Free memory at the heap's top is returned to the kernel only above this (1 GiB: in practice never).
TRIM_THRESHOLD = 1 << 30
# Fixed, so glibc does not adjust it; with mmap off (MMAP_MAX 0) it only matters if mmap is turned on again.
MMAP_THRESHOLD = 32 << 20


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse: no trimming, no mmap-per-block, one arena.

    Returns whether it applied (False off Linux or on a libc without mallopt, e.g. musl). One arena
    because a thread's arena is trimmed on its own terms; the threads that allocate large blocks (one
    forward pass at a time) do not contend for it, and Python's small objects do not use malloc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = (
        (_M_ARENA_MAX, 1),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_MMAP_MAX, 0),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)
