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

from collections.abc import Callable

import numpy as np

from kernel.periods import autocorrelation

_FFT_CHUNK = 4096  # windows per FFT call (bounds the temporary memory)


def window_statistics(x: np.ndarray, top_k: int) -> dict[str, np.ndarray]:
    """Statistics of each window, vectorised.

    Args:
        x: windows [M, L] (one channel of one window per row).
        top_k: number of lags to report.

    Returns:
        ``min``, ``max``, ``median`` [M]; ``trend`` [M] (+1 upward, -1
        downward: sign of the least-squares slope); ``lags`` [M, top_k] int,
        the lags 1..L//2 with the highest autocorrelation (the linear one,
        :func:`kernel.periods.autocorrelation`), strongest first. Local maxima of the autocorrelation rank before
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
            full = autocorrelation(centred[i : i + _FFT_CHUNK], max_lag + 1, axis=1)  # [m, max_lag + 2], 1 at lag 0
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


LEVEL_EDGES = (-1.5, -0.5, 0.5, 1.5)  # RevIN units: far below | below | near | above | far above
LEVEL_WORDS = np.array(["far below", "below", "near", "above", "far above"])
FLAT_CHANGE = 0.25  # RevIN units over the horizon below which a forecast is "flat"
END_FRACTION = 0.1  # the level "at the horizon end" is the mean of this last fraction of the horizon


def classical_summary(x: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Level bin and direction of each member's forecast, in the window's RevIN units.

    Args:
        x: windows [M, L].
        refs: the members' forecasts [M, R, H] (same units as x).

    Returns:
        ``level`` [M, R] int in 0..4 (index into :data:`LEVEL_WORDS`: the mean
        of the last 10 % of the horizon against the window's mean, in window
        standard deviations) and ``direction`` [M, R] int (+1 rising, 0 flat,
        -1 falling: the least-squares change over the horizon, flat below
        0.25 window standard deviations).
    """
    x = np.asarray(x, dtype=np.float64)
    refs = np.asarray(refs, dtype=np.float64)
    mean = x.mean(axis=1)[:, None, None]
    std = np.sqrt(x.var(axis=1) + 1e-5)[:, None, None]
    z = (refs - mean) / std  # [M, R, H]
    h = z.shape[-1]
    tail = max(1, int(round(END_FRACTION * h)))
    level = np.searchsorted(np.asarray(LEVEL_EDGES), z[..., -tail:].mean(axis=-1))  # [M, R]
    t = np.arange(h, dtype=np.float64) - (h - 1) / 2
    change = (z - z.mean(axis=-1, keepdims=True)) @ t / max(float(t @ t), 1e-12) * max(h - 1, 1)
    direction = np.where(change > FLAT_CHANGE, 1, np.where(change < -FLAT_CHANGE, -1, 0))
    return level, direction


