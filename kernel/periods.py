"""Period detection on the training part: FFT amplitude, confirmed by the ACF.

A candidate period comes from a peak of the amplitude spectrum (as in
TimesNet / Time-LLM's ``FFT_for_Period``); it is kept only if the
autocorrelation has a local maximum near it that is clearly positive, which
rejects the low-frequency bins that trends put at the top of any spectrum.
Candidates are refined to the lag of that ACF maximum and ranked by amplitude.

References:
    Wu et al., "TimesNet", ICLR 2023 (FFT periods); Wang, Smith & Hyndman,
    "Characteristic-based clustering for time series data", 2006 (ACF checks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACF_THRESHOLD = 0.2  # an ACF peak below this is not a period
N_CANDIDATES = 32  # spectral peaks examined per series


@dataclass(frozen=True)
class Periods:
    """Detected periods, strongest first.

    Attributes:
        dominant: the dataset's periods (all channels together).
        per_channel: each channel's own periods.
        strength: ACF value at each dominant period.
    """

    dominant: tuple[int, ...]
    per_channel: tuple[tuple[int, ...], ...]
    strength: tuple[float, ...]

    def to_dict(self) -> dict[str, list]:
        return {
            "dominant": list(self.dominant),
            "per_channel": [list(p) for p in self.per_channel],
            "strength": [round(s, 4) for s in self.strength],
        }


def _prepare(x: np.ndarray) -> np.ndarray:
    """z-score and remove a linear trend, per column of x [T, C]."""
    x = np.asarray(x, dtype=np.float64)
    t = np.arange(x.shape[0], dtype=np.float64)
    t -= t.mean()
    x = x - x.mean(axis=0)
    slope = (t @ x) / max(float(t @ t), 1e-12)
    x = x - np.outer(t, slope)
    std = x.std(axis=0)
    # a column that is (numerically) a straight line has nothing periodic left
    flat = std <= 1e-9 * np.maximum(1.0, np.abs(x).max(axis=0))
    return np.where(flat, 0.0, x / np.where(std > 0, std, 1.0))


def autocorrelation(x: np.ndarray, max_lag: int, axis: int = -1, eps: float = 0.0) -> np.ndarray:
    """Sample autocorrelation along ``axis`` for lags 0..max_lag, via the FFT.

    The series is zero-padded to at least twice its length, so this is the
    linear autocorrelation ``sum_t x[t] x[t + k] / (sum_t x[t]^2 + eps)``, not
    the circular one. ``x`` is not centred here: centre (or detrend) it first.

    Args:
        x: values with the time steps along ``axis`` (e.g. [T, C] with axis 0,
            or windows [N, C, L] with axis -1).
        max_lag: the largest lag returned (lags beyond the length are 0).
        axis: the time axis.
        eps: added to the lag-0 sum before dividing (0: a series of zeros
            gives 0 at every lag).

    Returns:
        float64 array shaped like ``x`` with ``axis`` replaced by the
        ``max_lag + 1`` lags; 1 at lag 0 for a non-zero series (with eps 0).
    """
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    n = x.shape[-1]
    size = 1 << int(np.ceil(np.log2(max(2 * n, max_lag + 1, 2))))
    f = np.fft.rfft(x, n=size, axis=-1)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=-1)[..., : max_lag + 1]
    acov[..., n:] = 0.0  # lags past the length correlate nothing (the padding leaves rounding noise there)
    denom = acov[..., :1] + eps
    return np.moveaxis(acov / np.where(denom > 0, denom, 1.0), -1, axis)


def _rank(amplitude: np.ndarray, acf: np.ndarray, n: int, k: int, max_period: int) -> list[tuple[int, float, float]]:
    """Top-k (period, amplitude, acf) from one spectrum and one ACF curve."""
    order = np.argsort(amplitude[1:])[::-1] + 1  # skip the zero frequency
    found: list[tuple[int, float, float]] = []
    for idx in order[:N_CANDIDATES]:
        p = n / idx
        if p < 2 or p > max_period:
            continue
        lo, hi = max(2, int(np.floor(p * 0.9))), min(max_period, int(np.ceil(p * 1.1)))
        if hi < lo:
            continue
        lag = lo + int(np.argmax(acf[lo : hi + 1]))
        if lag <= 2 or lag >= len(acf) - 1:
            continue
        peak = acf[lag]
        if peak < ACF_THRESHOLD or peak < acf[lag - 1] or peak < acf[lag + 1]:
            continue
        if any(abs(lag - q) <= max(1, 0.1 * q) for q, _, _ in found):
            continue
        found.append((lag, float(amplitude[idx]), float(peak)))
        if len(found) == k:
            break
    return found


def detect_periods(train: np.ndarray, k: int = 3, max_period: int | None = None) -> Periods:
    """Find the top-k periods of a training part.

    Args:
        train: values [T, C] (scaled or not).
        k: how many periods to keep per series.
        max_period: longest period considered; default T // 3 (at least three
            cycles must be seen).

    Returns:
        :class:`Periods`; empty tuples where nothing periodic was found.
    """
    train = np.asarray(train)
    n, c = train.shape
    max_period = min(max_period or n // 3, n // 3)
    if n < 8 or max_period < 3:
        return Periods((), tuple(() for _ in range(c)), ())
    x = _prepare(train)
    amplitude = np.abs(np.fft.rfft(x, axis=0))  # [F, C]
    acf = autocorrelation(x, max_period + 1, axis=0)  # [max_period + 2, C]
    per_channel = tuple(
        tuple(p for p, _, _ in _rank(amplitude[:, j], acf[:, j], n, k, max_period)) for j in range(c)
    )
    dominant = _rank(amplitude.mean(axis=1), acf.mean(axis=1), n, k, max_period)
    return Periods(
        dominant=tuple(p for p, _, _ in dominant),
        per_channel=per_channel,
        strength=tuple(s for _, _, s in dominant),
    )
