"""Multi-view tracks for the COLMAP model without --refine (``fast3r_ns.colmap_tracks``): added time, what is
written, and how well the tracks agree with the truth (CPU).

Synthetic scene (``make_scene``, cameras on a 300 degree arc) with the oracle, clean and with the refinement
benchmark's noise; the reconstruction runs twice in one process, with and without ``colmap_tracks``, and the
model is written once. ``truth_spread_*``: distance between the true surface points behind a track's
observations and their mean, relative to the depth. With ``--bundle-adjust`` pycolmap's bundle adjustment runs
on the written model in a subprocess (it aborts the process on an invalid model).

    PYTHONPATH=. python benchmarks/bench_colmap_tracks.py --views 100 --width 512 --height 384
    PYTHONPATH=. python benchmarks/bench_colmap_tracks.py --views 1000 --width 256 --height 192
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_refine import NOISE
from benchmarks.common import RESULTS, append, commit
from fast3r_ns import PointOptions, ReconstructOptions, reconstruct_from_predictions
from fast3r_ns.io import PreparedImage
from fast3r_ns.io.colmap import build_colmap_model
from fast3r_ns.testing import OraclePredictor, make_scene

BUNDLE_ADJUST = (
    "import pycolmap, sys; m = pycolmap.Reconstruction(sys.argv[1]); pycolmap.bundle_adjustment(m); "
    "print(m.compute_mean_reprojection_error())"
)


def truth_spread(reconstruction, scene) -> np.ndarray:
    """[O] per observation: |true point - mean true point of its track| / depth."""
    tracks = reconstruction.tracks
    truth = np.empty((len(tracks.image), 3))
    for view in range(reconstruction.num_images):
        rows = np.flatnonzero(tracks.image == view)
        truth[rows] = scene.cast_pixels(view, tracks.pixel[rows].astype(np.float64))[1].reshape(-1, 3)
    lengths = np.diff(tracks.offsets)
    center = np.add.reduceat(truth, tracks.offsets[:-1]) / lengths[:, None]
    centers = np.array([camera.cam_to_world[:3, 3] for camera in scene.cameras])[tracks.image]
    track = np.repeat(np.arange(len(lengths)), lengths)
    return np.linalg.norm(truth - center[track], axis=1) / np.linalg.norm(truth - centers, axis=1)


def run(views: int, width: int, height: int, noisy: bool, seed: int, bundle_adjust: bool, with_baseline: bool) -> dict:
    scene = make_scene(views, image_size=(width, height), arc_degrees=300, seed=seed)
    blank = torch.zeros(1, 3, height, width)
    images = [PreparedImage(f"v{v}.png", blank, (width, height), (width, height), (0, 0)) for v in range(views)]
    predictions = OraclePredictor(scene, images, **(NOISE if noisy else {}), seed=seed)([im.tensor for im in images])
    options = ReconstructOptions(points=PointOptions(colors="network"), device="cpu")
    without_tracks = dataclasses.replace(options, points=PointOptions(colors="network", colmap_tracks=False))
    baseline_seconds = None
    if with_baseline:
        start = time.perf_counter()
        reconstruct_from_predictions(images, predictions, without_tracks)
        baseline_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = reconstruct_from_predictions(images, predictions, options)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        model = build_colmap_model(result, [f"v{v}.png" for v in range(views)])
        model.write(folder)
        write_seconds = time.perf_counter() - start
        bundle = {}
        if bundle_adjust:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", BUNDLE_ADJUST, folder], capture_output=True, text=True)
            bundle = {
                "bundle_adjustment_rc": done.returncode,
                "bundle_adjustment_seconds": time.perf_counter() - start,
                "reprojection_err_px_after_ba": float(done.stdout.split()[-1]) if done.returncode == 0 else None,
            }
    spread = truth_spread(result, scene)
    lengths = np.diff(result.tracks.offsets)
    seen = np.bincount(result.tracks.image, minlength=views)
    return {
        "bench": "colmap_tracks",
        "commit": commit(),
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "views": views,
        "height": height,
        "width": width,
        "oracle": "noisy" if noisy else "clean",
        **(NOISE if noisy else {}),
        "seconds": result.timings["tracks"],
        "reconstruct_seconds": seconds,
        **(
            {"baseline": "colmap_tracks off", "baseline_seconds": baseline_seconds}
            | {"ratio_to_baseline": seconds / baseline_seconds}
            if with_baseline
            else {}
        ),
        "samples_per_view": options.points.colmap_track_samples,
        "write_model_seconds": write_seconds,
        "dense_points": len(result.points) - result.tracks.num_tracks,
        "model_points": model.num_points3D(),
        "observations": int(lengths.sum()),
        "mean_track_length": float(lengths.mean()),
        "min_observations_per_view": int(seen.min()),
        "reprojection_err_px_mean": model.compute_mean_reprojection_error(),
        "truth_spread_median": float(np.median(spread)),
        "truth_spread_p99": float(np.percentile(spread, 99)),
        "truth_spread_over_1pct": float(np.mean(spread > 0.01)),
        **bundle,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[100])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--bundle-adjust", action="store_true", help="also run pycolmap's bundle adjustment")
    parser.add_argument("--oracle", nargs="+", choices=["clean", "noisy"], default=["clean", "noisy"])
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the reconstruction without tracks")
    args = parser.parse_args()
    for views in args.views:
        for noisy in [kind == "noisy" for kind in args.oracle]:
            try:
                record = run(
                    views, args.width, args.height, noisy, args.seed, args.bundle_adjust, not args.skip_baseline
                )
            except Exception as error:  # noqa: BLE001 - failures are recorded too
                record = {"bench": "colmap_tracks", "commit": commit(), "views": views, "error": repr(error)}
            append(RESULTS / "colmap_tracks_cpu.jsonl", record)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
