"""Why a view is held: its flow pairs against the true flow, round by round (a diagnosis, prints only).

Runs the refinement on one ``bench_splat.py poses`` case (oracle predictions cached in ``--cache``), keeps the
cameras each flow round started from, then for every candidate pair of the given views recomputes that round's
predicted flow (local depth placed with the round's cameras) and DIS flow and scores both against the true flow
(the clean oracle's pointmap projected with the true cameras), in network pixels (``--window R``: also a patch
correlation search within R px of the prediction, and each diagnosed view relocalised by PnP on those matches,
``geometry.relocalise``; the refinement does this with its adjusted track points instead of the placed depth):

    a->b: anchors N | prediction error median | DIS error median, share within 1 px |
          roundtrip-consistent (of them within 1 px) | kept by the gates (of them within 1 px)

    PYTHONPATH=. python benchmarks/held_view_flow.py room 2.0 11 --views 16 17 --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import splat_scene
from benchmarks.bench_splat import FastLikeOracle, level_options
from fast3r_ns import PointOptions, ReconstructOptions, reconstruct_from_predictions, refinement
from fast3r_ns.cameras import network_intrinsics
from fast3r_ns.geometry import flow
from fast3r_ns.geometry.relocalise import WindowOptions, pnp_pose, window_matches
from fast3r_ns.geometry.tracks import candidate_pairs
from fast3r_ns.io.images import load_images
from fast3r_ns.options import with_values
from fast3r_ns.refine_rounds import depth_pointmap
from fast3r_ns.testing.metrics import camera_errors
from fast3r_ns.testing.oracle import OraclePredictor


def _first(tensor: torch.Tensor) -> np.ndarray:
    return (tensor[0] if tensor.dim() == 4 else tensor).float().numpy()


def refined_rounds(prepared, predictions) -> tuple[list[tuple[np.ndarray, np.ndarray]], object]:
    """The refined reconstruction and the (cam_to_world, intrinsics) each flow round started from."""
    started, original = [], refinement._flow_tracks

    def spy(images, predictions, cameras, options, *args, **kwargs):
        started.append((cameras.cam_to_world.copy(), cameras.intrinsics.copy()))
        return original(images, predictions, cameras, options, *args, **kwargs)

    base = ReconstructOptions(points=PointOptions(max_points=20000, colors="network"), device="cpu")
    refinement._flow_tracks = spy
    try:
        after = reconstruct_from_predictions(prepared, predictions, with_values(base, {"refine.enabled": True}))
    finally:
        refinement._flow_tracks = original
    return started, after


def window_report(radius, greys, predicted, pixels, true_step, a, b, maps, views, located) -> str:
    """The report of ``window_matches`` for pair a -> b (kept, and within 2 px of the truth); collects its 3-D/2-D
    matches into ``located`` where b is a diagnosed view and a is not."""
    if radius <= 0:
        return ""
    kept, targets = window_matches(greys[a], greys[b], predicted, pixels, WindowOptions(radius=radius))
    if not len(kept):
        return " | window 0"
    right = np.linalg.norm(targets - (pixels[kept] + true_step[kept]), axis=-1) < 2.0
    if b in views and a not in views:
        points = flow._at(maps[a], pixels[kept])
        finite = np.isfinite(points).all(-1)
        located.setdefault(b, []).append((points[finite], targets[finite]))
    return f" | window {len(kept)} ({right.sum()})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", choices=splat_scene.SCENES)
    parser.add_argument("level", help="a bench_splat.LEVELS key (1x, 3x, 6x) or degrees (2.0)")
    parser.add_argument("seed", type=int)
    parser.add_argument("--views", type=int, nargs="*", default=[], help="views to diagnose (default: the held ones)")
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--cache", type=Path, default=Path(".out/posecache"))
    parser.add_argument(
        "--window",
        type=int,
        default=0,
        help="also match by patch correlation within this many px of the prediction "
        "and relocalise each diagnosed view by PnP on its matches from the other views (0: off)",
    )
    args = parser.parse_args()

    scene = splat_scene.make(args.scene)
    ordered = scene.reordered(scene.process_order())
    with tempfile.TemporaryDirectory() as tmp:
        prepared = load_images(ordered.write_images(Path(tmp)), size=512)
    cache = args.cache / f"{args.scene}_{args.level}_{args.seed}.pt"
    if cache.is_file():
        predictions = torch.load(cache)
    else:
        noise = level_options(args.level)
        predictions = FastLikeOracle(ordered, prepared, seed=args.seed, **noise)([im.tensor for im in prepared])
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(predictions, cache)
    started, after = refined_rounds(prepared, predictions)
    truth = ordered.cam_to_world_in_view0()
    error = camera_errors(after.cam_to_world, truth, ordered.size)["rotation_err_deg"]
    print(f"rotation max / median {error.max():.3f} / {np.median(error):.3f} deg; unfixed {after.refine_unfixed}")
    views = args.views or sorted(after.refine_unfixed)
    print("worst views: " + ", ".join(f"{v} {error[v]:.3f}" for v in np.argsort(-error)[:6]))

    clean = OraclePredictor(ordered, prepared, normalize=False)([im.tensor for im in prepared])
    true_maps = [_first(p["pts3d_in_other_view"]) for p in clean]
    true_network = network_intrinsics(prepared, np.array([camera.intrinsics for camera in ordered.cameras]))
    true_w2c = np.linalg.inv(truth)
    options = flow.FlowOptions()
    greys = [flow.grey_image(image.tensor) for image in prepared]
    masks = flow.confidence_masks([p["conf"].reshape(p["conf"].shape[-2:]) for p in predictions], 10.0, 1.5)
    pair_flow = flow.PairFlow(options)
    for number in args.rounds:
        cam_to_world, intrinsics = started[number - 1]
        network, w2c = network_intrinsics(prepared, intrinsics), np.linalg.inv(cam_to_world)
        maps = []
        for view, prediction in enumerate(predictions):
            world = _first(prediction["pts3d_in_other_view"]).copy()
            world[~masks[view]] = np.nan
            local = _first(prediction["pts3d_local"])
            maps.append(depth_pointmap(local, world, network[view], cam_to_world[view]))
        anchors = [flow.view_anchors(m, np.ones(m.shape[:2]), g, options) for m, g in zip(maps, greys)]
        pairs = candidate_pairs(cam_to_world, [flow._Points(a[1]) for a in anchors], 10)
        print(f"--- round {number}")
        located: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for view in views:
            for i, j in pairs:
                if view not in (i, j):
                    continue
                for a, b in ((i, j), (j, i)):
                    pixels = anchors[a][0]
                    predicted = flow.predicted_flow(maps[a], w2c[b], network[b])
                    forward = pair_flow.flow(greys[a], greys[b], predicted)
                    backward = pair_flow.flow(greys[b], greys[a], flow.predicted_flow(maps[b], w2c[a], network[a]))
                    step, back = pair_flow.measure(forward, backward, pixels)
                    guess = flow._at(predicted, pixels)
                    true_step = flow._at(flow.predicted_flow(true_maps[a], true_w2c[b], true_network[b]), pixels)
                    kept, _, _ = pair_flow.gate(pixels, step, back, guess)
                    miss = np.linalg.norm(step - true_step, axis=-1)
                    right = miss < 1.0
                    consistent = np.linalg.norm(step + back, axis=-1) <= options.max_roundtrip
                    off = np.nanmedian(np.linalg.norm(guess - true_step, axis=-1))
                    print(
                        f"{a:3d}->{b:3d}: anchors {len(pixels)} | prediction {off:6.1f} | DIS {np.nanmedian(miss):6.2f}"
                        f" {right[np.isfinite(miss)].mean():.2f} | roundtrip {consistent.sum()} "
                        f"({(consistent & right).sum()}) | kept {len(kept)} ({right[kept].sum()})"
                        + (window_report(args.window, greys, predicted, pixels, true_step, a, b, maps, views, located))
                    )
        for view, found in located.items():
            points, pixels = (np.concatenate(parts) for parts in zip(*found))
            moved = cam_to_world.copy()
            pose, inliers = pnp_pose(points, pixels, network[view], WindowOptions().threshold_px)
            if pose is None:
                print(f"view {view} by PnP: {len(points)} matches, no pose")
                continue
            moved[view], inliers = pose, int(inliers.sum())
            free = ~np.isin(np.arange(len(moved)), views)
            before = camera_errors(cam_to_world, truth, ordered.size, free)["rotation_err_deg"][view]
            after_pnp = camera_errors(moved, truth, ordered.size, free)["rotation_err_deg"][view]
            print(f"view {view} by PnP: {len(points)} matches, {inliers} inliers, {before:.3f} -> {after_pnp:.3f} deg")


if __name__ == "__main__":
    main()
