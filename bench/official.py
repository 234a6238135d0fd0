"""NVIDIA's official StyleGAN code, imported at run time from a checkout the user supplies.

No NVIDIA code is part of this repository: `--official-repo PATH` names a checkout of NVlabs/stylegan3 or
NVlabs/stylegan2-ada-pytorch, and `load_official` imports its `training` and `torch_utils` packages from
there. Both were written for PyTorch 1.7-1.11; on the PyTorch we run (2.x) a few things need help, which we
give at run time, in this process only, never by editing their files (each shim is listed in
`OfficialCode.shims` and in bench/README.md):

- `pkg_resources` (setuptools) is gone from recent environments; stylegan3's `conv2d_gradfix` and
  `grid_sample_gradfix` import `parse_version` from it at import time. We register a stand-in module
  whose `parse_version` is `packaging.version.parse`.
- The custom CUDA ops (`bias_act`, `upfirdn2d`, `filtered_lrelu`) compile with nvcc on first use. With
  `impl="ref"`, or when that build fails, their `_init` is replaced by one that returns False, which is
  the official code's own switch to its reference (plain PyTorch) path. On CPU the reference path is
  taken anyway.
- stylegan2-ada-pytorch's `conv2d_gradfix` calls `aten::cudnn_convolution_backward_weight`, removed in
  PyTorch 1.11; we leave that custom op off there (its default). stylegan3's version knows the newer API.

The mapping from our configs to the official constructor arguments lives here too, so that one
`GeneratorConfig` describes the network both sides build.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from gan.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    StyleGAN2SynthesisConfig,
    StyleGAN3SynthesisConfig,
)

Layout = Literal["stylegan3", "stylegan2-ada"]
Impl = Literal["cuda", "ref"]
_PLUGIN_OPS = ("bias_act", "upfirdn2d", "filtered_lrelu")


class OfficialCodeError(RuntimeError):
    """The official checkout is missing, of an unknown layout, or cannot build what a bench needs."""


@dataclass
class OfficialCode:
    repo: Path
    layout: Layout
    commit: str | None
    impl: Impl  # custom CUDA ops ("cuda") or the official reference path ("ref")
    networks_sg2: types.ModuleType
    networks_sg3: types.ModuleType | None  # stylegan2-ada-pytorch has no StyleGAN3
    loss: types.ModuleType
    augment: types.ModuleType
    ops: dict[str, types.ModuleType]
    shims: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "repo": str(self.repo),
            "layout": self.layout,
            "commit": self.commit,
            "impl": self.impl,
            "shims": list(self.shims),
        }


def _detect_layout(repo: Path) -> Layout:
    if (repo / "training" / "networks_stylegan3.py").is_file():
        return "stylegan3"
    if (repo / "training" / "networks.py").is_file():
        return "stylegan2-ada"
    raise OfficialCodeError(
        f"--official-repo {repo}: no training/networks_stylegan3.py (NVlabs/stylegan3) nor "
        "training/networks.py (NVlabs/stylegan2-ada-pytorch) found"
    )


def _git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None  # an exported tree (git archive) has no history: the caller records the path
    return out.stdout.strip() or None


def _shim_pkg_resources(shims: list[str]) -> None:
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse

        stand_in = types.ModuleType("pkg_resources")
        stand_in.parse_version = parse  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = stand_in
        shims.append("pkg_resources stand-in (parse_version = packaging.version.parse)")


def _use_reference_ops(ops: dict[str, types.ModuleType], names: list[str], shims: list[str]) -> None:
    for name in names:
        ops[name]._init = lambda: False  # type: ignore[attr-defined]
    if names:
        shims.append(f"custom ops off, official reference path: {', '.join(names)}")


def _build_plugins(ops: dict[str, types.ModuleType], shims: list[str]) -> list[str]:
    """Compile the custom CUDA ops now (not inside a timed call); return those that failed."""
    failed = []
    for name in _PLUGIN_OPS:
        if name not in ops:
            continue
        try:
            ok = ops[name]._init()
        except Exception as exc:  # their build raises anything from nvcc, ninja or the loader
            shims.append(f"{name} plugin build failed: {type(exc).__name__}: {str(exc)[:200]}")
            ok = False
        if not ok:
            failed.append(name)
    return failed


def load_official(repo: Path, impl: Impl = "ref", device: torch.device | None = None) -> OfficialCode:
    """Import the official code from `repo`. `impl="cuda"` builds the custom ops (CUDA only), falling back
    to the reference path for any op whose build fails, which the returned `shims` then says."""
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise OfficialCodeError(f"--official-repo {repo}: not a directory")
    layout = _detect_layout(repo)
    for name in ("training", "torch_utils", "dnnlib"):
        loaded = sys.modules.get(name)
        if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(repo)):
            raise OfficialCodeError(f"a different '{name}' package is already imported: {loaded!r}")
    shims: list[str] = []
    _shim_pkg_resources(shims)
    sys.path.insert(0, str(repo))
    try:
        ops = {
            name: importlib.import_module(f"torch_utils.ops.{name}")
            for name in (*_PLUGIN_OPS, "conv2d_gradfix", "grid_sample_gradfix")
            if (repo / "torch_utils" / "ops" / f"{name}.py").is_file()
        }
        if layout == "stylegan3":
            networks_sg2 = importlib.import_module("training.networks_stylegan2")
            networks_sg3: types.ModuleType | None = importlib.import_module("training.networks_stylegan3")
        else:
            networks_sg2 = importlib.import_module("training.networks")
            networks_sg3 = None
        loss = importlib.import_module("training.loss")
        augment = importlib.import_module("training.augment")
    except ImportError as exc:
        raise OfficialCodeError(f"cannot import the official code from {repo}: {exc}") from exc

    on_cuda = device is not None and device.type == "cuda"
    if impl == "cuda" and on_cuda:
        failed = _build_plugins(ops, shims)
        _use_reference_ops(ops, failed, shims)
        if failed and len(failed) == len([n for n in _PLUGIN_OPS if n in ops]):
            impl = "ref"
    else:
        # On CPU the reference path is taken anyway; making it explicit keeps a CPU run from compiling.
        _use_reference_ops(ops, [n for n in _PLUGIN_OPS if n in ops], shims)
        impl = "ref"
    return OfficialCode(
        repo=repo,
        layout=layout,
        commit=_git_commit(repo),
        impl=impl,
        networks_sg2=networks_sg2,
        networks_sg3=networks_sg3,
        loss=loss,
        augment=augment,
        ops=ops,
        shims=shims,
    )


def enable_training_gradfix(code: OfficialCode) -> None:
    """What the official training loop switches on for CUDA (conv2d/grid_sample double-backward ops)."""
    if code.layout == "stylegan3":
        code.ops["conv2d_gradfix"].enabled = True  # type: ignore[attr-defined]
        code.ops["grid_sample_gradfix"].enabled = True  # type: ignore[attr-defined]
    else:
        code.shims.append("conv2d_gradfix left off (needs an op removed in PyTorch 1.11)")


# Our configs -> the official constructor arguments --------------------------------------------------


def official_generator_kwargs(config: GeneratorConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(top-level kwargs, synthesis kwargs) of the official `Generator` for the same network as `config`."""
    m = config.mapping
    top = dict(
        z_dim=config.z_dim,
        c_dim=config.c_dim,
        w_dim=config.w_dim,
        img_resolution=config.img_resolution,
        img_channels=config.img_channels,
    )
    s = config.synthesis
    if isinstance(s, StyleGAN2SynthesisConfig):
        top["mapping_kwargs"] = dict(
            num_layers=m.num_layers,
            embed_features=m.embed_features,
            layer_features=m.layer_features,
            activation=m.activation,
            lr_multiplier=m.lr_multiplier,
            w_avg_beta=m.w_avg_beta,
        )
        synthesis = dict(
            channel_base=s.channel_base,
            channel_max=s.channel_max,
            num_fp16_res=s.num_fp16_res,
            conv_clamp=s.conv_clamp,
            architecture=s.architecture,
            resample_filter=list(s.resample_filter),
            use_noise=s.use_noise,
            activation=s.activation,
        )
        return top, synthesis
    assert isinstance(s, StyleGAN3SynthesisConfig)
    top["mapping_kwargs"] = dict(
        num_layers=m.num_layers, lr_multiplier=m.lr_multiplier, w_avg_beta=m.w_avg_beta
    )
    synthesis = dict(
        channel_base=s.channel_base,
        channel_max=s.channel_max,
        num_layers=s.num_layers,
        num_critical=s.num_critical,
        first_cutoff=s.first_cutoff,
        first_stopband=s.first_stopband,
        last_stopband_rel=s.last_stopband_rel,
        margin_size=s.margin_size,
        output_scale=s.output_scale,
        num_fp16_res=s.num_fp16_res,
        conv_clamp=s.conv_clamp,
        conv_kernel=s.conv_kernel,
        use_radial_filters=s.use_radial_filters,
        magnitude_ema_beta=s.magnitude_ema_beta,
        filter_size=s.filter_size,
        lrelu_upsampling=s.lrelu_upsampling,
    )
    return top, synthesis


