"""Sequence parallelism on 4 and 8 gloo processes (CPU): the single-process outputs of the tiny model (fp32).

The 4- and 8-GPU runs of issue 19 need machines that are not lent; this checks the same code paths (token split,
all-gather and ring exchange, gathering on rank 0) at those world sizes.
"""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from parallel_worker import many_views, run_many, tiny_views
from test_parallel import _assert_same, _reference


@pytest.mark.parametrize("world_size", [4, 8])
def test_many_processes_equal_one(world_size, tiny_dir, tmp_path) -> None:
    out = tmp_path / "rank0.pt"
    mp.spawn(run_many, args=(world_size, str(tmp_path / "rendezvous"), str(tiny_dir), str(out)), nprocs=world_size)
    result = torch.load(out)
    even = many_views(tiny_dir, 2 * world_size)
    assert result["allgather_tokens"] == [30] * world_size  # two 48x80 views (15 patches each) per rank
    reference = _reference(tiny_dir, even)
    _assert_same(result["allgather"], reference)
    _assert_same(result["ring"], reference)
    uneven = even[: world_size - 1] + tiny_views(tiny_dir)[:2]
    _assert_same(result["uneven"], _reference(tiny_dir, uneven))
    # Meaningful: the last rank's views alone (no exchange) give other outputs.
    alone = _reference(tiny_dir, even[-2:])
    assert (alone[1]["pts3d_in_other_view"] - reference[-1]["pts3d_in_other_view"]).abs().max() > 1e-3
