"""The linear family: ridge maps from the last L values to the next H.

One map is shared by every channel (channel independence) and fitted in
closed form on every training window. Variants differ in how a window is
normalised and which features the map sees:

- ``linear`` (RLinear): each window minus its mean, over its std (RevIN
  without affine parameters); the forecast is mapped back.
- ``nlinear`` (NLinear): each window minus its last value.
- ``dlinear`` (DLinear): the window split by a moving average into trend and
  remainder, one map each (a ridge on the two parts side by side).

The ridge strength is chosen on the validation windows from ``alphas``
(per-sample strengths: the penalty is alpha times the number of training
rows), using one eigendecomposition of the Gram matrix for every alpha.

References:
    Zeng et al., "Are Transformers Effective for Time Series Forecasting?",
    AAAI 2023 (DLinear, NLinear); Li et al., "Revisiting Long-term Time
    Series Forecasting: An Investigation on Linear Mapping", 2023 (RLinear).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Self

import numpy as np

from hybrid.contract import TaskSpec, check_context
from hybrid.protocol import windows

CHUNK = 4096  # windows per block when accumulating Gram matrices
EPS = 1e-5


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


class RidgeLinear:
    """Closed-form ridge forecaster shared across channels.

    Args:
        normalization: "revin" (window mean / std), "last" (subtract the last
            value) or "none".
        alphas: candidate per-sample ridge strengths, chosen on validation.
        decomposition: 0 for a single map; an odd kernel length for the
            DLinear trend / remainder split.
    """

    name = "linear"
    horizon_agnostic = False

    def __init__(
        self,
        normalization: str = "revin",
        alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 0.1, 1.0),
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
            scale = ctx.std(axis=1, keepdims=True) + EPS
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

    def _blocks(self, part: np.ndarray, L: int, H: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(features [n, D], normalised targets [n, H]) over all windows of a part."""
        ctx, tgt = windows(part, L, H)  # [N, C, L], [N, C, H]
        for i in range(0, ctx.shape[0], CHUNK):
            c = ctx[i : i + CHUNK].reshape(-1, L)
            y = tgt[i : i + CHUNK].reshape(-1, H).astype(np.float64)
            x, shift, scale = self._normalise(c)
            yield self._features(x), (y - shift) / scale

    # --- contract ---------------------------------------------------------
    def fit(self, train: np.ndarray, val: np.ndarray | None, spec: TaskSpec) -> Self:
        L, H = spec.context_length, spec.horizon
        gram = xty = x_sum = y_sum = None
        n_rows = 0
        for x, y in self._blocks(train, L, H):
            if gram is None:
                gram, xty, x_sum, y_sum = x.T @ x, x.T @ y, x.sum(0), y.sum(0)
            else:
                gram += x.T @ x
                xty += x.T @ y
                x_sum += x.sum(0)
                y_sum += y.sum(0)
            n_rows += x.shape[0]
        assert gram is not None and xty is not None and x_sum is not None and y_sum is not None
        # Centre (the intercept is not shrunk), then solve (G + a n I) w = X'y
        # for every alpha through one eigendecomposition of the centred Gram.
        x_mean, y_mean = x_sum / n_rows, y_sum / n_rows
        gram -= n_rows * np.outer(x_mean, x_mean)
        xty -= n_rows * np.outer(x_mean, y_mean)
        evals, evecs = np.linalg.eigh(gram)
        proj = evecs.T @ xty  # [D, H]

        def weights(alpha: float) -> tuple[np.ndarray, np.ndarray]:
            w = evecs @ (proj / (evals + alpha * n_rows)[:, None])  # [D, H]
            return w, y_mean - x_mean @ w

        self.val_mse_by_alpha_: dict[float, float] = {}
        if val is not None and len(self.alphas) > 1 and val.shape[0] >= L + H:
            sse = np.zeros(len(self.alphas))
            count = 0
            ws = [weights(a) for a in self.alphas]
            ctx, tgt = windows(val, L, H)
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
        self.n_train_rows_ = n_rows
        return self

    def predict(self, context: np.ndarray) -> np.ndarray:
        """context [N, C, L] -> forecast [N, C, H]."""
        context = check_context(context, self.context_length_)
        n, c, L = context.shape
        x, shift, scale = self._normalise(context.reshape(-1, L))
        pred = (self._features(x) @ self.weights_ + self.bias_) * scale + shift
        return pred.reshape(n, c, self.horizon_).astype(np.float32)
