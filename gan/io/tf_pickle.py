"""Old TensorFlow StyleGAN2 pickles (NVlabs/stylegan2, stylegan2-ada TF), read without TensorFlow.

Such a file is a tuple (G, D, Gs) of `dnnlib.tflib.network.Network` objects, each pickled as NEWOBJ +
BUILD of a state dict: `version`, `name`, `static_kwargs` (the build function's arguments),
`components` (sub-networks: G's `mapping` and `synthesis`), `build_module_src` and `build_func_name`
(the TF graph code, which we never run) and `variables` (a list of (name, numpy array)). We rename and
re-lay the variables into the official PyTorch parameter paths, as the official `legacy.py` does:

- dense weights are [in, out] in TF, [out, in] in PyTorch (transpose);
- conv weights are [kh, kw, in, out] in TF, [out, in, kh, kw] in PyTorch; the TF upsampling conv (and
  the synthesis skip of `resnet`) is a transposed convolution, so its kernel is also flipped in space;
- TF modulation biases are stored minus one (the style is `mod_bias + 1` at init), so add one back;
- noise inputs `noise{i}` are [1, 1, r, r]; layer conv0 at resolution r uses `noise{2*log2(r)-5}`,
  conv1 `noise{2*log2(r)-4}`;
- `lod` (progressive-growing level of detail) is not part of the StyleGAN2 computation and is ignored.

Not covered: StyleGAN1, StyleGAN2 configs A-D and progressive-growing layouts (`ToRGB_lod{k}` names),
and conditional TF discriminators (their label mapping has 0 layers, which our config cannot express).
A variable we do not map is an error, never dropped silently.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from gan.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    MappingConfig,
    StyleGAN2SynthesisConfig,
)
from gan.errors import ConfigError, FormatError
from gan.generator import build_generator
from gan.io.limits import DEFAULT_LIMITS, ReadLimits
from gan.io.official_pickle import NETWORK_NAMES, build_networks
from gan.io.safe_pickle import TFNetworkRecord, read_bytes_bounded, safe_loads
from gan.stylegan2.discriminator import Discriminator

PathOrFile = str | os.PathLike[str] | IO[bytes]

_IGNORED_VARIABLES = frozenset({"lod"})
_PICKLE_NAMES = {"G": 0, "D": 1, "G_ema": 2}  # the tuple is (G, D, Gs); Gs is the EMA generator


def read_tf_pickle(
    path_or_file: PathOrFile, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[TFNetworkRecord, TFNetworkRecord, TFNetworkRecord]:
    """The (G, D, Gs) records of a TensorFlow pickle, checked for shape; nothing from it runs."""
    obj = safe_loads(read_bytes_bounded(path_or_file, limits), limits)
    return _check_tuple(obj)


def _check_tuple(obj: Any) -> tuple[TFNetworkRecord, TFNetworkRecord, TFNetworkRecord]:
    if not (isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(n, TFNetworkRecord) for n in obj)):
        raise FormatError("not a TensorFlow StyleGAN2 pickle: expected a tuple (G, D, Gs) of networks")
    for net in obj:
        _check_network(net, depth=0)
    return obj


def _check_network(net: TFNetworkRecord, depth: int) -> None:
    st = net.state
    if depth > 4:
        raise FormatError("TensorFlow networks nested too deeply")
    version = st.get("version")
    if not isinstance(version, int) or version < 4:
        raise FormatError(f"TensorFlow network state version {version!r}; only version 4 and later are read")
    if not isinstance(st.get("static_kwargs"), dict) or not isinstance(st.get("name"), str):
        raise FormatError("TensorFlow network lacks its name or static_kwargs")
    components = st.get("components") or {}
    if not isinstance(components, dict) or not all(
        isinstance(c, TFNetworkRecord) for c in components.values()
    ):
        raise FormatError(f"TensorFlow network {st['name']}: components are not networks")
    variables = st.get("variables")
    if not isinstance(variables, list):
        raise FormatError(f"TensorFlow network {st['name']}: variables are not a list")
    for item in variables:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
            raise FormatError(f"TensorFlow network {st['name']}: a variable is not a (name, value) pair")
        if not isinstance(item[1], np.ndarray | np.generic) or item[1].dtype.kind not in "fiub":
            raise FormatError(f"TensorFlow variable {item[0]} is not a numeric array")
    for comp in components.values():
        _check_network(comp, depth + 1)


def _collect(net: TFNetworkRecord, prefix: str = "") -> dict[str, np.ndarray]:
    """All variables by path ('dlatent_avg', 'mapping/Dense0/weight', 'synthesis/4x4/Conv/weight')."""
    out: dict[str, np.ndarray] = {}
    for name, value in net.state["variables"]:
        out[prefix + name] = np.asarray(value)
    for name, comp in (net.state.get("components") or {}).items():
        out.update(_collect(comp, f"{prefix}{name}/"))
    return out


class _Kwargs:
    """The build function's static kwargs, read once each; any left unread is an error."""

    def __init__(self, kwargs: dict[str, Any], where: str) -> None:
        self._kwargs, self._seen, self._where = kwargs, set[str](), where

    def get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        value = self._kwargs.get(name, default)
        return default if value is None else value

    def ignore(self, *names: str) -> None:
        self._seen.update(names)

    def finish(self) -> None:
        unknown = sorted(set(self._kwargs) - self._seen)
        if unknown:
            raise ConfigError(f"{self._where}: unsupported TensorFlow argument(s) {', '.join(unknown)}")