def classical_texts(x: np.ndarray, refs: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """One short sentence per classical member, plus whether they agree, for each row.

    Example: ``" Classical forecasts: arima ends above, rising; ets ends near,
    flat; they disagree."`` Members agree when they share a direction and
    their level bins differ by at most one.

    Args:
        x: windows [M, L]; refs: forecasts [M, R, H]; names: the R member names.
    """
    level, direction = classical_summary(x, refs)
    dir_words = np.array(["falling", "flat", "rising"])
    text = np.full(len(x), " Classical forecasts:", dtype=object).astype(str)
    for r, name in enumerate(names):  # loop over the R members, not over windows
        sep = " " if r == 0 else "; "
        part = np.char.add(np.char.add(f"{sep}{name} ends ", LEVEL_WORDS[level[:, r]]), ", ")
        text = np.char.add(text, np.char.add(part, dir_words[direction[:, r] + 1]))
    if len(names) > 1:
        agree = (direction == direction[:, :1]).all(axis=1) & (level.max(axis=1) - level.min(axis=1) <= 1)
        text = np.char.add(text, np.where(agree, "; they agree.", "; they disagree."))
    else:
        text = np.char.add(text, ".")
    return text.tolist()


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
        reference_names: names of the classical members summarised in the
            prompt (empty: no classical text); their forecasts are passed to
            :meth:`encode` as ``refs``.
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
        reference_names: tuple[str, ...] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.reference_names = tuple(reference_names)
        self.context_length, self.horizon, self.top_k = context_length, horizon, top_k
        text = f"Dataset description: {description.strip()} " if description.strip() else ""
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # type: ignore[operator]
        self.description_ids = list(ids[:max_description_tokens])
        self.prompt_len = prompt_len
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    def texts(self, x: np.ndarray, refs: np.ndarray | None = None) -> list[str]:
        """The per-window text of each row of x [M, L] (refs [M, R, H]: the classical forecasts)."""
        texts = prompt_texts(x, self.context_length, self.horizon, self.top_k)
        if self.reference_names:
            if refs is None:
                raise ValueError("this prompt summarises classical forecasts; pass refs [M, R, H].")
            extra = classical_texts(x, refs, self.reference_names)
            texts = [a + b for a, b in zip(texts, extra, strict=True)]
        return texts

    def full_texts(self, x: np.ndarray, refs: np.ndarray | None = None) -> list[str]:
        """The whole prompt of each row as text (description + per-window text), before the cut to prompt_len."""
        desc = self.tokenizer.decode(self.description_ids) if self.description_ids else ""  # type: ignore[attr-defined]
        return [f"{desc} {t}".strip() for t in self.texts(x, refs)]

    def dynamic_ids(self, x: np.ndarray, refs: np.ndarray | None = None) -> list[list[int]]:
        """Token ids of the per-window text (task, statistics, classical forecasts) of each row of x [M, L]."""
        if len(x) == 0:  # no window (the fast tokenizers fail on an empty batch)
            return []
        return self.tokenizer(self.texts(x, refs), add_special_tokens=False)["input_ids"]  # type: ignore[operator]

    def measure(self, x: np.ndarray, refs: np.ndarray | None = None) -> int:
        """Longest prompt (description + per-window text) over the rows of x [M, L]."""
        dyn = self.dynamic_ids(x, refs)
        return len(self.description_ids) + max((len(d) for d in dyn), default=0)

    def encode(self, x: np.ndarray, refs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Windows x [M, L] (+ refs [M, R, H]) -> ids [M, prompt_len] int64 and mask [M, prompt_len] int64."""
        m, p = x.shape[0], self.prompt_len
        ids = np.full((m, p), self.pad_id, dtype=np.int64)
        mask = np.zeros((m, p), dtype=np.int64)
        desc = self.description_ids[:p]
        nd = len(desc)
        ids[:, :nd] = desc
        mask[:, :nd] = 1
        for i, dyn in enumerate(self.dynamic_ids(x, refs)):  # copies lists into the array, once per window
            dyn = dyn[: p - nd]
            ids[i, nd : nd + len(dyn)] = dyn
            mask[i, nd : nd + len(dyn)] = 1
        return ids, mask


class SampleCache:
    """Per-sample rows computed on demand for a fixed set of windows, and kept.

    Samples are numbered as the trainer counts them (``s``: channel
    ``s % C`` of window ``s // C``). ``compute(windows)`` returns the rows of
    every channel of the given windows ``[n, C, ...]``; only the requested
    samples' rows are stored, so the untouched part of the table costs no
    memory.

    Args:
        compute: window indices [n] -> rows [n, C, *shape].
        n_windows, n_channels: the set's size.
        shape, dtype: one sample's row.
    """

    def __init__(self, compute: Callable[[np.ndarray], np.ndarray], n_windows: int, n_channels: int,
                 shape: tuple[int, ...], dtype: type = np.float32) -> None:
        self.compute, self.n_channels = compute, n_channels
        self.values = np.zeros((n_windows * n_channels, *shape), dtype=dtype)  # untouched pages cost nothing
        self.done = np.zeros(n_windows * n_channels, dtype=bool)

    def fill(self, index: np.ndarray) -> None:
        """Compute (one call) the rows of every sample of ``index`` not yet cached."""
        index = np.asarray(index, dtype=np.int64)
        todo = np.unique(index[~self.done[index]])
        if todo.size:
            w, c = todo // self.n_channels, todo % self.n_channels
            uniq, inv = np.unique(w, return_inverse=True)
            rows = self.compute(uniq)  # [n_w, C, *shape]
            self.values[todo] = rows[inv, c]
            self.done[todo] = True

    def get(self, index: np.ndarray) -> np.ndarray:
        """Rows [len(index), *shape] of the samples ``index``."""
        self.fill(index)
        return self.values[np.asarray(index, dtype=np.int64)]


class PromptCache:
    """Prompt ids and masks of a fixed set of samples, encoded lazily once and kept.

    Args:
        encoder: the :class:`PromptEncoder`.
        samples: sample indices [m] -> context rows [m, L].
        n_samples: the set's size (windows x channels).
        references: the set's reference rows (a :class:`SampleCache`), needed
            when the encoder summarises classical forecasts.
    """

    def __init__(self, encoder: PromptEncoder, samples: Callable[[np.ndarray], np.ndarray], n_samples: int,
                 references: SampleCache | None = None) -> None:
        self.encoder, self.samples, self.references = encoder, samples, references
        self.ids = np.zeros((n_samples, encoder.prompt_len), dtype=np.int64)
        self.mask = np.zeros((n_samples, encoder.prompt_len), dtype=np.int64)
        self.done = np.zeros(n_samples, dtype=bool)

    def fill(self, index: np.ndarray) -> None:
        """Encode (in one tokenizer call) every sample of ``index`` not yet cached."""
        index = np.asarray(index, dtype=np.int64)
        todo = np.unique(index[~self.done[index]])
        if todo.size:
            refs = self.references.get(todo) if self.references is not None else None
            ids, mask = self.encoder.encode(self.samples(todo), refs)
            self.ids[todo], self.mask[todo], self.done[todo] = ids, mask, True

    def get(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids and mask [len(index), prompt_len] of the samples ``index``."""
        self.fill(index)
        index = np.asarray(index, dtype=np.int64)
        return self.ids[index], self.mask[index]
