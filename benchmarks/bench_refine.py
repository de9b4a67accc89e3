"""Refinement benchmark: camera errors before/after ``--refine``, its time and peak memory (CPU).

Synthetic scene (``make_scene``, cameras on a 300 degree arc) with the noisy oracle: per-view disagreement of the
local and global heads (3 % focal, 1 degree, 1 % of depth) plus 1 % depth noise, 0.3 % point noise, 2 % outliers.
Errors are maxima (and means) over views after the global similarity; translation relative to the room diagonal.
Images are textured (``textured_images``): each pixel coloured by a procedural texture of its TRUE world point, so
the views are photometrically consistent and optical flow (``RefineOptions.tracks="flow"``) has something to track.

    PYTHONPATH=. python benchmarks/bench_refine.py --views 100 --width 512 --height 384
    PYTHONPATH=. python benchmarks/bench_refine.py --views 1000 --width 256 --height 192
    PYTHONPATH=. python benchmarks/bench_refine.py --views 200 --width 512 --height 384 --device cuda   # GPU machine
    PYTHONPATH=. python benchmarks/bench_refine.py --views 100 --set refine.flow.rounds=1 refine.flow.max_observations=0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import time

import numpy as np
import torch

from benchmarks.common import RESULTS, append, commit, device_name, device_slug
from fast3r_ns import PointOptions, ReconstructOptions, RefineBundleOptions, RefineOptions, reconstruct_from_predictions
from fast3r_ns.geometry.conventions import pixel_centers
from fast3r_ns.io import PreparedImage
from fast3r_ns.options import with_values
from fast3r_ns.testing import OraclePredictor, make_scene
from fast3r_ns.testing.metrics import reconstruction_errors
from fast3r_ns.testing.scene import Scene

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


def _world_texture(points: np.ndarray, obj: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """[N, 3] colours in [0, 1] of world points [N, 3]: products of sines along fixed oblique directions at three
    frequencies (periods about 1.6, 0.6 and 0.2 room units, i.e. tens down to a few pixels), tinted per surface."""
    directions = np.array([[0.8, 0.6, 0.0], [0.0, 0.6, 0.8], [0.6, 0.0, 0.8], [0.58, 0.58, 0.58]])
    grey = np.full(len(points), 0.5)
    for frequency, amplitude in ((4.0, 0.22), (11.0, 0.16), (29.0, 0.1)):
        phase = points @ directions.T * frequency  # [N, 4]
        grey += amplitude * np.sin(phase[:, 0]) * np.cos(phase[:, 1])
        grey += amplitude * np.sin(phase[:, 2] + 1.0) * np.cos(phase[:, 3] + 2.0)
    return np.clip(tint[obj] * grey[:, None] * 1.6, 0.0, 1.0)


def textured_images(scene: Scene, width: int, height: int) -> list[PreparedImage]:
    """Network-size PreparedImages (original = network size) coloured by ``_world_texture`` of their true points."""
    tint = np.random.default_rng(7).uniform(0.55, 1.0, size=(len(scene.sphere_radii) + 6, 3))
    centers = pixel_centers(height, width)
    images = []
    for view in range(len(scene.cameras)):
        _, world, obj = scene.cast_pixels(view, centers)
        rgb = _world_texture(world.reshape(-1, 3), obj.reshape(-1), tint).reshape(height, width, 3)
        tensor = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None] * 2.0 - 1.0
        images.append(PreparedImage(f"v{view}.png", tensor, (width, height), (width, height), (0, 0)))
    return images


def _errors(result, scene) -> dict[str, float]:
    return reconstruction_errors(result, scene)


def run(
    views: int,
    width: int,
    height: int,
    refine_points: bool | None,
    seed: int,
    large_views: int,
    device: str = "cpu",
    overrides: dict | None = None,
) -> dict:
    scene = make_scene(views, image_size=(width, height), arc_degrees=300, seed=seed)
    start = time.perf_counter()
    images = textured_images(scene, width, height)
    render_seconds = time.perf_counter() - start
    start = time.perf_counter()
    predictions = OraclePredictor(scene, images, **NOISE, seed=seed)([im.tensor for im in images])
    generate_seconds = time.perf_counter() - start
    options = ReconstructOptions(points=PointOptions(colors="network"), device=device)
    before = reconstruct_from_predictions(images, predictions, options)
    rss_before = _peak_gib()
    start = time.perf_counter()
    refine = RefineOptions(
        enabled=True, large_views=large_views, bundle=RefineBundleOptions(refine_points=refine_points)
    )
    refined = with_values(dataclasses.replace(options, refine=refine), overrides or {})
    refine = refined.refine
    after = reconstruct_from_predictions(
        images,
        predictions,
        refined,
        lambda message: print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True),
    )
    total = time.perf_counter() - start
    resolved = refine.resolved(views)
    error_before, error_after = _errors(before, scene), _errors(after, scene)
    return {
        "bench": "refine",
        "commit": commit(),
        "device": device_name() if device != "cpu" else "cpu",
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "views": views,
        "height": height,
        "width": width,
        "dtype": "fp32",
        "images": "textured",
        "refine_tracks": resolved.tracks,
        "refine_large_views": large_views,
        "overrides": overrides or {},
        "refine_options": dataclasses.asdict(resolved),  # the None/"auto" values resolved for this scene size
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
        "render_seconds": render_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[100])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument(
        "--refine-points",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let the track points move (default: the pipeline's choice, free for flow tracks)",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--large-views",
        type=int,
        default=RefineOptions.large_views,
        help="RefineOptions.large_views: above it the large-scene refinement settings (a huge value: the small ones)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device of the geometry (cameras, point cloud); the refinement itself (OpenCV flow, Ceres) runs "
        "on the CPU cores. Not cpu: records go to refine_<gpu>.jsonl",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="PATH=JSON",
        help="options of the refined run by dotted path, e.g. refine.flow.rounds=1 refine.flow.max_observations=0",
    )
    args = parser.parse_args()
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    for views in args.views:
        try:
            record = run(
                views, args.width, args.height, args.refine_points, args.seed, args.large_views, args.device, overrides
            )
        except Exception as error:  # noqa: BLE001 - failures are recorded too
            record = {"bench": "refine", "commit": commit(), "views": views, "error": repr(error)}
        append(RESULTS / f"refine_{'cpu' if args.device == 'cpu' else device_slug()}.jsonl", record)


if __name__ == "__main__":
    main()