def generator_config_from_tf(net: TFNetworkRecord) -> GeneratorConfig:
    """Defaults are those of NVlabs/stylegan2 `G_main` / `G_mapping` / `G_synthesis_stylegan2`;
    TF `fmap_base` counts half the channels of PyTorch `channel_base` (TF halves it per octave from
    resolution 2, PyTorch from 1)."""
    kw = _Kwargs(dict(net.state["static_kwargs"]), f"TensorFlow {net.state['name']}")
    resample = kw.get("resample_kernel", [1, 3, 3, 1])
    config = GeneratorConfig(
        architecture="stylegan2",
        z_dim=int(kw.get("latent_size", 512)),
        c_dim=int(kw.get("label_size", 0)),
        w_dim=int(kw.get("dlatent_size", 512)),
        img_resolution=int(kw.get("resolution", 1024)),
        img_channels=int(kw.get("num_channels", 3)),
        mapping=MappingConfig(
            num_layers=int(kw.get("mapping_layers", 8)),
            embed_features=kw.get("label_fmaps", None),
            layer_features=kw.get("mapping_fmaps", None),
            activation=kw.get("mapping_nonlinearity", "lrelu"),
            lr_multiplier=float(kw.get("mapping_lrmul", 0.01)),
            w_avg_beta=float(kw.get("w_avg_beta", 0.995)),
        ),
        synthesis=StyleGAN2SynthesisConfig(
            channel_base=int(kw.get("fmap_base", 16384)) * 2,
            channel_max=int(kw.get("fmap_max", 512)),
            num_fp16_res=int(kw.get("num_fp16_res", 0)),
            conv_clamp=kw.get("conv_clamp", None),
            architecture=kw.get("architecture", "skip"),
            resample_filter=tuple(int(v) for v in resample),
            use_noise=bool(kw.get("use_noise", True)),
            activation=kw.get("nonlinearity", "lrelu"),
        ),
    )
    # Sampling-time and training-time options of the TF networks; they do not change the weights.
    kw.ignore("truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure", "dlatent_broadcast")
    kw.finish()
    return config


