"""Thread scaling of the refinement's pair flows (``geometry.flow.PairFlow.flows``: two DIS "medium" flows of
512x384 greys with the prediction warp), on Python threads with OpenCV's own threads on or off, and on a fork pool
of processes. Synthetic smooth-noise images; the time per pair does not depend on the content much.

    python benchmarks/flow_scaling.py            # one record per setting in results/flow_scaling.jsonl

``seconds_per_pair`` is the wall time over 96 pairs divided by 96; ``baseline_seconds`` the one-thread time with
OpenCV's default threads, measured in the same run.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, append, commit  # noqa: E402
from fast3r_ns.geometry.flow import FlowOptions, PairFlow  # noqa: E402

HEIGHT, WIDTH = 384, 512
_rng = np.random.default_rng(0)
_base = cv2.GaussianBlur((_rng.random((HEIGHT * 2, WIDTH * 2)) * 255).astype(np.float32), (0, 0), 3)
GREYS = [
    cv2.normalize(_base[i : i + HEIGHT, i : i + WIDTH], None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    for i in range(0, 64, 2)
]
PAIRS = [(i, (i + k) % len(GREYS)) for i in range(len(GREYS)) for k in (1, 2, 3, 4)][:96]
PREDICTED = np.zeros((HEIGHT, WIDTH, 2), np.float32)


def _pair(pair: tuple[int, int]) -> np.ndarray:
    flow = PairFlow(FlowOptions()).flows((GREYS[pair[0]], GREYS[pair[1]]), (PREDICTED, PREDICTED))[0]
    return flow[::2, ::2].copy()


def on_threads(threads: int, opencv_threads: int) -> float:
    cv2.setNumThreads(opencv_threads)
    local = threading.local()

    def one(pair):
        if not hasattr(local, "flow"):
            local.flow = PairFlow(FlowOptions())
        return local.flow.flows((GREYS[pair[0]], GREYS[pair[1]]), (PREDICTED, PREDICTED))

    tic = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, PAIRS))
    return time.perf_counter() - tic


def on_processes(processes: int) -> float:
    cv2.setNumThreads(1)
    tic = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        list(pool.imap(_pair, PAIRS, chunksize=2))
    return time.perf_counter() - tic


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    default = cv2.getNumThreads()
    base = {"bench": "flow_scaling", "commit": commit(), "device": "cpu", "cpus": cores, "pairs": len(PAIRS)}
    base |= {"height": HEIGHT, "width": WIDTH, "preset": "medium"}
    baseline = on_threads(1, default)
    settings = [
        ("threads", 1, 1),
        ("threads", cores, default),
        ("threads", cores, 1),
        ("threads", max(1, cores // 2), 1),
    ]
    settings += [("processes", cores, 1), ("processes", max(1, cores // 2), 1)]
    out = RESULTS / "flow_scaling.jsonl"
    for kind, workers, opencv_threads in settings:
        seconds = on_threads(workers, opencv_threads) if kind == "threads" else on_processes(workers)
        append(
            out,
            base
            | {"workers": kind, "threads": workers, "opencv_threads": opencv_threads, "seconds": seconds}
            | {"seconds_per_pair": seconds / len(PAIRS), "baseline": "1 thread, OpenCV default threads"}
            | {"baseline_seconds": baseline, "ratio_to_baseline": seconds / baseline},
        )


if __name__ == "__main__":
    main()
