"""Official stylegan2-ada-pytorch and stylegan3 network pickles, read without running them.

`read_official_pickle` gives the top-level dict with every network as a `PersistentRecord`
(see `gan.io.safe_pickle` for what is allowed and why); `load_official_networks` builds our own modules
from those records by a key-for-key copy with asserted shapes.
"""

from __future__ import annotations

import os
from typing import IO, Any

from gan.errors import FormatError
from gan.io.limits import DEFAULT_LIMITS, ReadLimits
from gan.io.safe_pickle import PersistentRecord, TFNetworkRecord, read_bytes_bounded, safe_loads

PathOrFile = str | os.PathLike[str] | IO[bytes]


def read_official_pickle(path_or_file: PathOrFile, limits: ReadLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The pickle's top-level dict ('G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', ...),
    networks as `PersistentRecord`s. Nothing from the file is executed."""
    obj = safe_loads(read_bytes_bounded(path_or_file, limits), limits)
    if isinstance(obj, tuple) and obj and all(isinstance(o, TFNetworkRecord) for o in obj):
        raise FormatError("this is an old TensorFlow StyleGAN2 pickle; read it with gan.io.tf_pickle")
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise FormatError("not an official network pickle: the top level is not a dict of names")
    if not any(isinstance(v, PersistentRecord) for v in obj.values()):
        raise FormatError("not an official network pickle: it holds no network")
    return obj


__all__ = ["PersistentRecord", "read_official_pickle"]