def build_official_generator(code: OfficialCode, config: GeneratorConfig, **extra: Any) -> torch.nn.Module:
    """`extra`: official-only constructor arguments (e.g. stylegan3's `fused_modconv_default`)."""
    top, synthesis = official_generator_kwargs(config)
    synthesis.update(extra)
    if config.architecture == "stylegan2":
        if code.layout == "stylegan3":  # stylegan3's copy takes the synthesis arguments as **kwargs
            return code.networks_sg2.Generator(**top, **synthesis)
        return code.networks_sg2.Generator(**top, synthesis_kwargs=synthesis)
    if code.networks_sg3 is None:
        raise OfficialCodeError(
            f"{config.architecture} needs NVlabs/stylegan3; {code.repo} is stylegan2-ada-pytorch"
        )
    return code.networks_sg3.Generator(**top, **synthesis)


def build_official_discriminator(code: OfficialCode, config: DiscriminatorConfig) -> torch.nn.Module:
    m = config.mapping
    return code.networks_sg2.Discriminator(
        c_dim=config.c_dim,
        img_resolution=config.img_resolution,
        img_channels=config.img_channels,
        architecture=config.architecture,
        channel_base=config.channel_base,
        channel_max=config.channel_max,
        num_fp16_res=config.num_fp16_res,
        conv_clamp=config.conv_clamp,
        cmap_dim=config.cmap_dim,
        block_kwargs=dict(activation=config.activation),
        mapping_kwargs=dict(
            num_layers=m.num_layers,
            embed_features=m.embed_features,
            layer_features=m.layer_features,
            activation=m.activation,
            lr_multiplier=m.lr_multiplier,
        ),
        epilogue_kwargs=dict(
            mbstd_group_size=config.mbstd_group_size,
            mbstd_num_channels=config.mbstd_num_channels,
            activation=config.activation,
        ),
    )


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Official -> ours, key for key: our networks keep the official parameter and buffer paths."""
    result = dst.load_state_dict(src.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
