"""The peers benchmark forecasts exactly the test windows ``hybrid evaluate`` scores (no peer library needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kernel.protocol import Scaler, make_split, windows

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_peers_windows.py"
_SPEC = importlib.util.spec_from_file_location("_peers_windows", _PATH)
pw = importlib.util.module_from_spec(_SPEC)
sys.modules["_peers_windows"] = pw  # dataclasses look their module up there
_SPEC.loader.exec_module(pw)

L = 48


def _scaled(n: int = 700, channels: int = 3, seed: int = 0) -> tuple[np.ndarray, object]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    raw = np.sin(2 * np.pi * t / 24 + np.arange(channels)) + 0.01 * t + rng.normal(0, 0.2, (n, channels))
    split = make_split(n, L, 36, kind="ratio", ratios=(0.7, 0.1, 0.2))
    scaled = Scaler.fit(split.part(raw, "train")).transform(raw)
    return scaled, split


@pytest.mark.parametrize("horizon", [1, 12, 36])
def test_peer_cutoffs_give_the_protocols_test_windows(horizon: int) -> None:
    scaled, split = _scaled()
    ctx_ref, tgt_ref = windows(split.part(scaled, "test"), L, horizon)
    cutoffs = pw.peer_cutoffs(split, L, horizon)
    ctx, tgt = pw.windows_at(scaled, cutoffs, L, horizon)
    assert cutoffs.shape == (ctx_ref.shape[0],)
    assert np.array_equal(ctx, ctx_ref) and np.array_equal(tgt, tgt_ref)
    assert cutoffs[0] == split.val_end - 1  # the first target row is the test border
    assert cutoffs[-1] + horizon == split.test_end - 1  # the last target row is the part's last row


def test_spread_sample_is_a_subset_in_order() -> None:
    scaled, split = _scaled()
    cutoffs = pw.peer_cutoffs(split, L, 12)
    pick = pw.spread(len(cutoffs), 10)
    assert len(pick) == 10 and pick[0] == 0 and pick[-1] == len(cutoffs) - 1
    assert np.all(np.diff(pick) > 0)
    ctx, tgt = pw.windows_at(scaled, cutoffs[pick], L, 12)
    ctx_ref, tgt_ref = windows(split.part(scaled, "test"), L, 12)
    assert np.array_equal(ctx, ctx_ref[pick]) and np.array_equal(tgt, tgt_ref[pick])
    assert np.array_equal(pw.spread(len(cutoffs), 0), np.arange(len(cutoffs)))


def test_long_frame_round_trip_matches_the_protocols_targets() -> None:
    """A cross-validation frame whose forecast is the truth maps back onto the protocol's targets, in window order."""
    scaled, split = _scaled()
    horizon = 12
    cutoffs = pw.peer_cutoffs(split, L, horizon)
    frame = pw.long_frame(scaled, split.test_end)
    rows = []
    for c in range(scaled.shape[1]):
        y = frame[frame.unique_id == c].set_index("ds")["y"]
        for cut in cutoffs[::-1]:  # shuffled order: the mapping must not rely on it
            ds = np.arange(cut + 1, cut + 1 + horizon)
            rows.append(pd.DataFrame({"unique_id": c, "ds": ds, "cutoff": cut, "model": y.loc[ds].to_numpy()}))
    cv = pd.concat(rows, ignore_index=True)
    got = pw.forecasts_from_long(cv, "model", cutoffs, scaled.shape[1], horizon)
    _, tgt_ref = windows(split.part(scaled, "test"), L, horizon)
    np.testing.assert_allclose(got, tgt_ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        pw.forecasts_from_long(cv.iloc[1:], "model", cutoffs, scaled.shape[1], horizon)


def test_windows_at_refuses_cutoffs_outside_the_series() -> None:
    scaled, _ = _scaled()
    with pytest.raises(ValueError, match="cutoffs must lie"):
        pw.windows_at(scaled, np.array([scaled.shape[0] - 5]), L, 12)


@pytest.mark.parametrize("every", [1, 5, 7, 200])
def test_every_nth_matches_the_libraries_step_rule(every: int) -> None:
    """Nixtla's cross_validation(step_size=every) forecasts windows whose last target ends the frame, stepping back by
    ``every``; the frame's end and test_size chosen here make those exactly every ``every``-th test window."""
    scaled, split = _scaled()
    horizon = 12
    everyone = pw.peer_cutoffs(split, L, horizon)
    cutoffs, end, test_size = pw.every_nth(split, L, horizon, every)
    assert np.array_equal(cutoffs, everyone[::every])
    assert (test_size - horizon) % every == 0
    assert end <= split.test_end and end - test_size == split.val_end  # training never reaches the test part
    library = np.arange(end - test_size - 1, end - horizon, every)  # first cutoff: the row before the test part
    assert np.array_equal(library, cutoffs)
    ctx, tgt = pw.windows_at(scaled, cutoffs, L, horizon)
    ctx_ref, tgt_ref = windows(split.part(scaled, "test"), L, horizon)
    assert np.array_equal(ctx, ctx_ref[::every]) and np.array_equal(tgt, tgt_ref[::every])
    with pytest.raises(ValueError, match="every must be"):
        pw.every_nth(split, L, horizon, 0)
