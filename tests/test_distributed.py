"""Data-parallel training of the core (llm_core.ddp): two CPU ranks with gloo take the step one process takes.

Two processes get torchrun's environment by hand (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK);
the trainer starts the process group itself. Each rank trains one step on its 4 of a global batch of 8
samples; the trainable parameters afterwards equal those of one process stepping on all 8.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
if not torch.distributed.is_available():  # pragma: no cover - depends on the torch build
    pytest.skip("this torch build has no torch.distributed", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

from kernel.distributed import is_main_process, process_rank, world_size  # noqa: E402
from llm_core import ddp  # noqa: E402
from llm_core.member import TimeLLM  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.test_core import SPEC, _cfg, _series, save_tiny_bert  # noqa: E402

pytestmark = pytest.mark.distributed

WORLD = 2
GLOBAL_BATCH = 8
DEADLINE = 120.0  # seconds for both ranks together; a rank stuck in a collective must not hang the suite


def _sgd(params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Plain SGD in AdamW's place: a step linear in the gradient.

    AdamW's first step is lr * g / (|g| + eps): blind to the gradient's scale (gradients summed instead of
    averaged would pass) and, where the exact gradient is zero (the key bias of attention: softmax ignores a
    shift shared by every key), a full step of rounding noise. SGD without clipping (a clipped step hides the
    scale too) shows any difference of the gradients.
    """
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


def _one_step(backbone: str) -> TimeLLM:
    """One SGD step on a global batch of 8 samples, then the validation loss; no dropout, fp32, no clipping."""
    cfg = dataclasses.replace(_cfg(backbone), epochs=1, batch_size=GLOBAL_BATCH, max_train_windows=GLOBAL_BATCH,
                              max_val_windows=12, schedule="constant", lr=0.05, grad_clip=0.0)
    x = _series()
    return TimeLLM(cfg).fit(x[:250], x[250 - SPEC.context_length :], SPEC)


def _rank_main(rank: int, port: int, folder: str, backbones: list[str]) -> None:
    """One rank of the job (spawned): torchrun's variables, then each core's one step; its state saved."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    torch.optim.AdamW = _sgd  # this process only (a spawned rank)
    out = {}
    for i, backbone in enumerate(backbones):
        member = _one_step(backbone)
        out[i] = {"state": member.net_.trainable_state(), "history": member.history_}
    out["seen"] = (process_rank(), world_size(), is_main_process())
    torch.save(out, Path(folder) / f"rank{rank}.pt")


def _run_ranks(folder: Path, backbones: list[str]) -> list[dict]:
    ctx = mp.spawn(_rank_main, args=(free_port(), str(folder), backbones), nprocs=WORLD, join=False)
    deadline = time.monotonic() + DEADLINE
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} ranks did not finish in {DEADLINE:.0f} s")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
    return [torch.load(folder / f"rank{r}.pt") for r in range(WORLD)]


def test_two_ranks_take_the_step_of_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backbones = [save_tiny_bert(tmp_path / "tiny_bert", max_positions=128), "none"]
    ranks = _run_ranks(tmp_path, backbones)
    monkeypatch.setattr(torch.optim, "AdamW", _sgd)
    assert [r["seen"] for r in ranks] == [(0, WORLD, True), (1, WORLD, False)]
    for i, backbone in enumerate(backbones):
        single = _one_step(backbone)
        want = single.net_.trainable_state()
        start = TimeLLM(single.config).build(_series()[:250], SPEC).net_.trainable_state()
        moved = [k for k in want if want[k].is_floating_point() and not torch.equal(want[k], start[k])]
        assert len(moved) >= 4, moved  # the step changed the trainable layers (a test that compares no change is void)
        for r, rank in enumerate(ranks):
            got = rank[i]["state"]
            assert set(got) == set(want)
            for k in want:
                np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=0, atol=1e-6,
                                           err_msg=f"{backbone}, rank {r}: {k}")
            (h_got,), (h_want,) = rank[i]["history"], single.history_
            # the train loss over both ranks' samples, the validation loss over both ranks' shares
            assert h_got["train_loss"] == pytest.approx(h_want["train_loss"], rel=1e-6)
            assert h_got["val_loss"] == pytest.approx(h_want["val_loss"], rel=1e-6)


def test_shard_gives_every_rank_as_many_samples() -> None:
    order = np.arange(11)
    shards = [ddp.shard(order, r, 3) for r in range(3)]
    assert [s.tolist() for s in shards] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # 9 and 10 dropped: equal steps
    assert ddp.shard(order, 0, 1) is order
    assert world_size() == 1 and process_rank() == 0 and is_main_process()  # no torchrun here


def test_world_size_without_torchrun_variables_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from kernel.errors import HybridInputError

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(HybridInputError, match="MASTER_ADDR, MASTER_PORT, RANK unset.*torchrun"):
        ddp.join(torch.device("cpu"))


def test_only_rank_0_writes_the_run(csv_path: Path, fit_args: list[str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from hybrid.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "rank1"]) == 0
    assert not (tmp_path / "rank1").exists() and not (tmp_path / "runs").exists()
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "rank0"]) == 0
    assert (tmp_path / "rank0" / "manifest.json").is_file() and "run: " in capsys.readouterr().out
