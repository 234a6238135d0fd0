"""What reading one network file may cost: bounds checked before anything is allocated.

An allowlist stops a file from running code; these bounds stop it from exhausting memory or time with
plain data (a declared 10^12-element tensor, a million tiny objects, a tree of shared references that
expands to 10^24 values, a 50 GB "pickle"). Each default is far above what real files need and far below
what hurts; the figures come from NVIDIA's releases and the fixtures in ../shared/fixtures/official
(tests/hardening/test_import_bombs.py prints them):

- the largest official release (StyleGAN3-R at 1024 px) is about 360 MB with some 1,700 tensors;
- the official 32-64 px fixtures unpickle in 5,000-25,300 opcodes with 1,400-5,400 memo entries; their
  largest value expands to 6,600-32,000 elements and nests 12-32 deep (as `gan.io.pickle_scan` counts
  depth: an argument tuple is a level). A 1024 px StyleGAN2 file has 9 resolution blocks per network
  where the 32 px one has 4, so about 2.3 times these counts; StyleGAN3 has 14 layers at any size.
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
    # Pickles, counted by gan.io.pickle_scan before they are unpickled (a refusal costs at most
    # max_pickle_ops steps of about 4 us each, so about 2 s):
    max_pickle_ops: int = 500_000  # opcodes in one pickle (real files: under 60,000)
    max_memo: int = 100_000  # memo entries (real files: under 15,000)
    max_elements: int = 1_000_000  # values one value expands to, shared references counted each time
    max_string_bytes: int = 16 << 20  # one str (the largest real one is a module's source, ~100 KB)
    # Tensors are views of storages: together they may declare at most this many times the bytes of
    # the storages they view (real files: exactly 1, each tensor its own storage).
    max_view_ratio: float = 2.0


DEFAULT_LIMITS = ReadLimits()
