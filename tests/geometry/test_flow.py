"""Flow correspondences (geometry.flow) on the splat benchmark's textured room with the noisy oracle: after the
forward-backward check most of them lie within half a network pixel of the true correspondence."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import splat_scene  # noqa: E402
from bench_splat import NOISY, FastLikeOracle  # noqa: E402

from fast3r_ns import PointOptions, ReconstructOptions, RefineOptions, reconstruct_from_predictions  # noqa: E402
from fast3r_ns.geometry.conventions import intrinsics_to_network  # noqa: E402
from fast3r_ns.geometry.flow import (  # noqa: E402
    FlowCache,
    FlowOptions,
    flow_tracks,
    grey_image,
    link_nodes,
    texture_mask,
    view_anchors,
)
from fast3r_ns.io import load_images  # noqa: E402


def _three_views(tmp_path):
    scene = splat_scene.make("room")
    scene = scene.reordered(scene.process_order()[:3])
    images = load_images(scene.write_images(tmp_path), size=512)
    predictions = FastLikeOracle(scene, images, seed=11, **NOISY)([im.tensor for im in images])
    rec = reconstruct_from_predictions(
        images, predictions, ReconstructOptions(points=PointOptions(colors="network"), device="cpu")
    )
    network = np.stack(
        [intrinsics_to_network(c, im.scale_to_original, im.crop_offset) for c, im in zip(rec.intrinsics, images)]
    )
    inputs = (
        [grey_image(im.tensor) for im in images],
        [p["pts3d_in_other_view"][0] for p in predictions],
        [p["conf"][0] for p in predictions],
        network,
    )
    return inputs, rec.cam_to_world, scene, images


def test_a_round_keeps_the_flows_of_pairs_whose_prediction_did_not_move(tmp_path) -> None:
    inputs, cam_to_world, _, _ = _three_views(tmp_path)
    cache = FlowCache()
    first = flow_tracks(*inputs, cam_to_world, neighbors=2, cache=cache)
    assert cache.reused == 0 and len(cache.pairs) == len(first.pairs) > 0
    again = flow_tracks(*inputs, cam_to_world, neighbors=2, cache=cache)  # same cameras: every pair kept
    assert cache.reused == len(first.pairs)
    np.testing.assert_array_equal(again.pixel, first.pixel)
    np.testing.assert_array_equal(again.offsets, first.offsets)
    turned = cam_to_world.copy()
    turned[1:, :3, 3] += 0.05 * np.linalg.norm(cam_to_world[1, :3, 3] - cam_to_world[0, :3, 3])  # a few pixels
    flow_tracks(*inputs, turned, neighbors=2, cache=cache)
    assert cache.reused < len(first.pairs)  # a pair with a view that moved is measured again
    flow_tracks(*inputs, turned, neighbors=2, options=FlowOptions(reuse_px=0.0), cache=cache)
    assert cache.reused == 0


def test_flow_tracks_are_true_correspondences(tmp_path) -> None:
    inputs, cam_to_world, scene, images = _three_views(tmp_path)
    tracks = flow_tracks(*inputs, cam_to_world, neighbors=2, options=FlowOptions(link_radius=0.0))
    assert tracks.num_tracks > 500
    # No linking here: each track is an anchor (the row with its own pointmap point) and its flow targets.
    anchor = np.isfinite(tracks.source_point).all(-1)
    assert np.all(np.add.reduceat(anchor.astype(int), tracks.offsets[:-1]) == 1)
    anchor_row = np.flatnonzero(anchor)[tracks.track]
    errors = []
    for row in np.flatnonzero(~anchor):
        source, target = tracks.view[anchor_row[row]], tracks.view[row]
        original = images[source].to_original(tracks.pixel[anchor_row[row]])
        world = scene.cast_pixels(source, original[None])[1][0]
        camera = scene.cameras[target]
        cam = np.linalg.inv(camera.cam_to_world) @ np.append(world, 1.0)
        fx, fy, cx, cy = camera.intrinsics
        truth = np.array([fx * cam[0] / cam[2] + cx, fy * cam[1] / cam[2] + cy])
        errors.append(np.linalg.norm(images[target].to_original(tracks.pixel[row]) - truth))
    errors = 2.0 * np.array(errors)  # network pixels (the network images are the originals upsampled twice)
    assert np.mean(errors < 0.5) > 0.55
    assert np.percentile(errors, 90) < 1.5
    assert np.mean(errors > 4.0) < 0.02


def test_link_nodes_joins_close_nodes_of_one_view_only() -> None:
    view = np.array([0, 0, 0, 1, 0])
    pixel = np.array([[10.0, 10.0], [10.3, 10.2], [12.0, 10.0], [10.1, 10.0], [10.6, 10.4]])
    # 4 is within 0.5 of 1 (not of 0): joined through 1; 2 is too far; 3 is in another view.
    assert link_nodes(view, pixel, 0.5).tolist() == [0, 0, 2, 3, 0]


def test_the_dense_targets_kept_for_the_fused_cloud_are_true_correspondences(tmp_path) -> None:
    inputs, cam_to_world, scene, images = _three_views(tmp_path)
    cache = FlowCache(dense_budget=2**30)
    tracks = flow_tracks(*inputs, cam_to_world, neighbors=2, cache=cache)
    pairs = {tuple(p) for p in tracks.pairs.tolist()}
    assert set(cache.dense) == pairs | {(j, i) for i, j in pairs}  # both directions of every pair
    height, width = inputs[0][0].shape
    errors = []
    for (source, target), pixels in cache.dense.items():
        assert pixels.shape == ((height + 1) // 2, (width + 1) // 2, 2)
        ys, xs = np.mgrid[0:height:2, 0:width:2] + 0.5
        kept = np.isfinite(pixels).all(-1)
        world = scene.cast_pixels(source, images[source].to_original(np.stack([xs[kept], ys[kept]], -1)))[1]
        camera = scene.cameras[target]
        cam = (world - camera.cam_to_world[:3, 3]) @ camera.cam_to_world[:3, :3]
        fx, fy, cx, cy = camera.intrinsics
        truth = np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], -1)
        errors.append(2.0 * np.linalg.norm(images[target].to_original(pixels[kept]) - truth, axis=-1))
    errors = np.concatenate(errors)  # network pixels
    assert len(errors) > 0.04 * len(cache.dense) * height * width / 4  # checkers: few pass the roundtrip
    assert np.median(errors) < 0.5, np.median(errors)
    # a budget of one directed pair keeps one
    small = FlowCache(dense_budget=next(iter(cache.dense.values())).nbytes)
    flow_tracks(*inputs, cam_to_world, neighbors=2, cache=small)
    assert len(small.dense) == 1 and small.dense_bytes <= small.dense_budget


def test_the_fused_cloud_from_triangulated_flow_is_closer_to_the_surface(tmp_path) -> None:
    from bench_fusion import surface_distance

    scene = splat_scene.make("room_natural")
    scene = scene.reordered(scene.process_order()[:6])
    images = load_images(scene.write_images(tmp_path), size=512)
    predictions = FastLikeOracle(scene, images, seed=11, **NOISY)([im.tensor for im in images])
    distances, stats = {}, {}
    for memory in (0, 256):
        points = PointOptions(colors="network", max_points=50_000, fuse_flow_memory_mb=memory)
        options = ReconstructOptions(points=points, refine=RefineOptions(enabled=True), device="cpu")
        rec = reconstruct_from_predictions(images, predictions, options)
        dense = len(rec.points) - rec.tracks.num_tracks
        distances[memory] = np.median(surface_distance(scene, rec.cam_to_world)(rec.points[:dense])[0])
        stats[memory] = rec.refine_stats["fusion_triangulated"]
    assert stats[0] == 0.0 and stats[256] > 0.2
    assert distances[256] < 0.6 * distances[0], distances


def test_a_view_short_of_texture_takes_its_anchors_at_the_dense_floor() -> None:
    rng = np.random.default_rng(0)
    grey = np.full((64, 96), 128.0)
    grey[:, :16] += 60 * rng.standard_normal((64, 16))  # a sixth of the view strongly textured
    grey[:, 16:] += 5 * rng.standard_normal((64, 80))  # the rest faint: above the dense floor only
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    assert texture_mask(grey, 8.0)[:, 24:].mean() < 0.05 < texture_mask(grey, 2.0)[:, 24:].mean()
    points, confidence = np.ones((64, 96, 3)), np.ones((64, 96))
    strict = view_anchors(points, confidence, grey, FlowOptions(stride=8))[0]
    lenient = view_anchors(points, confidence, grey, FlowOptions(stride=8, sparse_view_share=0.25))[0]
    assert 0 < len(strict) < 0.25 * 8 * 12 and np.all(strict[:, 0] < 24)
    assert len(lenient) > 2 * len(strict)
    # a view above the share keeps the strict floor
    same = view_anchors(points, confidence, grey, FlowOptions(stride=8, sparse_view_share=0.1))[0]
    assert np.array_equal(same, strict)
