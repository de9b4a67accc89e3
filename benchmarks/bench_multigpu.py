"""Sequence-parallel forward over the GPUs of one host vs one GPU of the same machine, same run (random weights).

Two commands on a 2-GPU machine (each under 10 minutes on H100s/H200s; one GPU takes ~140 s at 1000 views and
~560 s at 2000, too long to measure both in one command):

    torchrun --nproc-per-node 2 benchmarks/bench_multigpu.py --views 1000 --methods allgather ring
        # ~5 min: one GPU measured at 1000 (and 500) views, two GPUs at 1000 views with both methods
    torchrun --nproc-per-node 2 benchmarks/bench_multigpu.py --views 2000 --baseline-views 500
        # ~6 min: one GPU measured at 500 views and extrapolated to 2000, two GPUs measured at 500 and 2000 views

One GPU at 2000 views takes ~520-560 s, so a measured 2000-view speed-up needs two commands on the same warm
machine: first ``torchrun --nproc-per-node 1 benchmarks/bench_multigpu.py --views 2000 --one-gpu-only`` (records the
one-GPU run with the host name), then the two-GPU command above, which uses that record as the baseline
(``baseline_measured: "same host, earlier command"``) where one matches host, commit, views, size and dtype.
Otherwise one-GPU times beyond ``--max-baseline-views`` (1000) are extrapolated from a measured one-GPU run at
``--baseline-views``: decoder time x (views ratio)^2 (attention), encoder and heads x views ratio; the record says
``baseline_estimated: true``. The 1000-view command also extrapolates 500 -> 1000 to check that model against
the measured 1000-view time (``extrapolation_check``). Outputs are compared with one GPU wherever both ran.
CPU smoke test (gloo): torchrun --nproc-per-node 2 benchmarks/bench_multigpu.py --views 8 --height 64 --width 64
--device cpu --baseline-views 4. JSON lines to benchmarks/results/multigpu_<gpu>.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_chunked import make_views  # noqa: E402
from benchmarks.bench_model import DTYPES, build, compare, timed_forward  # noqa: E402
from benchmarks.common import RESULTS, append, commit, device_name, device_slug, sync  # noqa: E402
from fast3r_ns.model.parallel import (  # noqa: E402
    SequenceParallel,
    gather_outputs,
    parallel_forward,
    split_views,
    view_tokens,
)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def one_gpu(model, views: list[torch.Tensor], device: torch.device) -> dict:
    """Rank 0 alone: the plain forward, stage by stage (outputs stay on the GPU while timed, then go to the CPU)."""
    result = timed_forward(model, [v.to(device) for v in views], str(device))
    result["outputs"] = [{k: v.float().cpu() for k, v in o.items()} for o in result["outputs"]]
    return result


@torch.inference_mode()
def two_gpus(model, views: list[torch.Tensor], device: torch.device, method: str) -> dict:
    """Every rank: its share of the forward (timed between barriers), then all outputs gathered on rank 0."""
    parallel = SequenceParallel(method=method)
    ranges = split_views(view_tokens(model, views), parallel.world_size)
    own = [views[i].to(device) for i in ranges[parallel.rank]]
    reset_peak(device)
    dist.barrier()
    start = sync(device)
    mine, outputs = parallel_forward(model, views, parallel, local_views=own)
    sync(device)
    dist.barrier()
    seconds = time.perf_counter() - start
    peaks = [None] * parallel.world_size
    dist.all_gather_object(peaks, peak_gib(device))
    start = time.perf_counter()
    gathered = gather_outputs(mine, outputs, [v.shape for v in views], ranges, device=device)
    return {
        "seconds": seconds,
        "peak_gib_per_gpu": peaks,
        "gather_seconds": time.perf_counter() - start,
        "outputs": gathered,
        "tokens_per_rank": parallel.tokens_per_rank,
    }


def extrapolate(measured: dict, views_from: int, views_to: int) -> float:
    """One-GPU seconds at ``views_to`` from a run at ``views_from``: decoder quadratic, encoder and heads linear."""
    ratio = views_to / views_from
    linear = measured["encoder_seconds"] + measured["heads_seconds"]
    return measured["decoder_seconds"] * ratio**2 + linear * ratio


def earlier_baseline(out: Path, base: dict, views: int) -> dict | None:
    """A one-GPU record of an earlier command (``--one-gpu-only``) on this host for the same case, if any."""
    if not out.exists():
        return None
    same = ("commit", "device", "host", "height", "width", "dtype")
    found = None
    for line in out.read_text().splitlines():
        record = json.loads(line)
        if record.get("case") == "1gpu" and record.get("views") == views and "error" not in record:
            if all(record.get(k) == base[k] for k in same):
                found = record
    return found


def differences(reference: list[dict], other: list[dict]) -> dict:
    stats = compare(reference, other)
    for key in ("pts3d_in_other_view", "pts3d_local", "conf", "conf_local"):
        diff = max(float((a[key] - b[key]).abs().max()) for a, b in zip(reference, other))
        stats[f"{key}_max_abs_diff"] = diff
        stats[f"{key}_max_abs"] = max(float(a[key].abs().max()) for a in reference)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[1000])
    parser.add_argument("--methods", nargs="+", default=["allgather"], choices=["allgather", "ring"])
    parser.add_argument("--baseline-views", type=int, default=500, help="one-GPU run to extrapolate from")
    parser.add_argument("--max-baseline-views", type=int, default=1000, help="measure one GPU directly up to this")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--dtype", default=None, choices=list(DTYPES), help="default: bf16 on GPUs, fp32 on CPUs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one-gpu-only", action="store_true", help="only measure one GPU at --views (any size)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    dtype_name = args.dtype or ("bf16" if cuda else "fp32")
    out = args.out or RESULTS / f"multigpu_{device_slug()}.jsonl"
    base = {"bench": "multigpu", "commit": commit(), "device": device_name(), "host": socket.gethostname()}
    base |= {"gpus": world}
    base |= {"height": args.height, "width": args.width, "dtype": dtype_name, "torch": torch.__version__}
    base |= {"nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE")}
    model = build(DTYPES[dtype_name], str(device))  # same seed on every rank: the same weights
    base |= {"attention": model.attention_options.as_record()}

    def log(record: dict) -> None:
        if rank == 0:
            append(out, base | record)

    warm = make_views(2 * world, args.height, args.width, torch.float32, seed=1)
    if args.one_gpu_only:
        one_gpu(model, warm[:2], device)
        for views_count in sorted(set(args.views)):
            if rank == 0:
                result = one_gpu(model, make_views(views_count, args.height, args.width, torch.float32), device)
                log(
                    {"case": "1gpu", "gpus": 1, "views": views_count}
                    | {k: v for k, v in result.items() if k != "outputs"}
                )
                del result
        dist.destroy_process_group()
        return
    two_gpus(model, warm, device, args.methods[0])  # warm-up (kernels, NCCL communicators)
    if rank == 0:
        one_gpu(model, warm[:2], device)
    dist.barrier()

    baselines: dict[int, dict] = {}

    def measure_one_gpu(views_count: int) -> dict:
        if views_count not in baselines:
            views = make_views(views_count, args.height, args.width, torch.float32)
            result = one_gpu(model, views, device) if rank == 0 else {}
            dist.barrier()
            baselines[views_count] = result
            if rank == 0:
                log(
                    {"case": "1gpu", "gpus": 1, "views": views_count}
                    | {k: v for k, v in result.items() if k != "outputs"}
                )
        return baselines[views_count]

    sizes = sorted(set(args.views))
    small = args.baseline_views
    need_small = any(v > args.max_baseline_views for v in sizes) or args.max_baseline_views in sizes
    for views_count in sizes:
        measured = views_count <= args.max_baseline_views
        reference = measure_one_gpu(views_count) if measured else None
        if need_small:
            small_ref = measure_one_gpu(small)
            if rank == 0 and views_count != small:
                log(
                    {"case": "extrapolation_check" if measured else "1gpu_extrapolated", "gpus": 1}
                    | {"views": views_count, "from_views": small}
                    | {"seconds": extrapolate(small_ref, small, views_count)}
                    | ({"measured_seconds": reference["seconds"]} if measured else {})
                )
            if not measured and small not in [v for v in sizes]:
                # the two-GPU outputs at the small size can be compared with one GPU
                views = make_views(small, args.height, args.width, torch.float32)
                result = two_gpus(model, views, device, args.methods[0])
                if rank == 0:
                    log(
                        {"case": "2gpu", "views": small, "method": args.methods[0], "seconds": result["seconds"]}
                        | {"peak_gib": max(result["peak_gib_per_gpu"]), "peak_gib_per_gpu": result["peak_gib_per_gpu"]}
                        | {"baseline": "1gpu", "baseline_seconds": small_ref["seconds"]}
                        | {"baseline_peak_gib": small_ref["peak_gib"]}
                        | {"speedup": small_ref["seconds"] / result["seconds"]}
                        | {"ratio_to_baseline": result["seconds"] / small_ref["seconds"]}
                        | {"baseline_estimated": False, "gather_seconds": result["gather_seconds"]}
                        | differences(small_ref["outputs"], result["outputs"])
                    )
                del result
        views = make_views(views_count, args.height, args.width, torch.float32)
        for method in args.methods:
            record = {"case": "2gpu", "views": views_count, "method": method}
            try:
                result = two_gpus(model, views, device, method)
            except Exception as error:  # noqa: BLE001 - record failures too
                log(record | {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"})
                continue
            if rank == 0:
                if measured:
                    baseline_seconds = reference["seconds"]
                    extra = {"baseline_peak_gib": reference["peak_gib"], "baseline_estimated": False}
                    extra |= differences(reference["outputs"], result["outputs"])
                elif (earlier := earlier_baseline(out, base, views_count)) is not None:
                    baseline_seconds = earlier["seconds"]
                    extra = {"baseline_peak_gib": earlier["peak_gib"], "baseline_estimated": False}
                    extra |= {"baseline_measured": "same host, earlier command (--one-gpu-only)"}
                    extra |= {"extrapolated_baseline_seconds": extrapolate(baselines[small], small, views_count)}
                else:
                    baseline_seconds = extrapolate(baselines[small], small, views_count)
                    extra = {
                        "baseline_estimated": True,
                        "baseline_note": (
                            f"one GPU not run at {views_count} views (~{baseline_seconds:.0f} s): extrapolated from "
                            f"{small} views measured in this run (decoder x ratio^2, encoder and heads x ratio)"
                        ),
                    }
                log(
                    record
                    | {"seconds": result["seconds"], "peak_gib": max(result["peak_gib_per_gpu"])}
                    | {"peak_gib_per_gpu": result["peak_gib_per_gpu"], "tokens_per_rank": result["tokens_per_rank"]}
                    | {"gather_seconds": result["gather_seconds"], "baseline": "1gpu"}
                    | {"baseline_seconds": baseline_seconds, "speedup": baseline_seconds / result["seconds"]}
                    | {"ratio_to_baseline": result["seconds"] / baseline_seconds}
                    | extra
                )
            del result
        baselines.pop(views_count, None)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
