"""Official stylegan2-ada-pytorch and stylegan3 network pickles, read without running them.

`read_official_pickle` gives the top-level dict with every network as a `PersistentRecord`
(see `gan.io.safe_pickle` for what is allowed and why); `load_official_networks` builds our own modules
from those records by a key-for-key copy with asserted shapes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from gan.config import (
    Architecture,
    DiscriminatorConfig,
    GeneratorConfig,
    MappingConfig,
    StyleGAN2SynthesisConfig,
    StyleGAN3SynthesisConfig,
)
from gan.errors import ConfigError, FormatError
from gan.generator import build_generator
from gan.io.limits import DEFAULT_LIMITS, ReadLimits
from gan.io.safe_pickle import PersistentRecord, TFNetworkRecord, read_bytes_bounded, safe_loads
from gan.stylegan2.discriminator import Discriminator

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


# -- official init_kwargs -> our configs ---------------------------------------------------------------

# Official keyword arguments that change speed or memory layout only, never a number we compute.
_LAYOUT_ONLY = frozenset({"fp16_channels_last", "channels_last", "fused_modconv_default"})
# Training-only switches of the official D that do not change its weights or outputs.
_TRAINING_ONLY = frozenset({"freeze_layers"})


def _plain(value: Any) -> Any:
    """numpy scalars and lists from the pickle as JSON-able Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _take(kwargs: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> dict[str, Any]:
    """The allowed keys of an official kwargs dict; an unknown one is an error, not something to drop."""
    if not isinstance(kwargs, dict):
        raise FormatError(f"{where} is not a dict")
    unknown = set(kwargs) - set(allowed) - _LAYOUT_ONLY - _TRAINING_ONLY
    if unknown:
        raise ConfigError(f"{where}: unsupported official argument(s) {', '.join(sorted(unknown))}")
    return {k: _plain(v) for k, v in kwargs.items() if k in allowed}


_MAPPING_KEYS = frozenset(
    {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
)
_SG2_SYNTHESIS_KEYS = frozenset(
    {
        "channel_base",
        "channel_max",
        "num_fp16_res",
        "conv_clamp",
        "architecture",
        "resample_filter",
        "use_noise",
        "activation",
    }
)
_SG3_SYNTHESIS_KEYS = frozenset(
    {
        "channel_base",
        "channel_max",
        "num_layers",
        "num_critical",
        "first_cutoff",
        "first_stopband",
        "last_stopband_rel",
        "margin_size",
        "output_scale",
        "num_fp16_res",
        "conv_clamp",
        "conv_kernel",
        "use_radial_filters",
        "magnitude_ema_beta",
        "filter_size",
        "lrelu_upsampling",
    }
)
_GENERATOR_KEYS = frozenset({"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"})


def is_stylegan3(record: PersistentRecord) -> bool:
    """StyleGAN3 files reuse the StyleGAN2 class names; the Fourier-feature input tells them apart."""
    return any(
        name == "synthesis.input" and r.class_name == "SynthesisInput" for name, r in record.named_records()
    )


def generator_config_from_official(record: PersistentRecord) -> GeneratorConfig:
    """Our `GeneratorConfig` from an official `Generator` record's init_kwargs (defaults as the official
    constructors have them, which differ between the two families for the mapping network)."""
    if record.class_name != "Generator":
        raise FormatError(f"expected a Generator record, got {record.class_name}")
    kw = dict(record.init_kwargs)
    if record.init_args:
        raise FormatError("Generator record has positional init arguments; the official code uses none")
    top = {k: _plain(kw.pop(k)) for k in list(kw) if k in _GENERATOR_KEYS}
    mapping_kw = _take(kw.pop("mapping_kwargs", {}) or {}, _MAPPING_KEYS, "mapping_kwargs")
    if is_stylegan3(record):
        # stylegan3 passes synthesis kwargs flat; its MappingNetwork defaults to 2 layers, w_avg_beta 0.998
        synth = _take(kw, _SG3_SYNTHESIS_KEYS, "Generator init_kwargs")
        mapping_kw.setdefault("num_layers", 2)
        mapping_kw.setdefault("w_avg_beta", 0.998)
        architecture: Architecture = (
            "stylegan3-r" if synth.get("use_radial_filters", False) else "stylegan3-t"
        )
        synthesis: StyleGAN2SynthesisConfig | StyleGAN3SynthesisConfig = StyleGAN3SynthesisConfig(**synth)
    else:
        # stylegan2-ada-pytorch nests them in synthesis_kwargs; stylegan3's copy of the StyleGAN2
        # Generator (train.py --cfg stylegan2) takes them flat, like its StyleGAN3 one.
        synth = _take(kw.pop("synthesis_kwargs", {}) or {}, _SG2_SYNTHESIS_KEYS, "synthesis_kwargs")
        flat = _take(kw, _SG2_SYNTHESIS_KEYS, "Generator init_kwargs")
        if synth and flat:
            raise FormatError(
                "Generator init_kwargs has synthesis arguments both flat and in synthesis_kwargs"
            )
        synth = synth or flat
        if "resample_filter" in synth:
            synth["resample_filter"] = tuple(synth["resample_filter"])
        architecture = "stylegan2"
        synthesis = StyleGAN2SynthesisConfig(**synth)
    try:
        config = GeneratorConfig(
            architecture=architecture, mapping=MappingConfig(**mapping_kw), synthesis=synthesis, **top
        )
    except TypeError as exc:
        raise ConfigError(f"official Generator arguments do not form a config: {exc}") from exc
    num_ws = record.attributes.get("num_ws")
    if num_ws is not None and int(num_ws) != config.num_ws:
        raise FormatError(f"the file's generator has {num_ws} ws, its arguments imply {config.num_ws}")
    return config


def discriminator_config_from_official(record: PersistentRecord) -> DiscriminatorConfig:
    if record.class_name != "Discriminator":
        raise FormatError(f"expected a Discriminator record, got {record.class_name}")
    kw = dict(record.init_kwargs)
    block = _take(kw.pop("block_kwargs", {}) or {}, {"activation", "resample_filter"}, "block_kwargs")
    mapping_kw = _take(kw.pop("mapping_kwargs", {}) or {}, _MAPPING_KEYS, "D mapping_kwargs")
    epilogue = _take(
        kw.pop("epilogue_kwargs", {}) or {},
        {"mbstd_group_size", "mbstd_num_channels", "activation"},
        "epilogue_kwargs",
    )
    top = _take(
        kw,
        {
            "c_dim",
            "img_resolution",
            "img_channels",
            "architecture",
            "channel_base",
            "channel_max",
            "num_fp16_res",
            "conv_clamp",
            "cmap_dim",
        },
        "Discriminator init_kwargs",
    )
    if tuple(block.pop("resample_filter", (1, 3, 3, 1))) != (1, 3, 3, 1):
        raise ConfigError("discriminators with a resample_filter other than [1, 3, 3, 1] are not supported")
    activation = block.pop("activation", "lrelu")
    if epilogue.pop("activation", activation) != activation:
        raise ConfigError("discriminators with different block and epilogue activations are not supported")
    mapping_kw["w_avg_beta"] = None  # the official D builds its label mapping with w_avg_beta=None
    try:
        return DiscriminatorConfig(
            activation=activation, mapping=MappingConfig(**mapping_kw), **epilogue, **top
        )
    except TypeError as exc:
        raise ConfigError(f"official Discriminator arguments do not form a config: {exc}") from exc


# -- copying weights ----------------------------------------------------------------------------------------


def check_state(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse a state that is not key for key, shape for shape, the module's; every difference at once."""
    ours = module.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        raise FormatError(f"{where}: the file's tensors do not match our network ({'; '.join(parts)})")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(ours[key].shape):
            raise FormatError(
                f"{where}: {key} has shape {list(tensor.shape)} in the file, {list(ours[key].shape)} in our network"
            )
        if tensor.dtype.is_floating_point != ours[key].dtype.is_floating_point:
            raise FormatError(
                f"{where}: {key} is {tensor.dtype} in the file, {ours[key].dtype} in our network"
            )


def copy_state(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Key-for-key copy with asserted shapes; every difference is reported at once."""
    check_state(module, state, where)
    module.load_state_dict(state, strict=True)


M = TypeVar("M", bound=nn.Module)


def build_matching(build: Callable[[], M], state: dict[str, torch.Tensor], where: str) -> M:
    """`build()` holding `state`'s tensors, once a shapes-only build (torch's "meta" device) matched it.

    The configuration comes from the file too: a few bytes of init arguments (channel_base 2^30,
    img_resolution 2^16) would otherwise allocate and initialise a network of any size before the
    mismatch with the file's tensors shows. The meta build costs no memory for weights.

    The matched skeleton then takes the file's tensors themselves (`load_state_dict(assign=True)`)
    instead of a second, randomly initialised build they are copied into. With the meta kernels below,
    this took a cold 1024 px load on a 2-core CPU from 2.3 s to 0.8 s, the build itself to 0.02 s
    (bench/bench_cold_start.py, with the other changes to the load). A tensor that is not a whole,
    contiguous storage of its own (a view, shared, or of another float dtype) is copied first, so the
    module never aliases one storage twice. A module whose constructor leaves a tensor that the state
    does not fill (a non-persistent buffer, a plain tensor attribute) is built for real instead.
    """
    with _SkeletonDevice():
        module = build()
    check_state(module, state, where)
    if _meta_tensors(module, set(state)):
        del module
        module = build()
        module.load_state_dict(state, strict=True)
        return module
    ours = module.state_dict()
    seen: set[int] = set()
    owned = {key: _owned(tensor, ours[key].dtype, seen) for key, tensor in state.items()}
    module.load_state_dict(owned, strict=True, assign=True)
    return module


# Elementwise ops our constructors apply to meta tensors (scaling a weight, normalising a filter): the
# result's shape is the broadcast of the operands', its dtype their promotion.
_ELEMENTWISE = frozenset(
    {
        torch.Tensor.add,
        torch.Tensor.sub,
        torch.Tensor.mul,
        torch.Tensor.div,
        torch.Tensor.pow,
        torch.Tensor.neg,
        torch.Tensor.exp,
        torch.Tensor.sqrt,
        torch.Tensor.rsqrt,
        torch.Tensor.square,
    }
)


class _SkeletonDevice(TorchFunctionMode):
    """torch.device("meta"), with the results of elementwise ops, `outer`, `eye` and `randn` on meta
    made here (and `sum` over dims).

    torch makes those with Python meta kernels that import torch._dynamo or sympy on first use: 1.1 s of
    a cold 1024 px load on a 2-core CPU, for shapes that a broadcast gives. Any other op, or one with a
    real tensor among its operands, goes to torch as under torch.device("meta").
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        made = _meta_shortcut(func, args, kwargs)
        if made is not None:
            return made
        if func in _device_constructors() and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _meta_shortcut(
    func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> torch.Tensor | None:
    """The meta tensor `func(*args, **kwargs)` gives under torch.device("meta"), for the ops whose meta
    kernels are slow to load; None for any other call."""
    if func is torch.randn and set(kwargs) <= {"dtype", "device"} and kwargs.get("device") in (None, "meta"):
        return torch.empty(*args, dtype=kwargs.get("dtype"), device="meta")  # values never read
    if func is torch.eye and set(kwargs) <= {"dtype"} and _all_ints(args):
        return torch.empty([args[0], args[-1]], dtype=kwargs.get("dtype"), device="meta")
    if kwargs and func is not torch.Tensor.sum or not _float_meta(args):
        return None
    if func in _ELEMENTWISE:
        return _meta_result(args)
    if func is torch.Tensor.sum and len(args) == 1 and set(kwargs) <= {"dim", "keepdim"}:
        return _meta_sum(args[0], kwargs.get("dim"), bool(kwargs.get("keepdim", False)))
    if func is torch.outer and len(args) == 2:
        a, b = args
        return torch.empty([a.numel(), b.numel()], dtype=torch.result_type(a, b), device="meta")
    return None


def _all_ints(args: Sequence[Any]) -> bool:
    return 1 <= len(args) <= 2 and all(isinstance(a, int) and not isinstance(a, bool) for a in args)


def _float_meta(args: Sequence[Any]) -> bool:
    """Floating-point meta tensors and Python numbers only, a tensor first (the method's self): the
    cases where the result's dtype is the operands' promotion (an integer division would be float)."""
    if not args or not isinstance(args[0], torch.Tensor):
        return False
    return all(
        a.is_meta and a.is_floating_point()
        if isinstance(a, torch.Tensor)
        else isinstance(a, int | float) and not isinstance(a, bool)
        for a in args
    )


def _meta_result(args: Sequence[Any]) -> torch.Tensor:
    shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
    dtype = torch.result_type(args[0], args[1]) if len(args) == 2 else args[0].dtype
    return torch.empty(_broadcast(shapes), dtype=dtype, device="meta")


def _meta_sum(x: torch.Tensor, dim: int | Sequence[int] | None, keepdim: bool) -> torch.Tensor:
    dims = range(x.ndim) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    reduced = {d % x.ndim for d in dims} if x.ndim else set()
    shape = [1 if i in reduced else n for i, n in enumerate(x.shape) if keepdim or i not in reduced]
    return torch.empty(shape, dtype=x.dtype, device="meta")


def _broadcast(shapes: list[tuple[int, ...]]) -> list[int]:
    """numpy's broadcasting rule (torch.broadcast_shapes imports sympy on first use: 0.6 s)."""
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for shape in shapes:
        for i, n in enumerate(shape, start=ndim - len(shape)):
            if n != out[i] and 1 not in (n, out[i]):
                raise ValueError(f"shapes {shapes} do not broadcast")
            out[i] = n if out[i] == 1 else out[i]
    return out


def _meta_tensors(module: nn.Module, filled: set[str]) -> list[str]:
    """Tensors of a meta-built `module` that a state with the keys `filled` would leave on meta."""
    left = [name for name, _ in module.named_parameters() if name not in filled]
    left += [name for name, _ in module.named_buffers() if name not in filled]
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, torch.Tensor) and value.is_meta:
                left.append(f"{prefix}.{attr}" if prefix else attr)
    return left


def _owned(tensor: torch.Tensor, dtype: torch.dtype, seen: set[int]) -> torch.Tensor:
    """`tensor` itself when it alone holds its whole storage, contiguous, in `dtype`; else a copy."""
    storage = tensor.untyped_storage()
    whole = (
        tensor.dtype == dtype
        and tensor.is_contiguous()
        and tensor.storage_offset() == 0
        and storage.nbytes() == tensor.numel() * tensor.element_size()
        and storage.data_ptr() not in seen
    )
    if tensor.numel():
        seen.add(storage.data_ptr())
    if whole and tensor.numel():
        return tensor.detach()
    return tensor.detach().to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)


def build_networks(
    configs: dict[str, GeneratorConfig | DiscriminatorConfig], states: dict[str, dict[str, torch.Tensor]]
) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {}
    for name, config in configs.items():
        build: Callable[[], nn.Module] = (
            functools.partial(build_generator, config)
            if isinstance(config, GeneratorConfig)
            else functools.partial(Discriminator, config)
        )
        module = build_matching(build, states[name], name)
        out[name] = module.eval()
    return out


NETWORK_NAMES = ("G_ema", "G", "D")


def load_official_networks(
    path_or_file: PathOrFile, which: Sequence[str] = ("G_ema",), limits: ReadLimits = DEFAULT_LIMITS
) -> dict[str, nn.Module]:
    """Our modules built from an official pickle: 'G_ema' (the one to sample from), and 'G' and 'D' for
    resuming training. Weights are copied key for key; nothing from the file runs."""
    return networks_from_official(read_official_pickle(path_or_file, limits), which)


def networks_from_official(data: Any, which: Sequence[str] = ("G_ema",)) -> dict[str, nn.Module]:
    """`load_official_networks` on an already read top-level dict."""
    unknown = [w for w in which if w not in NETWORK_NAMES]
    if unknown or not which:
        raise ConfigError(f"which must name some of {', '.join(NETWORK_NAMES)}, got {list(which)}")
    if not isinstance(data, dict):
        raise FormatError("not an official network pickle: the top level is not a dict")
    configs: dict[str, GeneratorConfig | DiscriminatorConfig] = {}
    states: dict[str, dict[str, torch.Tensor]] = {}
    for name in which:
        record = data.get(name)
        if not isinstance(record, PersistentRecord):
            raise FormatError(f"the pickle holds no network '{name}'")
        configs[name] = (
            discriminator_config_from_official(record)
            if name == "D"
            else generator_config_from_official(record)
        )
        states[name] = record.state_dict()
    return build_networks(configs, states)


__all__ = [
    "PersistentRecord",
    "discriminator_config_from_official",
    "generator_config_from_official",
    "is_stylegan3",
    "load_official_networks",
    "networks_from_official",
    "read_official_pickle",
]
