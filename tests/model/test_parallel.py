"""Sequence parallelism: two gloo processes on the CPU give the single-process outputs of the tiny model (fp32)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from parallel_worker import run, same_size_views, tiny_views

from fast3r_ns.model import Fast3R
from fast3r_ns.model.parallel import split_views


def test_split_views_balances_tokens() -> None:
    assert split_views([10] * 8, 2) == [range(0, 4), range(4, 8)]
    assert split_views([15, 20, 15, 15], 2) == [range(0, 2), range(2, 4)]
    assert split_views([10] * 7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    assert split_views([100, 1, 1, 1], 2) == [range(0, 1), range(1, 4)]
    assert split_views([1, 1, 100], 3) == [range(0, 1), range(1, 2), range(2, 3)]
    with pytest.raises(ValueError, match="one view per rank"):
        split_views([10], 2)


@pytest.fixture(scope="module")
def two_ranks(tiny_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("parallel")
    out = folder / "rank0.pt"
    mp.spawn(run, args=(2, str(folder / "rendezvous"), str(tiny_dir), str(out)), nprocs=2, join=True)
    return torch.load(out), torch.load(f"{out}.rank1")


def _reference(tiny_dir, views):
    torch.set_num_threads(1)
    model = Fast3R.from_pretrained(tiny_dir / "model").eval()
    with torch.inference_mode():
        return model(views)


def _assert_same(outputs, reference) -> None:
    assert len(outputs) == len(reference)
    for got, want in zip(outputs, reference):
        assert set(got) == set(want)
        for key in want:
            assert got[key].dtype == torch.float32 and got[key].device.type == "cpu"
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)


def test_two_processes_equal_one(two_ranks, tiny_dir) -> None:
    rank0, rank1 = two_ranks
    uneven = _reference(tiny_dir, tiny_views(tiny_dir))
    even = _reference(tiny_dir, same_size_views(tiny_dir))
    assert rank0["allgather_uneven_tokens"] == [35, 30]  # views of 15 + 20 | 15 + 15 patches
    _assert_same(rank0["allgather_uneven"], uneven)
    assert rank0["ring_even_tokens"] == [45, 45]
    _assert_same(rank0["ring_even"], even)
    _assert_same(rank0["ring_uneven_falls_back"], uneven)
    # Meaningful: rank 0's views alone (no exchange of keys and values) give other outputs.
    alone = _reference(tiny_dir, tiny_views(tiny_dir)[:2])
    assert (alone[1]["pts3d_in_other_view"] - uneven[1]["pts3d_in_other_view"]).abs().max() > 1e-3
    for name in ("allgather_uneven", "ring_even", "ring_uneven_falls_back"):
        assert rank1[name] is None  # only rank 0 receives the outputs


def test_distributed_predictor_and_workers(two_ranks, tiny_dir) -> None:
    rank0, rank1 = two_ranks
    _assert_same(rank0["predictor"], _reference(tiny_dir, same_size_views(tiny_dir)))
    _assert_same(rank0["predictor_again"], _reference(tiny_dir, tiny_views(tiny_dir)[:3]))
    assert rank1["served"] == 2
