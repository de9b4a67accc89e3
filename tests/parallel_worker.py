"""Worker of tests/model/test_parallel.py: one rank of a gloo group on the CPU (importable by spawned processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


def tiny_views(tiny: Path) -> list[torch.Tensor]:
    """The four preprocessed fixture images (three sizes: uneven tokens per view)."""
    with np.load(tiny / "preprocess.npz") as data:
        return [torch.from_numpy(data[f"view{i}_img"]) for i in range(int(data["num_views"]))]


def same_size_views(tiny: Path) -> list[torch.Tensor]:
    """Six 48x80 views (equal tokens on two ranks, as the ring method needs)."""
    views = tiny_views(tiny)
    base = [views[0], views[3]]
    return base + [v.flip(-1) for v in base] + [v.flip(-2) for v in base]


def forward_cases(model, cases, world_size: int) -> dict:
    """{name: outputs gathered on rank 0 (None elsewhere), name_tokens: tokens per rank} of each (name, views,
    method) case."""
    from fast3r_ns.model.parallel import SequenceParallel, gather_outputs, parallel_forward, split_views, view_tokens

    results = {}
    for name, views, method in cases:
        parallel = SequenceParallel(method=method)
        mine, outputs = parallel_forward(model, views, parallel)
        ranges = split_views(view_tokens(model, views), world_size)
        results[name] = gather_outputs(mine, outputs, [v.shape for v in views], ranges)
        results[name + "_tokens"] = parallel.tokens_per_rank
    return results


def run(rank: int, world_size: int, rendezvous: str, tiny: str, out: str) -> None:
    from fast3r_ns.distributed import DistributedFast3RPredictor, serve
    from fast3r_ns.model import Fast3R

    torch.set_num_threads(1)
    # a file rendezvous: no TCP port to race for with other processes on the machine
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    tiny = Path(tiny)
    model = Fast3R.from_pretrained(tiny / "model").eval()
    cases = (
        ("allgather_uneven", tiny_views(tiny), "allgather"),
        ("ring_even", same_size_views(tiny), "ring"),
        ("ring_uneven_falls_back", tiny_views(tiny), "ring"),
    )
    results = forward_cases(model, cases, world_size)
    if rank == 0:
        predictor = DistributedFast3RPredictor(model, "cpu")
        results["predictor"] = predictor(same_size_views(tiny))
        results["predictor_again"] = predictor(tiny_views(tiny)[:3])
        predictor.close()
        torch.save(results, out)
    else:
        results["served"] = serve(model, "cpu")
        torch.save(results, f"{out}.rank{rank}")
    dist.destroy_process_group()


def many_views(tiny: Path, count: int) -> list[torch.Tensor]:
    """``count`` 48x80 views (flips and shifts of two fixture views): equal tokens on every rank."""
    base = same_size_views(tiny)
    views = [base[i % len(base)] for i in range(count)]
    return [v.roll(i // len(base), dims=-1) for i, v in enumerate(views)]


def run_many(rank: int, world_size: int, rendezvous: str, tiny: str, out: str) -> None:
    """All-gather and ring forwards over 2 views per rank (and all-gather over uneven sizes), gathered on rank 0."""
    from fast3r_ns.model import Fast3R

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    tiny = Path(tiny)
    model = Fast3R.from_pretrained(tiny / "model").eval()
    even = many_views(tiny, 2 * world_size)
    uneven = even[: world_size - 1] + tiny_views(tiny)[:2]  # sizes differ: the ring falls back to all-gather
    cases = (("allgather", even, "allgather"), ("ring", even, "ring"), ("uneven", uneven, "ring"))
    results = forward_cases(model, cases, world_size)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()