def discriminator_config_from_tf(net: TFNetworkRecord) -> DiscriminatorConfig:
    kw = _Kwargs(dict(net.state["static_kwargs"]), f"TensorFlow {net.state['name']}")
    c_dim = int(kw.get("label_size", 0))
    if c_dim:
        raise ConfigError("conditional TensorFlow discriminators are not supported")
    if tuple(kw.get("resample_kernel", [1, 3, 3, 1])) != (1, 3, 3, 1):
        raise ConfigError("discriminators with a resample_kernel other than [1, 3, 3, 1] are not supported")
    config = DiscriminatorConfig(
        c_dim=0,
        img_resolution=int(kw.get("resolution", 1024)),
        img_channels=int(kw.get("num_channels", 3)),
        architecture=kw.get("architecture", "resnet"),
        channel_base=int(kw.get("fmap_base", 16384)) * 2,
        channel_max=int(kw.get("fmap_max", 512)),
        num_fp16_res=int(kw.get("num_fp16_res", 0)),
        conv_clamp=kw.get("conv_clamp", None),
        activation=kw.get("nonlinearity", "lrelu"),
        # TF D's minibatch-std group is min(4, batch); legacy.py passes None (= whole batch) when unset
        mbstd_group_size=kw.get("mbstd_group_size", None),
        mbstd_num_channels=int(kw.get("mbstd_num_features", 1)),
    )
    kw.ignore("structure", "mapping_layers", "mapping_fmaps", "mapping_lrmul", "freeze_layers")
    kw.finish()
    return config


# -- variables -> official parameter paths --------------------------------------------------------------


def _dense(w: np.ndarray) -> np.ndarray:
    return w.T  # [in, out] -> [out, in]


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(3, 2, 0, 1)  # [kh, kw, in, out] -> [out, in, kh, kw]


def _conv_flipped(w: np.ndarray) -> np.ndarray:
    return w[::-1, ::-1].transpose(3, 2, 0, 1)  # TF transposed conv: flip the kernel in space


def _noise_index(res: str, conv: int) -> int:
    return 2 * int(math.log2(int(res))) - 5 + conv


# (official key pattern, value from the TF variables) for the generator; groups are resolutions.
_G_RULES: list[tuple[str, Callable[..., np.ndarray]]] = [
    (r"mapping\.w_avg", lambda p: p["dlatent_avg"]),
    (r"mapping\.embed\.weight", lambda p: _dense(p["mapping/LabelEmbed/weight"])),
    (r"mapping\.embed\.bias", lambda p: p["mapping/LabelEmbed/bias"]),
    (r"mapping\.fc(\d+)\.weight", lambda p, i: _dense(p[f"mapping/Dense{i}/weight"])),
    (r"mapping\.fc(\d+)\.bias", lambda p, i: p[f"mapping/Dense{i}/bias"]),
    (r"synthesis\.b4\.const", lambda p: p["synthesis/4x4/Const/const"][0]),
    (r"synthesis\.b4\.conv1\.weight", lambda p: _conv(p["synthesis/4x4/Conv/weight"])),
    (r"synthesis\.b4\.conv1\.bias", lambda p: p["synthesis/4x4/Conv/bias"]),
    (r"synthesis\.b4\.conv1\.noise_const", lambda p: p["synthesis/noise0"][0, 0]),
    (r"synthesis\.b4\.conv1\.noise_strength", lambda p: p["synthesis/4x4/Conv/noise_strength"]),
    (r"synthesis\.b4\.conv1\.affine\.weight", lambda p: _dense(p["synthesis/4x4/Conv/mod_weight"])),
    (r"synthesis\.b4\.conv1\.affine\.bias", lambda p: p["synthesis/4x4/Conv/mod_bias"] + 1),
    (
        r"synthesis\.b(\d+)\.conv0\.weight",
        lambda p, r: _conv_flipped(p[f"synthesis/{r}x{r}/Conv0_up/weight"]),
    ),
    (r"synthesis\.b(\d+)\.conv0\.bias", lambda p, r: p[f"synthesis/{r}x{r}/Conv0_up/bias"]),
    (r"synthesis\.b(\d+)\.conv0\.noise_const", lambda p, r: p[f"synthesis/noise{_noise_index(r, 0)}"][0, 0]),
    (
        r"synthesis\.b(\d+)\.conv0\.noise_strength",
        lambda p, r: p[f"synthesis/{r}x{r}/Conv0_up/noise_strength"],
    ),
    (
        r"synthesis\.b(\d+)\.conv0\.affine\.weight",
        lambda p, r: _dense(p[f"synthesis/{r}x{r}/Conv0_up/mod_weight"]),
    ),
    (r"synthesis\.b(\d+)\.conv0\.affine\.bias", lambda p, r: p[f"synthesis/{r}x{r}/Conv0_up/mod_bias"] + 1),
    (r"synthesis\.b(\d+)\.conv1\.weight", lambda p, r: _conv(p[f"synthesis/{r}x{r}/Conv1/weight"])),
    (r"synthesis\.b(\d+)\.conv1\.bias", lambda p, r: p[f"synthesis/{r}x{r}/Conv1/bias"]),
    (r"synthesis\.b(\d+)\.conv1\.noise_const", lambda p, r: p[f"synthesis/noise{_noise_index(r, 1)}"][0, 0]),
    (r"synthesis\.b(\d+)\.conv1\.noise_strength", lambda p, r: p[f"synthesis/{r}x{r}/Conv1/noise_strength"]),
    (
        r"synthesis\.b(\d+)\.conv1\.affine\.weight",
        lambda p, r: _dense(p[f"synthesis/{r}x{r}/Conv1/mod_weight"]),
    ),
    (r"synthesis\.b(\d+)\.conv1\.affine\.bias", lambda p, r: p[f"synthesis/{r}x{r}/Conv1/mod_bias"] + 1),
    (r"synthesis\.b(\d+)\.torgb\.weight", lambda p, r: _conv(p[f"synthesis/{r}x{r}/ToRGB/weight"])),
    (r"synthesis\.b(\d+)\.torgb\.bias", lambda p, r: p[f"synthesis/{r}x{r}/ToRGB/bias"]),
    (
        r"synthesis\.b(\d+)\.torgb\.affine\.weight",
        lambda p, r: _dense(p[f"synthesis/{r}x{r}/ToRGB/mod_weight"]),
    ),
    (r"synthesis\.b(\d+)\.torgb\.affine\.bias", lambda p, r: p[f"synthesis/{r}x{r}/ToRGB/mod_bias"] + 1),
    (r"synthesis\.b(\d+)\.skip\.weight", lambda p, r: _conv_flipped(p[f"synthesis/{r}x{r}/Skip/weight"])),
]

