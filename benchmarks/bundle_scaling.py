"""Time of the refinement's bundle adjustment (``refine.bundle_adjust``) on one saved problem: by Ceres thread count
and by the share of tracks kept, so the adjustment's cost can be split from the rest of ``bench_refine``.

    PYTHONPATH=. python benchmarks/bundle_scaling.py dump .out/ba200.pkl --views 200   # first flow round's problem
    PYTHONPATH=. python benchmarks/bundle_scaling.py time .out/ba200.pkl --threads 1 2 4 8 16 --tracks 1 0.5
    PYTHONPATH=. python benchmarks/bundle_scaling.py time .out/ba200.pkl --solvers ceres cuda   # Ceres vs torch

``dump`` runs ``bench_refine`` (its scene, noise and options, arguments after the file name) up to the first flow
round's adjustment and pickles that call's arguments. ``time`` writes one record per setting to
results/bundle_scaling.jsonl; ``baseline_seconds`` is the first setting's time (all tracks), in the same run.
``--solvers``: "ceres" (pycolmap) or a torch device for ``bundle_torch`` (threads then only matter to Ceres);
the records of a torch solve carry the largest camera and focal difference from the first solver's result.
"""

from __future__ import annotations

import argparse
import os
import pickle
import runpy
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, append, commit, device_name  # noqa: E402
from fast3r_ns import refine  # noqa: E402


class _Dumped(BaseException):  # not caught by bench_refine, which records errors
    pass


def dump(path: Path, bench_args: list[str]) -> None:
    original, calls = refine.bundle_adjust, []

    def capture(*args, **kwargs):
        calls.append(None)
        if len(calls) == 2:  # the first is the pointmap stage's
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps((args, kwargs)))
            raise _Dumped
        return original(*args, **kwargs)

    refine.bundle_adjust = capture
    sys.argv = ["bench_refine.py", *bench_args]
    try:
        runpy.run_path(str(Path(__file__).with_name("bench_refine.py")), run_name="__main__")
    except _Dumped:
        print(f"wrote {path}")
    finally:
        refine.bundle_adjust = original


def _kept_tracks(args: tuple, share: float) -> tuple:
    """The problem with every track kept with probability ``share`` (seeded)."""
    sizes, intrinsics, cam_to_world, points, offsets, view, pixel, options = args
    keep = np.random.default_rng(0).random(len(points)) < share
    lengths = np.diff(offsets)
    rows = np.repeat(keep, lengths)
    new_offsets = np.concatenate([[0], np.cumsum(lengths[keep])])
    return sizes, intrinsics, cam_to_world, points[keep], new_offsets, view[rows], pixel[rows], options


def time_settings(path: Path, threads: list[int], shares: list[float], solvers: list[str]) -> None:
    args, _ = pickle.loads(path.read_bytes())
    baseline = None
    for share in shares:
        problem = _kept_tracks(args, share)
        first = None
        for solver, count in ((s, c) for s in solvers for c in (threads if s == "ceres" else threads[:1])):
            device = None if solver == "ceres" else solver
            options = replace(problem[-1], num_threads=count, device=device)
            _synchronize(device)
            tic = time.perf_counter()
            result = refine.bundle_adjust(*problem[:-1], options)
            _synchronize(device)
            seconds = time.perf_counter() - tic
            baseline = baseline or seconds
            first = first or result
            append(
                RESULTS / "bundle_scaling.jsonl",
                {
                    "bench": "bundle_scaling",
                    "commit": commit(),
                    "device": device_name(),
                    "cpus": len(os.sched_getaffinity(0)),
                    "threads": count,
                    "solver": solver,
                    "pose_diff_max": float(np.abs(result.cam_to_world - first.cam_to_world).max()),
                    "focal_diff_rel_max": float(np.abs(result.intrinsics[:, 0] / first.intrinsics[:, 0] - 1).max()),
                    "views": len(problem[2]),
                    "track_share": share,
                    "observations": len(problem[5]),
                    "seconds": seconds,
                    "baseline": "first setting",
                    "baseline_seconds": baseline,
                    "ratio_to_baseline": seconds / baseline,
                    **result.stats,
                },
            )


def _synchronize(device: str | None) -> None:
    if device is not None and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    dumping = sub.add_parser("dump", help="save the first flow round's adjustment of a bench_refine run")
    dumping.add_argument("path", type=Path)
    timing = sub.add_parser("time", help="time the saved adjustment")
    timing.add_argument("path", type=Path)
    timing.add_argument("--threads", type=int, nargs="+", default=[len(os.sched_getaffinity(0))])
    timing.add_argument("--tracks", type=float, nargs="+", default=[1.0], help="shares of the tracks kept")
    timing.add_argument("--solvers", nargs="+", default=["ceres"], help='"ceres" or torch devices ("cuda")')
    args, rest = parser.parse_known_args()
    if args.command == "dump":
        dump(args.path, rest)
    else:
        time_settings(args.path, args.threads, args.tracks, args.solvers)


if __name__ == "__main__":
    main()
