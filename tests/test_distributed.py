"""alflow.distributed.spawn: results survive a crash in teardown; a failing rank is named."""

from __future__ import annotations

import multiprocessing.util
import os

import pytest
import torch

from alflow.distributed import DistInfo, all_reduce_sum, spawn


def _sum_ranks(info: DistInfo, big: int) -> dict:
    total = all_reduce_sum(torch.tensor([float(info.rank + 1)]))
    return {"total": float(total), "payload": "x" * big}


def _sum_then_abort_at_exit(info: DistInfo) -> float:
    total = float(all_reduce_sum(torch.tensor([float(info.rank + 1)])))
    if info.rank == 1:  # a C++-teardown-like crash after the work is done
        multiprocessing.util.Finalize(None, os.abort, exitpriority=0)
    return total


def _rank1_raises(info: DistInfo) -> None:
    if info.rank == 1:
        raise ValueError("bad input on rank 1")
    all_reduce_sum(torch.zeros(1))


def test_spawn_returns_rank0_result_even_if_larger_than_a_pipe_buffer():
    out = spawn(_sum_ranks, 2, 1 << 20)  # 1 MiB: must not block in the result pipe
    assert out["total"] == 3.0 and len(out["payload"]) == 1 << 20


def test_crash_after_all_ranks_finished_keeps_the_result(caplog):
    assert spawn(_sum_then_abort_at_exit, 2) == 3.0
    assert "crashed while exiting" in caplog.text


def test_a_failing_rank_is_named_in_the_error():
    with pytest.raises(RuntimeError, match=r"rank 1: ValueError: bad input on rank 1"):
        spawn(_rank1_raises, 2)
