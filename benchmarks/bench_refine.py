"""Refinement benchmark: camera errors before/after ``--refine``, its time and peak memory (CPU).

Synthetic scene (``make_scene``, cameras on a 300 degree arc) with the noisy oracle: per-view disagreement of the
local and global heads (3 % focal, 1 degree, 1 % of depth) plus 1 % depth noise, 0.3 % point noise, 2 % outliers.
Errors are maxima (and means) over views after the global similarity; translation relative to the room diagonal.

    PYTHONPATH=. python benchmarks/bench_refine.py --views 100 --width 512 --height 384
    PYTHONPATH=. python benchmarks/bench_refine.py --views 1000 --width 256 --height 192
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from benchmarks.common import RESULTS, append, commit
from fast3r_ns import ReconstructOptions, reconstruct_from_predictions
from fast3r_ns.io import PreparedImage
from fast3r_ns.testing import OraclePredictor, make_scene
from fast3r_ns.testing.metrics import reconstruction_errors

NOISE = {
    "local_focal_noise": 0.03,
    "local_rotation_noise_deg": 1.0,
    "local_translation_noise": 0.01,
    "depth_noise": 0.01,
    "point_noise": 0.003,
    "outlier_fraction": 0.02,
}


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _errors(result, scene) -> dict[str, float]:
    return reconstruction_errors(result, scene)


def run(views: int, width: int, height: int, refine_points: bool, seed: int) -> dict:
    scene = make_scene(views, image_size=(width, height), arc_degrees=300, seed=seed)
    blank = torch.zeros(1, 3, 1, 1).expand(1, 3, height, width)  # colours from the network input: no file reads
    images = [PreparedImage(f"v{i}.png", blank, (width, height), (width, height), (0, 0)) for i in range(views)]
    start = time.perf_counter()
    predictions = OraclePredictor(scene, images, **NOISE, seed=seed)([im.tensor for im in images])
    generate_seconds = time.perf_counter() - start
    options = {"device": "cpu", "colors": "network"}
    before = reconstruct_from_predictions(images, predictions, ReconstructOptions(**options))
    rss_before = _peak_gib()
    start = time.perf_counter()
    after = reconstruct_from_predictions(
        images, predictions, ReconstructOptions(refine=True, refine_points=refine_points, **options)
    )
    total = time.perf_counter() - start
    error_before, error_after = _errors(before, scene), _errors(after, scene)
    return {
        "bench": "refine",
        "commit": commit(),
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "views": views,
        "height": height,
        "width": width,
        "dtype": "fp32",
        "refine_points": refine_points,
        **NOISE,
        "seconds": after.timings["refine"],
        "reconstruct_seconds": total,
        "peak_gib": _peak_gib(),
        "peak_gib_before_refine": rss_before,
        "predictions_gib": sum(v.numel() * v.element_size() for p in predictions for v in p.values()) / 2**30,
        "baseline": "unrefined",
        **error_after,
        **{f"baseline_{k}": v for k, v in error_before.items()},
        **{k: v for k, v in after.refine_stats.items()},
        "generate_seconds": generate_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[100])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--refine-points", action="store_true", help="let the track points move too")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    for views in args.views:
        try:
            record = run(views, args.width, args.height, args.refine_points, args.seed)
        except Exception as error:  # noqa: BLE001 - failures are recorded too
            record = {"bench": "refine", "commit": commit(), "views": views, "error": repr(error)}
        append(RESULTS / "refine_cpu.jsonl", record)


if __name__ == "__main__":
    main()
