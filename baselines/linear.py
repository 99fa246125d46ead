"""The linear family: ridge maps from the last L values to the next H.

One map is shared by every channel (channel independence) and fitted in
closed form on every training window. Variants differ in how a window is
normalised and which features the map sees:

- ``linear`` (RLinear): each window minus its mean, over its std (RevIN
  without affine parameters); the forecast is mapped back. The map is fitted
  to minimise the error of the mapped-back forecast (each window weighted by
  its variance, as RevIN models are trained) and has no intercept, so a
  window with a (nearly) constant context cannot blow its normalised target
  up into the fit: dividing by a tiny std once made such windows (rain
  gauges, sentinel-inflated channels) dominate the intercept and every
  forecast with it. The window scale also has a floor of ``SCALE_FLOOR``
  training standard deviations.
- ``nlinear`` (NLinear): each window minus its last value; no intercept
  either (a fitted intercept is a drift every window gets, flat ones too).
- ``dlinear`` (DLinear): the window split by a moving average into trend and
  remainder, one map each (a ridge on the two parts side by side). By default
  on RevIN-normalised windows like ``linear``; the DLinear paper's raw
  windows (``linear.dlinear_normalization: none``) with their learned
  absolute levels do not follow a level shift (ETTh1's test months, a 5-sd
  shift in the robustness zoo).

The ridge strength is chosen on the validation windows from ``alphas``
(per-sample strengths: the penalty is alpha times the number of training
rows), using one eigendecomposition of the Gram matrix for every alpha.

References:
    Zeng et al., "Are Transformers Effective for Time Series Forecasting?",
    AAAI 2023 (DLinear, NLinear); Li et al., "Revisiting Long-term Time
    Series Forecasting: An Investigation on Linear Mapping", 2023 (RLinear).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Self

import numpy as np

from baselines.config import LinearConfig
from kernel.contract import Member, Segment, TaskSpec, as_segments, as_values, check_context, not_fitted
from kernel.protocol import segment_windows, windows

CHUNK = 1024  # windows per block when accumulating Gram matrices (bounds the float64 temporaries)
SCALE_FLOOR = 1e-3  # smallest window std (RevIN), in training standard deviations (data are scaled on train)


def moving_average(x: np.ndarray, kernel: int) -> np.ndarray:
    """DLinear's trend: a centred moving average with edge replication.

    Args:
        x: [n, L].
        kernel: odd window length.

    Returns:
        [n, L] trend.
    """
    pad = (kernel - 1) // 2
    padded = np.concatenate([np.repeat(x[:, :1], pad, 1), x, np.repeat(x[:, -1:], kernel - 1 - pad, 1)], 1)
    csum = np.cumsum(padded, axis=1, dtype=np.float64)
    csum = np.concatenate([np.zeros((x.shape[0], 1)), csum], axis=1)
    return (csum[:, kernel:] - csum[:, :-kernel]) / kernel


class _Stats:
    """Weighted Gram statistics of a set of windows (additive: pieces of data merge into a whole)."""

    def __init__(self) -> None:
        self.gram: np.ndarray | None = None
        self.xty: np.ndarray | None = None
        self.x_sum: np.ndarray | None = None
        self.y_sum: np.ndarray | None = None
        self.n_rows, self.w_sum = 0, 0.0

    def add(self, x: np.ndarray, y: np.ndarray, sw: np.ndarray) -> None:
        """Rows x [n, D], targets y [n, H], sample weights sw [n]."""
        xw = x * sw[:, None]
        self.merge_parts(xw.T @ x, xw.T @ y, xw.sum(0), sw @ y, x.shape[0], float(sw.sum()))

    def merge(self, other: _Stats) -> None:
        if other.gram is not None:
            self.merge_parts(other.gram, other.xty, other.x_sum, other.y_sum, other.n_rows, other.w_sum)

    def merge_parts(self, gram: np.ndarray, xty: np.ndarray, x_sum: np.ndarray, y_sum: np.ndarray, n: int,
                    w: float) -> None:
        if self.gram is None:
            self.gram, self.xty, self.x_sum, self.y_sum = gram.copy(), xty.copy(), x_sum.copy(), y_sum.copy()
        else:
            self.gram += gram
            self.xty += xty
            self.x_sum += x_sum
            self.y_sum += y_sum
        self.n_rows += n
        self.w_sum += w


def _val_parts(val: np.ndarray | Segment | Sequence[Segment] | None) -> list[np.ndarray]:
    """A validation part given as an array, a segment or several segments (one per series) -> [T_i, C] arrays."""
    if val is None:
        return []
    if isinstance(val, np.ndarray | Segment):
        return [as_values(val)]
    return [as_values(v) for v in val]


class RidgeLinear(Member):
    """Closed-form ridge forecaster shared across channels.

    Args:
        normalization: "revin" (window mean / std), "last" (subtract the last
            value) or "none".
        alphas: candidate per-sample ridge strengths, chosen on validation
            (without validation: the middle one; one candidate: fixed).
        decomposition: 0 for a single map; an odd kernel length for the
            DLinear trend / remainder split.
    """

    name = "linear"
    horizon_agnostic = False
    supports_fit_many = True  # fit_many reads every window once for every training set

    def __init__(
        self,
        normalization: str = "revin",
        alphas: tuple[float, ...] = LinearConfig.alphas,
        decomposition: int = 0,
    ) -> None:
        if normalization not in ("revin", "last", "none"):
            raise ValueError(f"`normalization` must be revin, last or none; got {normalization!r}.")
        self.normalization = normalization
        self.alphas = tuple(alphas)
        self.decomposition = decomposition

    # --- normalisation and features --------------------------------------
    def _normalise(self, ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ctx [n, L] -> (normalised [n, L], shift [n, 1], scale [n, 1])."""
        ctx = ctx.astype(np.float64)
        if self.normalization == "revin":
            shift = ctx.mean(axis=1, keepdims=True)
            scale = np.maximum(ctx.std(axis=1, keepdims=True), SCALE_FLOOR)
        elif self.normalization == "last":
            shift, scale = ctx[:, -1:], np.ones((ctx.shape[0], 1))
        else:
            shift, scale = np.zeros((ctx.shape[0], 1)), np.ones((ctx.shape[0], 1))
        return (ctx - shift) / scale, shift, scale

    def _features(self, x: np.ndarray) -> np.ndarray:
        """Normalised [n, L] -> design matrix [n, D] (D = L, or 2L for DLinear)."""
        if self.decomposition:
            trend = moving_average(x, self.decomposition)
            x = np.concatenate([trend, x - trend], axis=1)
        return x

    @property
    def intercept(self) -> bool:
        """Only un-normalised windows get an intercept (see the module docstring)."""
        return self.normalization == "none"

    def _blocks(self, segments: Sequence[Segment], L: int, H: int
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(features [n, D], normalised targets [n, H], sample weights [n]) over every window of every segment.

        The weight is the squared window scale, so that the fit minimises the
        error of the de-normalised forecast (1 without a scale).
        """
        for ctx, tgt, _ in segment_windows(segments, L, H):  # [N, C, L], [N, C, H]
            for i in range(0, ctx.shape[0], CHUNK):
                c = ctx[i : i + CHUNK].reshape(-1, L)
                y = tgt[i : i + CHUNK].reshape(-1, H).astype(np.float64)
                x, shift, scale = self._normalise(c)
                yield self._features(x), (y - shift) / scale, scale[:, 0] ** 2

    # --- sufficient statistics -------------------------------------------
    def _stats(self, segments: Sequence[Segment], L: int, H: int) -> _Stats:
        """Weighted Gram statistics of every window of ``segments`` (alpha-free)."""
        st = _Stats()
        for x, y, sw in self._blocks(segments, L, H):
            st.add(x, y, sw)
        return st

    def _solve(self, st: _Stats, val: list[np.ndarray], L: int, H: int) -> None:
        """Choose alpha on the windows of the ``val`` parts (or take the middle / only one); set the map."""
        if st.gram is None:
            raise ValueError(f"{self.name}: no training window of context_length {L} + horizon {H} fits in `train`.")
        gram, xty = st.gram.copy(), st.xty.copy()
        # With an intercept, centre (the intercept is not shrunk); then solve
        # (G + a W I) w = X'y for every alpha through one eigendecomposition
        # (W: the total sample weight, n rows when unweighted).
        if self.intercept:
            x_mean, y_mean = st.x_sum / st.w_sum, st.y_sum / st.w_sum
            gram -= st.w_sum * np.outer(x_mean, x_mean)
            xty -= st.w_sum * np.outer(x_mean, y_mean)
        else:
            x_mean, y_mean = np.zeros(gram.shape[0]), np.zeros(H)
        evals, evecs = np.linalg.eigh(gram)
        proj = evecs.T @ xty  # [D, H]

        def weights(alpha: float) -> tuple[np.ndarray, np.ndarray]:
            w = evecs @ (proj / (evals + alpha * st.w_sum)[:, None])  # [D, H]
            return w, y_mean - x_mean @ w

        self.val_mse_by_alpha_: dict[float, float] = {}
        val = [v for v in val if v.shape[0] >= L + H]
        if val and len(self.alphas) > 1:
            sse = np.zeros(len(self.alphas))
            count = 0
            ws = [weights(a) for a in self.alphas]
            for part in val:
                ctx, tgt = windows(part, L, H)
                for i in range(0, ctx.shape[0], CHUNK):
                    c = ctx[i : i + CHUNK].reshape(-1, L)
                    y = tgt[i : i + CHUNK].reshape(-1, H)
                    x, shift, scale = self._normalise(c)
                    feats = self._features(x)
                    for k, (w, b) in enumerate(ws):
                        pred = (feats @ w + b) * scale + shift
                        sse[k] += float(np.square(pred - y).sum())
                    count += y.size
            self.val_mse_by_alpha_ = {a: float(s / count) for a, s in zip(self.alphas, sse, strict=True)}
            self.alpha_ = float(self.alphas[int(np.argmin(sse))])
        else:
            self.alpha_ = float(self.alphas[len(self.alphas) // 2])
        w, b = weights(self.alpha_)
        self.weights_, self.bias_ = w, b  # [D, H], [H] float64
        self.context_length_, self.horizon_ = L, H
        self.n_train_rows_ = st.n_rows

    # --- contract ---------------------------------------------------------
    def fit(self, train: np.ndarray | Sequence[Segment], val: np.ndarray | Segment | Sequence[Segment] | None,
            spec: TaskSpec) -> Self:
        """Fit on every window of ``train`` (scaled [T, C], or segments); choose alpha on ``val`` (one part or several)."""
        L, H = spec.context_length, spec.horizon
        self._solve(self._stats(as_segments(train), L, H), _val_parts(val), L, H)
        return self

    def fit_many(self, trains: Sequence[Sequence[Segment]], val: np.ndarray | Segment | Sequence[Segment] | None,
                 spec: TaskSpec) -> list[Self]:
        """Fit on ``trains[0]`` (alpha chosen on ``val``), then frozen copies on every other training set.

        Equal to ``[m := self.fit(trains[0], val, spec)] + [m.frozen().fit(t, None, spec) for t in trains[1:]]``,
        but every window is read once: the windows (by start row in the series) are cut into pieces by every
        set's borders, each piece's statistics are computed once and added to each set that holds it. The
        cross-fitting stage fits a member about K + 3 times on overlapping data; this makes it one pass.
        """
        L, H = spec.context_length, spec.horizon
        sets = [[s for s in as_segments(t) if len(s) >= L + H] for t in trains]
        ranges = [[(s.start, s.start + len(s) - L - H + 1, s) for s in segs] for segs in sets]
        cuts = sorted({b for rs in ranges for lo, hi, _ in rs for b in (lo, hi)})
        totals = [_Stats() for _ in sets]
        # A set's segments do not overlap: the range holding a piece is the last one starting at or before it
        # (a binary search per set, so that many series, thousands of segments per set, stay one linear pass).
        ranges = [sorted(rs, key=lambda r: r[0]) for rs in ranges]
        firsts = [np.array([a for a, _, _ in rs], dtype=np.int64) for rs in ranges]

        def holder(i: int, lo: int, hi: int) -> Segment | None:
            j = int(np.searchsorted(firsts[i], lo, side="right")) - 1
            return ranges[i][j][2] if j >= 0 and hi <= ranges[i][j][1] else None

        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            held = [(i, holder(i, lo, hi)) for i in range(len(sets))]
            owners = [i for i, seg in held if seg is not None]
            if not owners:
                continue
            seg = held[owners[0]][1]
            piece = Segment(seg.values[lo - seg.start : hi - seg.start + L + H - 1], lo)
            st = self._stats([piece], L, H)
            for i in owners:
                totals[i].merge(st)
        self._solve(totals[0], _val_parts(val), L, H)
        out = [self]
        for st in totals[1:]:
            twin = self.frozen()
            twin._solve(st, [], L, H)
            out.append(twin)
        return out

    def frozen(self) -> Self:
        """An unfitted copy with the ridge strength fixed to the one this fit chose."""
        if not hasattr(self, "alpha_"):
            raise not_fitted(self.name)
        twin = type(self)(self.normalization, (self.alpha_,), self.decomposition)
        twin.name = self.name
        return twin

    def describe(self) -> dict[str, Any]:
        """The ridge strength chosen ({} before fit)."""
        return {"alpha": self.alpha_} if hasattr(self, "alpha_") else {}

    def predict(self, context: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        """context [N, C, L] -> forecast [N, C, H]."""
        if not hasattr(self, "weights_"):
            raise not_fitted(self.name)
        context = check_context(context, self.context_length_)
        n, c, L = context.shape
        x, shift, scale = self._normalise(context.reshape(-1, L))
        pred = (self._features(x) @ self.weights_ + self.bias_) * scale + shift
        return pred.reshape(n, c, self.horizon_).astype(np.float32)