_D_RULES: list[tuple[str, Callable[..., np.ndarray]]] = [
    (r"b(\d+)\.fromrgb\.weight", lambda p, r: _conv(p[f"{r}x{r}/FromRGB/weight"])),
    (r"b(\d+)\.fromrgb\.bias", lambda p, r: p[f"{r}x{r}/FromRGB/bias"]),
    (r"b(\d+)\.conv0\.weight", lambda p, r: _conv(p[f"{r}x{r}/Conv0/weight"])),
    (r"b(\d+)\.conv0\.bias", lambda p, r: p[f"{r}x{r}/Conv0/bias"]),
    (r"b(\d+)\.conv1\.weight", lambda p, r: _conv(p[f"{r}x{r}/Conv1_down/weight"])),
    (r"b(\d+)\.conv1\.bias", lambda p, r: p[f"{r}x{r}/Conv1_down/bias"]),
    (r"b(\d+)\.skip\.weight", lambda p, r: _conv(p[f"{r}x{r}/Skip/weight"])),
    (r"b4\.conv\.weight", lambda p: _conv(p["4x4/Conv/weight"])),
    (r"b4\.conv\.bias", lambda p: p["4x4/Conv/bias"]),
    (r"b4\.fc\.weight", lambda p: _dense(p["4x4/Dense0/weight"])),
    (r"b4\.fc\.bias", lambda p: p["4x4/Dense0/bias"]),
    (r"b4\.out\.weight", lambda p: _dense(p["Output/weight"])),
    (r"b4\.out\.bias", lambda p: p["Output/bias"]),
]


class _Tracked(dict[str, np.ndarray]):
    """The TF variables, remembering which were used, so that none is silently left behind."""

    def __init__(self, values: dict[str, np.ndarray]) -> None:
        super().__init__(values)
        self.used: set[str] = set()

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self:
            raise FormatError(f"the TensorFlow pickle lacks variable {key}")
        self.used.add(key)
        return super().__getitem__(key)


