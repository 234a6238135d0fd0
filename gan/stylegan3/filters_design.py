"""Low-pass filter design for the alias-free layers (StyleGAN3 paper, Section 3.2 and Appendix C).

Every resampling step in StyleGAN3 is an ideal low-pass filter approximated by a windowed sinc (config T,
separable) or a windowed jinc (config R, radially symmetric so that rotations stay alias-free). The taps
are designed once, in float64 with SciPy exactly as the official `SynthesisLayer.design_lowpass_filter`
does, and stored as float32 buffers (`up_filter`, `down_filter`), so an imported network carries the
same taps it was trained with.
"""

from __future__ import annotations

import numpy as np
import torch

from gan.errors import ConfigError


def _check_band(numtaps: int, cutoff: float, width: float, fs: float) -> None:
    if numtaps < 1:
        raise ConfigError(f"a low-pass filter needs at least one tap, got numtaps={numtaps}")
    if not 0 < cutoff < fs / 2:
        raise ConfigError(f"cutoff must lie in (0, fs/2) = (0, {fs / 2:g}), got {cutoff:g}")
    if width <= 0:
        raise ConfigError(f"transition band width must be positive, got {width:g}")


# Windowed sinc (Kaiser window), applied separably along x and y: config T.
def kaiser_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor:
    """1-D FIR taps [numtaps]; `width` is the full transition band (2 f_h) in the units of `fs`.

    `firwin` picks the Kaiser beta from the attenuation the band allows and scales the taps to unit
    gain at DC, so a constant input keeps its value through the layer.
    """
    _check_band(numtaps, cutoff, width, fs)
    # SciPy here, not at the top: gan.generator imports this module on every start-up path (CLI, workers),
    # and importing scipy.signal costs about 0.8 s that a StyleGAN2 model never needs.
    import scipy.signal

    taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
    return torch.as_tensor(taps, dtype=torch.float32)


# Windowed jinc, the 2-D radially symmetric ideal low-pass (paper Appendix C.2): config R.
def jinc_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor:
    """2-D FIR taps [numtaps, numtaps]: jinc(2 f_c r) times the outer product of the Kaiser window.

    The window's beta is derived from the same attenuation rule `firwin` uses for the 1-D case, and the
    taps are normalised to sum to one (unit DC gain).
    """
    _check_band(numtaps, cutoff, width, fs)
    # SciPy deferred as in kaiser_lowpass: about 0.8 s on every start-up path otherwise.
    import scipy.signal
    import scipy.special

    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs  # tap positions in units of the image
    r = np.hypot(*np.meshgrid(x, x))
    # The continuous filter is J1(2 pi f_c r) / (pi r); its limit at r = 0 is f_c (only reached with an
    # odd number of taps; the official schedules always use even counts).
    with np.errstate(divide="ignore", invalid="ignore"):
        taps = np.where(r > 0, scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r), cutoff)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    taps = taps * np.outer(window, window)
    taps = taps / np.sum(taps)
    return torch.as_tensor(taps, dtype=torch.float32)


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """Taps for one resampling step, or None for the identity (one tap: no resampling happens).

    None rather than a [1] tensor mirrors the official layers, whose `up_filter` / `down_filter`
    buffers are then absent from the state dict.
    """
    if numtaps == 1:
        return None
    if radial:
        return jinc_lowpass(numtaps, cutoff, width, fs)
    return kaiser_lowpass(numtaps, cutoff, width, fs)
