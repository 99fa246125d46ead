"""Prompt-as-prefix: window statistics -> text -> token ids, outside ``forward``.

The statistics of every window are computed at once with numpy, the texts are
assembled with vectorised string operations, and the whole batch of texts is
tokenised in one call of the fast tokenizer. The network only ever sees the
cached token ids; it never builds or tokenises a string (the reference
Time-LLM code does both in a Python loop inside ``forward``, on every step).

Statistics are rounded to three significant digits so that the text of a
window is stable (the same window always gives the same ids).

References:
    Jin et al., "Time-LLM: Time Series Forecasting by Reprogramming Large
    Language Models", ICLR 2024 (prompt-as-prefix).
"""

from __future__ import annotations

import numpy as np

_FFT_CHUNK = 4096  # windows per FFT call (bounds the temporary memory)


def window_statistics(x: np.ndarray, top_k: int) -> dict[str, np.ndarray]:
    """Statistics of each window, vectorised.

    Args:
        x: windows [M, L] (one channel of one window per row).
        top_k: number of lags to report.

    Returns:
        ``min``, ``max``, ``median`` [M]; ``trend`` [M] (+1 upward, -1
        downward: sign of the least-squares slope); ``lags`` [M, top_k] int,
        the lags 1..L//2 with the highest autocorrelation (computed with the
        FFT, zero-padded to 2L so it is the linear, not circular, one),
        strongest first. Local maxima of the autocorrelation rank before
        other lags, so a smooth series names its periods (24, 48, ...), not
        the trivially correlated lags 1, 2, 3.
    """
    x = np.asarray(x, dtype=np.float64)
    m, length = x.shape
    t = np.arange(length, dtype=np.float64) - (length - 1) / 2
    centred = x - x.mean(axis=1, keepdims=True)
    slope = centred @ t / float(t @ t)
    max_lag = max(1, length // 2)
    k = min(top_k, max_lag)
    lags = np.zeros((m, k), dtype=np.int64)
    if k > 0:
        for i in range(0, m, _FFT_CHUNK):
            spec = np.fft.rfft(centred[i : i + _FFT_CHUNK], n=2 * length, axis=1)
            full = np.fft.irfft(spec * np.conj(spec), n=2 * length, axis=1)[:, : max_lag + 2]
            full = full / np.maximum(full[:, :1], 1e-12)  # autocorrelation, 1 at lag 0
            acf = full[:, 1 : max_lag + 1]
            peak = (acf > full[:, :max_lag]) & (acf >= full[:, 2 : max_lag + 2])
            acf = np.where(peak, acf, acf - 10.0)  # peaks first
            top = np.argpartition(-acf, k - 1, axis=1)[:, :k] if k < max_lag else np.tile(np.arange(k), (len(acf), 1))
            order = np.argsort(-np.take_along_axis(acf, top, axis=1), axis=1, kind="stable")
            lags[i : i + _FFT_CHUNK] = np.take_along_axis(top, order, axis=1) + 1
    return {
        "min": x.min(axis=1),
        "max": x.max(axis=1),
        "median": np.median(x, axis=1),
        "trend": np.where(slope >= 0, 1, -1),
        "lags": lags,
    }


def _fmt(values: np.ndarray) -> np.ndarray:
    """Numbers -> strings with three significant digits (vectorised)."""
    values = np.where(np.abs(values) < 5e-4, 0.0, values)  # no "-0" or "1e-07" noise
    return np.char.mod("%.3g", values)


def prompt_texts(x: np.ndarray, context_length: int, horizon: int, top_k: int) -> list[str]:
    """The per-window part of the prompt (task and statistics) for each row of x [M, L].

    Example: ``"Task: forecast the next 96 steps given the previous 512 steps;
    min -1.2, max 2.31, median 0.05, trend upward, top 5 lags: 24, 48, 72, 12, 96."``
    (kept short: every prompt token is a sequence position the backbone pays for.)
    """
    s = window_statistics(x, top_k)
    head = f"Task: forecast the next {horizon} steps given the previous {context_length} steps; "
    text = np.char.add(head + "min ", _fmt(s["min"]))
    text = np.char.add(np.char.add(text, ", max "), _fmt(s["max"]))
    text = np.char.add(np.char.add(text, ", median "), _fmt(s["median"]))
    text = np.char.add(text, np.where(s["trend"] > 0, ", trend upward", ", trend downward"))
    k = s["lags"].shape[1]
    if k:
        lag_str = s["lags"].astype(str)
        joined = lag_str[:, 0]
        for j in range(1, k):  # loop over the k lag columns, not over windows
            joined = np.char.add(np.char.add(joined, ", "), lag_str[:, j])
        text = np.char.add(np.char.add(text, f", top {k} lags: "), joined)
    return np.char.add(text, ".").tolist()


class PromptEncoder:
    """Turns windows into fixed-length prompt token ids.

    The prompt is ``description ids`` (tokenised once, cut to
    ``max_description_tokens``) followed by the per-window task and statistics
    ids, right-padded to ``prompt_len`` with a 0/1 attention mask.

    Args:
        tokenizer: the backbone's (fast) tokenizer.
        description: the dataset's domain description.
        context_length: L; horizon: H; top_k: lags named in the prompt.
        max_description_tokens: cut for the description.
        prompt_len: total prompt length (padding / truncation target).
    """

    def __init__(
        self,
        tokenizer: object,
        description: str,
        context_length: int,
        horizon: int,
        top_k: int,
        max_description_tokens: int,
        prompt_len: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.context_length, self.horizon, self.top_k = context_length, horizon, top_k
        text = f"Dataset description: {description.strip()} " if description.strip() else ""
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # type: ignore[operator]
        self.description_ids = list(ids[:max_description_tokens])
        self.prompt_len = prompt_len
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    def dynamic_ids(self, x: np.ndarray) -> list[list[int]]:
        """Token ids of the task-and-statistics text of each row of x [M, L]."""
        texts = prompt_texts(x, self.context_length, self.horizon, self.top_k)
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]  # type: ignore[operator]

    def measure(self, x: np.ndarray) -> int:
        """Longest prompt (description + statistics) over the rows of x [M, L]."""
        dyn = self.dynamic_ids(x)
        return len(self.description_ids) + max((len(d) for d in dyn), default=0)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows x [M, L] -> ids [M, prompt_len] int64 and mask [M, prompt_len] int64."""
        m, p = x.shape[0], self.prompt_len
        ids = np.full((m, p), self.pad_id, dtype=np.int64)
        mask = np.zeros((m, p), dtype=np.int64)
        desc = self.description_ids[:p]
        nd = len(desc)
        ids[:, :nd] = desc
        mask[:, :nd] = 1
        for i, dyn in enumerate(self.dynamic_ids(x)):  # copies lists into the array, once per window
            dyn = dyn[: p - nd]
            ids[i, nd : nd + len(dyn)] = dyn
            mask[i, nd : nd + len(dyn)] = 1
        return ids, mask


class PromptCache:
    """Prompt ids of a fixed set of windows, encoded lazily once and kept.

    Args:
        encoder: the :class:`PromptEncoder`.
        windows: all windows of the set [N, C, L] (a view; nothing is copied).
            Sample ``s`` is channel ``s % C`` of window ``s // C``.
    """

    def __init__(self, encoder: PromptEncoder, windows: np.ndarray) -> None:
        self.encoder = encoder
        self.windows = windows
        m = windows.shape[0] * windows.shape[1]
        self.ids = np.zeros((m, encoder.prompt_len), dtype=np.int64)
        self.mask = np.zeros((m, encoder.prompt_len), dtype=np.int64)
        self.done = np.zeros(m, dtype=bool)

    def fill(self, index: np.ndarray) -> None:
        """Encode (in one tokenizer call) every window of ``index`` not yet cached."""
        todo = np.unique(index[~self.done[index]])
        if todo.size:
            c = self.windows.shape[1]
            ids, mask = self.encoder.encode(self.windows[todo // c, todo % c])
            self.ids[todo], self.mask[todo], self.done[todo] = ids, mask, True

    def get(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids and mask [len(index), prompt_len] of the windows ``index``."""
        self.fill(index)
        return self.ids[index], self.mask[index]
