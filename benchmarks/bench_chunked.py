"""Chunked reconstruction at the released size (random weights): time and peak memory per pass, merge time, total.

Usage (one GPU, ~6 min on an H200 for the default 4000 views of 512x384 in passes of at most 600 views = 7 passes;
total time grows like views x pass size, so smaller passes are faster, and a pass of 1000 views takes ~140 s):

    python benchmarks/bench_chunked.py --views 4000 --chunk 600 --out benchmarks/results/chunked_h200.jsonl

CPU smoke test: python benchmarks/bench_chunked.py --height 64 --width 64 --views 40 --chunk 16 --device cpu
``--time-budget S`` stops starting passes once the next one would end after S seconds (the record then says how
many passes were measured and extrapolates the total from them). JSON lines go to
benchmarks/results/chunked_<gpu>.jsonl (fields: shared/conventions/RESULTS.md).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_model import DTYPES, build  # noqa: E402
from benchmarks.common import RESULTS, append, commit, device_name, device_slug, sync  # noqa: E402
from fast3r_ns.chunked import ChunkedPredictor, estimate_pass_gib, plan_chunks  # noqa: E402
from fast3r_ns.predictor import Fast3RPredictor  # noqa: E402


class BudgetExceeded(Exception):
    """Raised instead of starting a pass that would end after the time budget."""


def make_views(views: int, height: int, width: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """Smooth random images in [-1, 1] (as bench_model.images), built in blocks, kept on the CPU in ``dtype``."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for start in range(0, views, 256):
        count = min(256, views - start)
        coarse = torch.rand(count, 3, max(1, height // 32), max(1, width // 32), generator=generator) * 2 - 1
        full = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
        out += [v[None].to(dtype) for v in full]
    return out


class TimedPredictor:
    """Fast3RPredictor (outputs to the CPU) recording the time and peak GPU memory of every pass."""

    def __init__(self, predictor: Fast3RPredictor, budget: float | None, started: float) -> None:
        self.predictor, self.budget, self.started = predictor, budget, started
        self.passes: list[dict] = []

    def __call__(self, views: list[torch.Tensor]) -> list[dict]:
        device = str(self.predictor.device)
        if self.budget is not None and self.passes:
            elapsed = time.perf_counter() - self.started
            if elapsed + max(p["seconds"] for p in self.passes) > self.budget:
                raise BudgetExceeded
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        start = sync(device)
        outputs = self.predictor(views)
        seconds = sync(device) - start
        if device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 2**30
        else:  # peak RSS of the process
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        self.passes.append({"views": len(views), "seconds": seconds, "peak_gib": peak})
        print(f"pass {len(self.passes)}: {len(views)} views, {seconds:.1f} s, peak {peak:.1f} GiB", flush=True)
        return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=4000)
    parser.add_argument("--chunk", type=int, default=600, help="max views per pass (anchors included)")
    parser.add_argument("--anchors", type=int, default=8)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--dtype", default=None, choices=list(DTYPES), help="default: bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds; stop starting passes after it")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    dtype_name = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    out = args.out or RESULTS / f"chunked_{device_slug()}.jsonl"
    base = {"bench": "chunked", "commit": commit(), "device": device_name(), "gpus": 1, "torch": torch.__version__}
    base |= {"height": args.height, "width": args.width, "dtype": dtype_name}
    started = time.perf_counter()
    model = build(DTYPES[dtype_name], args.device)
    base |= {"attention": model.attention_options.as_record()}
    views = make_views(args.views, args.height, args.width, DTYPES[dtype_name])
    anchors, passes = plan_chunks(args.views, args.chunk, args.anchors)
    print(f"{args.views} views in {len(passes)} passes of at most {args.chunk} ({len(anchors)} anchors)", flush=True)
    predictor = Fast3RPredictor(model, args.device)
    predictor(views[:2])  # warm-up
    timed = TimedPredictor(predictor, args.time_budget, started)
    chunked = ChunkedPredictor(timed, args.chunk, args.anchors, progress=print)
    record = base | {"views": args.views, "max_views_per_pass": args.chunk, "anchors": len(anchors)}
    record |= {"passes": len(passes)}
    start = time.perf_counter()
    try:
        chunked(views)
        complete = True
    except BudgetExceeded:
        complete = False
    except torch.OutOfMemoryError as error:
        append(out, record | {"case": "total", "error": f"out of memory: {str(error).splitlines()[0]}"})
        raise
    total = time.perf_counter() - start
    for fit, measured in zip(chunked.report, timed.passes):
        append(
            out,
            base
            | {"case": "pass", "pass": fit.chunk, "views": measured["views"], "seconds": measured["seconds"]}
            | {"peak_gib": measured["peak_gib"], "merge_seconds": fit.merge_seconds, "residual_rel": fit.residual_rel}
            | {"inlier_fraction": fit.inlier_fraction, "anchor_points": fit.anchor_points, "fit_ok": fit.ok},
        )
    measured = len(chunked.report)
    pass_seconds = [p["seconds"] for p in timed.passes[:measured]]
    merge_seconds = sum(f.merge_seconds for f in chunked.report)
    if complete:
        seconds = total
    else:  # the passes not run take as long as the measured ones on average
        seconds = total + (len(passes) - measured) * sum(pass_seconds) / measured
    # One pass over all views, for comparison: attention is quadratic in the views (the encoder and heads are
    # linear, a few percent at these sizes), memory from fast3r_ns.chunked.estimate_pass_gib.
    per_pass = max(pass_seconds) / max(p["views"] for p in timed.passes[:measured]) ** 2
    tokens = args.height * args.width / 256
    append(
        out,
        record
        | {"case": "total", "seconds": seconds, "passes_measured": measured, "extrapolated": not complete}
        | {"predict_seconds": sum(pass_seconds), "merge_seconds": merge_seconds}
        | {"peak_gib": max(p["peak_gib"] for p in timed.passes)}
        | {"seconds_per_view": seconds / args.views}
        | {"one_pass_seconds_estimate": per_pass * args.views**2}
        | {"one_pass_peak_gib_estimate": estimate_pass_gib(args.views, tokens, itemsize=DTYPES[dtype_name].itemsize)}
        | {"worst_residual_rel": max((f.residual_rel for f in chunked.report[1:]), default=0.0)}
        | {"note": "random weights: the anchor fit numbers measure nothing about real scenes"},
    )


if __name__ == "__main__":
    main()
