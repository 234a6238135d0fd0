"""What reading one network file may cost: bounds checked before anything is allocated.

An allowlist stops a file from running code; these bounds stop it from exhausting memory or time with
plain data (a declared 10^12-element tensor, a million tiny tensors, a 50 GB "pickle"). The defaults
leave room for the largest official release (StyleGAN3-R at 1024 px: about 360 MB, some 1,700 tensors)
with a wide margin.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReadLimits:
    max_file_bytes: int = 4 << 30  # whole file, read into memory once before parsing
    max_tensors: int = 100_000  # tensors rebuilt from one file
    max_tensor_numel: int = 1 << 30  # elements in one tensor or storage (4 GiB of float32)
    max_total_bytes: int = 8 << 30  # all storages of one file together
    max_ndim: int = 8  # no official tensor has more than 5 dims
    max_depth: int = 64  # nesting of containers and records
    max_header_bytes: int = 64 << 20  # safetensors JSON header


DEFAULT_LIMITS = ReadLimits()
