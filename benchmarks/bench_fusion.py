"""Fused dense cloud (``PointOptions.fuse``, ``geometry.fusion``) against the pointmaps' cloud: distance to the
true surface after the refinement, on the splat scenes with the FastLikeOracle at the error levels of
``bench_splat.LEVELS``.

For each scene / level / seed the refinement runs once (``reconstruct_from_predictions`` with ``--refine``'s
defaults); then the refined cameras' fusion is repeated with 1, 2 and 3 confirming neighbours, from the local
depth maps alone and with the depths triangulated from the refinement's flows (the default), the default without
its median filter (``FusionOptions.median_window`` 1), and the global pointmaps at the same confident pixels are
scored too. Distances: each point to the nearest true surface point
(every pixel of every view cast at full resolution) after the similarity that takes the refined camera centres
onto the true ones, relative to the scene's diagonal. One record per variant in ``results/fusion_cpu.jsonl``.

    PYTHONPATH=. python benchmarks/bench_fusion.py                        # room_natural, room; 1x, 6x; seed 11
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import splat_scene  # noqa: E402
from bench_splat import LEVELS, FastLikeOracle  # noqa: E402

from benchmarks.common import RESULTS, append, commit  # noqa: E402
from fast3r_ns import (  # noqa: E402
    PointOptions,
    ReconstructOptions,
    RefineOptions,
    pipeline,  # noqa: E402
    reconstruct_from_predictions,
)
from fast3r_ns.geometry import fusion  # noqa: E402
from fast3r_ns.geometry.align import umeyama  # noqa: E402
from fast3r_ns.geometry.conventions import pixel_centers  # noqa: E402
from fast3r_ns.io.images import load_images  # noqa: E402
from fast3r_ns.point_cloud import fuse_dense  # noqa: E402


def surface_distance(scene, cam_to_world: np.ndarray):
    """A function scoring points [N, 3] of the reconstruction's frame: (their distances to the true surface, the
    distances of a sample of the true surface to them), over the diagonal."""
    from scipy.spatial import cKDTree

    truth = np.concatenate(
        [scene.cast_pixels(v, pixel_centers(c.height, c.width).reshape(-1, 2))[1] for v, c in enumerate(scene.cameras)]
    )
    truth = truth[np.isfinite(truth).all(1)]
    tree, diagonal = cKDTree(truth), float(np.linalg.norm(np.ptp(truth, axis=0)))
    true_centers = np.stack([c.cam_to_world[:3, 3] for c in scene.cameras])
    scale, rotation, shift = (
        t.numpy() for t in umeyama(torch.from_numpy(cam_to_world[:, :3, 3]), torch.from_numpy(true_centers))
    )
    sample = truth[np.random.default_rng(0).choice(len(truth), min(len(truth), 200_000), replace=False)]

    def score(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        aligned = float(scale) * points @ rotation.T + shift
        return tree.query(aligned)[0] / diagonal, cKDTree(aligned).query(sample)[0] / diagonal

    return score


def run(name: str, level: str, seed: int) -> list[dict]:
    scene = splat_scene.make(name)
    scene = scene.reordered(scene.process_order())
    with tempfile.TemporaryDirectory() as tmp:
        images = load_images(scene.write_images(Path(tmp)), size=512)
    predictions = FastLikeOracle(scene, images, seed=seed, **LEVELS[level])([im.tensor for im in images])
    captured = {}

    def spy(*args):
        captured["args"] = args
        return fuse_dense(*args)

    pipeline.fuse_dense, original = spy, pipeline.fuse_dense
    try:
        options = ReconstructOptions(
            device="cpu", points=PointOptions(max_points=100_000, colors="network"), refine=RefineOptions(enabled=True)
        )
        reconstruction = reconstruct_from_predictions(images, predictions, options)
    finally:
        pipeline.fuse_dense = original
    distance = surface_distance(scene, reconstruction.cam_to_world)
    args, flows = captured["args"][:6], captured["args"][7]
    base = {"bench": "fusion", "commit": commit(), "device": "cpu", "scene": name, "views": len(images)}
    base |= {
        "level": level,
        "seed": seed,
        "noise": LEVELS[level],
        "height": images[0].size[1],
        "width": images[0].size[0],
    }
    records = []
    default = fusion.FusionOptions()
    for source, pair_flows in (("local depth", None), ("triangulated", flows)):
        for min_views in (1, 2, 3):
            tic = time.perf_counter()
            fused, stats = fuse_dense(*args, fusion.FusionOptions(min_views=min_views), pair_flows)
            seconds = time.perf_counter() - tic
            points = torch.cat([f.points for f in fused]).double().numpy()
            records.append(
                _record(base, f"fused {source}, {min_views} confirming", distance(points), seconds, stats)
                | {"min_views": min_views, "default": min_views == default.min_views and source == "triangulated"}
            )
    # the default without the median filter of the triangulated depth maps
    tic = time.perf_counter()
    fused, stats = fuse_dense(*args, fusion.FusionOptions(median_window=1), flows)
    seconds = time.perf_counter() - tic
    points = torch.cat([f.points for f in fused]).double().numpy()
    records.append(
        _record(base, "fused triangulated, 2 confirming, no median", distance(points), seconds, stats)
        | {"min_views": default.min_views, "median_window": 1, "default": False}
    )
    # the global pointmaps at the pixels the default fusion kept (same pixels, unfused points)
    fused, _ = fuse_dense(*args, default, flows)
    global_points = np.concatenate(
        [p["pts3d_in_other_view"][0].reshape(-1, 3)[f.index].double().numpy() for p, f in zip(predictions, fused)]
    )
    records.append(_record(base, "global pointmaps, same pixels", distance(global_points), None, {}))
    return records


def _record(base: dict, variant: str, scores, seconds: float | None, stats: dict) -> dict:
    distance, uncovered = scores
    return base | {
        "variant": variant,
        "points": int(len(distance)),
        "surface_distance_rel_median": float(np.median(distance)),
        "surface_distance_rel_p90": float(np.quantile(distance, 0.9)),
        # share of the true surface (every view's pixels) with no point within 0.5 % / 1 % of the diagonal
        "uncovered_0.005": float(np.mean(uncovered > 0.005)),
        "uncovered_0.01": float(np.mean(uncovered > 0.01)),
        "seconds": seconds,
        "tolerance": stats.get("fusion_tolerance"),
        "triangulated": stats.get("fusion_triangulated"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=["room_natural", "room"], choices=splat_scene.SCENES)
    parser.add_argument("--levels", nargs="+", default=["1x", "6x"], choices=LEVELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[11])
    parser.add_argument("--out", default=str(RESULTS / "fusion_cpu.jsonl"))
    args = parser.parse_args()
    for name in args.scenes:
        for level in args.levels:
            for seed in args.seeds:
                for record in run(name, level, seed):
                    append(Path(args.out), record)
                    print(
                        f"{name} {level} s{seed} {record['variant']}: {record['points']} points, median "
                        f"{record['surface_distance_rel_median']:.5f}, p90 {record['surface_distance_rel_p90']:.5f}, "
                        f"uncovered {record['uncovered_0.005']:.4f} / {record['uncovered_0.01']:.4f}"
                    )


if __name__ == "__main__":
    main()