def _state_from_tf(
    params: dict[str, np.ndarray],
    template: dict[str, torch.Tensor],
    rules: list[tuple[str, Callable[..., np.ndarray]]],
    where: str,
) -> dict[str, torch.Tensor]:
    """Fill every key of our module's state from the TF variables; resample filters are constants of
    the architecture (not variables in TF) and keep the module's values."""
    tracked = _Tracked(params)
    state: dict[str, torch.Tensor] = {}
    for key, ours in template.items():
        if key.endswith(".resample_filter"):
            state[key] = ours.clone()
            continue
        for pattern, value_fn in rules:
            m = re.fullmatch(pattern, key)
            if m:
                # np.array copies into fresh C-contiguous memory and, unlike ascontiguousarray, keeps 0-d
                value = np.array(value_fn(tracked, *m.groups()), dtype=np.float32, order="C", copy=True)
                state[key] = torch.from_numpy(value)
                break
        else:
            raise FormatError(f"{where}: no TensorFlow variable maps to {key}")
    left = sorted(set(tracked) - tracked.used - _IGNORED_VARIABLES)
    if left:
        raise FormatError(f"{where}: TensorFlow variables not understood: {', '.join(left[:8])}")
    return state


def _check_size(build: Callable[[], nn.Module], params: dict[str, np.ndarray], where: str) -> None:
    """Refuse a network the file's variables cannot fill, before allocating it: its configuration comes
    from the file, and a few bytes of it (a huge resolution or fmap_base) would build any size. The
    shapes-only build on torch's "meta" device costs no memory for weights."""
    with torch.device("meta"):
        needed = sum(t.numel() for k, t in build().state_dict().items() if not k.endswith(".resample_filter"))
    held = sum(int(np.size(v)) for v in params.values())
    # Twice over: a variable or two missing is reported by name later; a network far larger than the
    # file is a configuration bomb.
    if needed > 2 * held:
        raise FormatError(f"{where}: its configuration needs {needed} weights, the file holds {held}")


def networks_from_tf(obj: Any, which: Sequence[str] = ("G_ema",)) -> dict[str, nn.Module]:
    """Our modules from a read TF pickle: 'G_ema' is Gs, 'G' and 'D' the training networks."""
    unknown = [w for w in which if w not in NETWORK_NAMES]
    if unknown or not which:
        raise ConfigError(f"which must name some of {', '.join(NETWORK_NAMES)}, got {list(which)}")
    nets = _check_tuple(obj)
    configs: dict[str, GeneratorConfig | DiscriminatorConfig] = {}
    states: dict[str, dict[str, torch.Tensor]] = {}
    for name in which:
        net = nets[_PICKLE_NAMES[name]]
        params = _collect(net)
        if name == "D":
            d_config = discriminator_config_from_tf(net)
            _check_size(functools.partial(Discriminator, d_config), params, f"TensorFlow {net.name}")
            template = Discriminator(d_config).state_dict()
            rules = _D_RULES
            configs[name] = d_config
        else:
            g_config = generator_config_from_tf(net)
            _check_size(functools.partial(build_generator, g_config), params, f"TensorFlow {net.name}")
            template = build_generator(g_config).state_dict()
            rules = _G_RULES
            configs[name] = g_config
        states[name] = _state_from_tf(params, template, rules, f"TensorFlow {net.name}")
    return build_networks(configs, states)


def load_tf_networks(
    path_or_file: PathOrFile, which: Sequence[str] = ("G_ema",), limits: ReadLimits = DEFAULT_LIMITS
) -> dict[str, nn.Module]:
    """`load_official_networks` for TensorFlow pickles: G_ema (= Gs) by default, G and D on request."""
    return networks_from_tf(read_tf_pickle(path_or_file, limits), which)


__all__ = [
    "discriminator_config_from_tf",
    "generator_config_from_tf",
    "load_tf_networks",
    "networks_from_tf",
    "read_tf_pickle",
]
