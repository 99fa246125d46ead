"""benchmarks/core_accuracy.py's report: runs that differ in a training setting are never averaged together."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "core_accuracy.py"
_SPEC = importlib.util.spec_from_file_location("_core_accuracy", _PATH)
core_accuracy = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = core_accuracy  # its dataclasses look their module up there
_SPEC.loader.exec_module(core_accuracy)


def row(seed: int, mse: float, **core: object) -> dict:
    return {"variant": "core_alone", "horizon": 720, "seed": seed, "mse": mse, "mae": mse, "fit_s": 1.0,
            "epochs_run": 10, "best_epoch": 10, "best_val": 0.6, "predict_s": 1.0, "n_trainable": 1, "load_avg": 1.0,
            "core": {"backbone": "none", "max_train_windows": 32768, **core}}


def test_regularisation_settings_get_their_own_row_in_the_summary():
    rows = [row(0, 0.31), row(1, 0.33), row(0, 0.5, weight_decay=0.1), row(0, 0.7, dropout=0.3)]
    summary = core_accuracy.table(rows).split("| seeds |")[1]
    assert "| 32768 x 10 | 720 | 2 | 0.3200 ± 0.0100 |" in summary
    assert "| 32768 x 10, weight_decay 0.1 | 720 | 1 | 0.5000 ± 0.0000 |" in summary
    assert "| 32768 x 10, dropout 0.3 | 720 | 1 | 0.7000 ± 0.0000 |" in summary
