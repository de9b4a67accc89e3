"""--refine: bundle adjustment on the pointmaps' own tracks fixes cameras that disagree with the global pointmap."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pycolmap
import pytest
import torch
from rich.console import Console
from scipy.spatial import cKDTree

from fast3r_ns import PointOptions, ReconstructOptions, RefineBundleOptions, RefineOptions, reconstruct_from_predictions
from fast3r_ns.io import PreparedImage, load_images
from fast3r_ns.options import REFINE_AUTO_VALUES, RefineFlowOptions, with_values
from fast3r_ns.process import ProcessConfig, process
from fast3r_ns.testing import OraclePredictor, make_scene
from fast3r_ns.testing.metrics import reconstruction_errors

# Per-view disagreement between the local and global heads (pose and focal errors of a few degrees / percent)
# on top of per-pixel depth noise and outliers.
VIEW_ERRORS = {"local_focal_noise": 0.03, "local_rotation_noise_deg": 1.0, "local_translation_noise": 0.01}
PIXEL_NOISE = {"depth_noise": 0.01, "point_noise": 0.003, "outlier_fraction": 0.02}


def _inputs(scene):
    width, height = 192, 144
    blank = torch.zeros(1, 3, 1, 1).expand(1, 3, height, width)  # the geometry reads no pixel with colors="network"
    images = [PreparedImage(f"v{i}.png", blank, (width, height), (width, height), (0, 0)) for i in range(16)]
    predictions = OraclePredictor(scene, images, **VIEW_ERRORS, **PIXEL_NOISE, seed=1)([im.tensor for im in images])
    return images, predictions


@pytest.fixture(scope="module")
def noisy():
    scene = make_scene(16, image_size=(192, 144), arc_degrees=90, seed=11)
    images, predictions = _inputs(scene)
    points = PointOptions(colors="network", max_points=20_000)
    unrefined = ReconstructOptions(points=replace(points, colmap_tracks=False), device="cpu")
    before = reconstruct_from_predictions(images, predictions, unrefined)
    refined = ReconstructOptions(points=points, refine=RefineOptions(enabled=True), device="cpu")
    after = reconstruct_from_predictions(images, predictions, refined)
    return scene, before, after


def test_refinement_reduces_pose_focal_and_reprojection_error(noisy) -> None:
    scene, before, after = noisy
    error_before, error_after = reconstruction_errors(before, scene), reconstruction_errors(after, scene)
    assert error_before["rotation_err_deg"] > 1.5 and error_before["focal_err_rel"] > 0.03  # the noise is really there
    assert error_after["rotation_err_deg"] < error_before["rotation_err_deg"] / 3
    assert error_after["translation_err_rel"] < error_before["translation_err_rel"] / 3
    assert error_after["focal_err_rel"] < error_before["focal_err_rel"] / 2
    stats = after.refine_stats
    assert stats["reprojection_err_px_before"] > 3.0
    assert stats["reprojection_err_px_after"] < 1.5
    assert stats["tracks_kept"] > 1000 and "refine" in after.timings
    assert not before.refine_stats and before.tracks is None


def test_refined_tracks_are_multi_view_and_in_the_cloud(noisy) -> None:
    _, before, after = noisy
    tracks = after.tracks
    lengths = np.diff(tracks.offsets)
    assert lengths.min() >= 2 and lengths.mean() > 2.5
    track_of = np.repeat(np.arange(tracks.num_tracks), lengths)
    assert len(np.unique(track_of * 100 + tracks.image)) == len(track_of)  # one pixel per image and track
    np.testing.assert_array_equal(tracks.point, np.arange(len(after.points) - tracks.num_tracks, len(after.points)))
    # Each observation reprojects onto its pixel with the refined cameras.
    points = after.points[tracks.point][track_of].astype(np.float64)
    world_to_cam = np.linalg.inv(after.cam_to_world)[tracks.image]
    cam = np.einsum("oij,oj->oi", world_to_cam[:, :3, :3], points) + world_to_cam[:, :3, 3]
    fx, fy, cx, cy = after.intrinsics[tracks.image].T
    projected = np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], -1)
    assert np.median(np.linalg.norm(projected - tracks.pixel, axis=-1)) < 1.5
    # The dense cloud keeps the world frame of the unrefined run; fused (the default with the refinement), its
    # points move a little (to the views' consensus) and unconfirmed ones go.
    dense = len(after.points) - tracks.num_tracks
    distance = cKDTree(before.points).query(after.points[:dense])[0]
    assert np.median(distance) < 0.01 * np.linalg.norm(np.ptp(before.points, axis=0))
    assert dense > 0.3 * len(before.points) and after.refine_stats["fusion_tolerance"] > 0
    assert after.refine_stats["fusion_triangulated"] == 0.0  # blank images: flat, no flow target is triangulated


def test_without_fusion_the_dense_cloud_is_the_unrefined_one(noisy) -> None:
    scene, before, _ = noisy
    images, predictions = _inputs(scene)
    points = PointOptions(colors="network", max_points=20_000, fuse=False)
    options = ReconstructOptions(points=points, refine=RefineOptions(enabled=True, tracks="pointmaps"), device="cpu")
    after = reconstruct_from_predictions(images, predictions, options)
    dense = len(after.points) - after.tracks.num_tracks
    np.testing.assert_array_equal(after.points[:dense], before.points)
    assert "fuse" not in after.timings


def test_process_writes_refined_cameras_and_colmap_tracks(tmp_path) -> None:
    scene = make_scene(6, image_size=(160, 120), arc_degrees=60, seed=2)
    paths = scene.write_images(tmp_path / "imgs")
    predictor = OraclePredictor(scene, load_images(paths, size=128), **VIEW_ERRORS, seed=3)
    config = ProcessConfig(
        data=tmp_path / "imgs", output_dir=tmp_path / "out", image_size=128, num_downscales=0, refine=True
    )
    result = process(config, console=Console(quiet=True), predictor=predictor)
    rec = result.reconstruction
    assert rec.tracks is not None and rec.tracks.num_tracks > 100
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    # Per frame, or once at the top when every frame shares it.
    assert [frame.get("fl_x", meta.get("fl_x")) for frame in meta["frames"]] == pytest.approx(
        rec.intrinsics[:, 0].tolist()
    )
    model = pycolmap.Reconstruction(str(tmp_path / "out" / "colmap/sparse/0"))
    assert model.num_points3D() == rec.tracks.num_tracks  # the tracks, each seen by >= 2 images; no single-view point
    assert min(point.track.length() for point in model.points3D.values()) >= 2
    assert model.compute_mean_reprojection_error() < 2.0
    # The summary says how far the refinement moved the cameras (its own stats).
    stats = rec.refine_stats
    line = next(line for line in result.summary if line.startswith("Refinement moved the cameras"))
    assert f"(max {stats['rotation_change_deg_max']:.2f})" in line
    assert f"{stats['reprojection_err_px_initial']:.2f} -> {stats['reprojection_err_px_after']:.2f} px" in line
    assert stats["rotation_change_deg_max"] > 0.5 > stats["reprojection_err_px_after"]


def test_refined_distortion_is_written_with_the_cameras(tmp_path) -> None:
    scene = make_scene(6, image_size=(160, 120), arc_degrees=60, seed=2)
    paths = scene.write_images(tmp_path / "imgs")
    predictor = OraclePredictor(scene, load_images(paths, size=128), **VIEW_ERRORS, seed=3)
    config = ProcessConfig(
        data=tmp_path / "imgs",
        output_dir=tmp_path / "out",
        image_size=128,
        num_downscales=0,
        refine=True,
        refine_distortion=True,
    )
    rec = process(config, console=Console(quiet=True), predictor=predictor).reconstruction
    # Pinhole scene: the refined k1 stays small (it absorbs some of the 3 % focal noise), both outputs carry it.
    assert rec.distortion is not None and len(rec.distortion) == 6
    assert np.all(np.abs(rec.distortion) < 0.05) and np.all(rec.distortion != 0)
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert [frame.get("k1", meta.get("k1")) for frame in meta["frames"]] == pytest.approx(rec.distortion.tolist())
    model = pycolmap.Reconstruction(str(tmp_path / "out" / "colmap/sparse/0"))
    params = {image.image_id: model.camera(image.camera_id).params for image in model.images.values()}
    assert model.camera(1).model.name == "OPENCV"
    assert sorted(float(p[4]) for p in params.values()) == pytest.approx(sorted(rec.distortion.tolist()))


def test_focal_groups_share_a_camera_only_within_the_tolerance() -> None:
    from fast3r_ns.refinement import _camera_groups

    sizes = np.array([[640, 480]] * 4 + [[480, 640]])
    focal = np.array([500.0, 505.0, 700.0, 502.0, 500.0])
    intrinsics = np.stack([focal, focal, np.full(5, 320.0), np.full(5, 240.0)], axis=1)
    group = _camera_groups(sizes, intrinsics, RefineBundleOptions(focal="grouped"))
    assert group[0] == group[1] == group[3] and len(set(group.tolist())) == 3
    assert len(set(_camera_groups(sizes, intrinsics, RefineBundleOptions(focal="per-view")).tolist())) == 5


def test_auto_refine_options_keep_small_scenes_and_cheapen_large_ones() -> None:
    options = RefineOptions(enabled=True)
    small, large = options.resolved(300), options.resolved(301)
    assert (small.flow.preset, small.flow.stride, small.flow.max_pair_matches) == ("medium", 8, 1024)
    assert (small.samples, small.bundle.max_iterations) == (2048, 50)
    for path, (small_value, large_value) in REFINE_AUTO_VALUES.items():
        part, _, name = path.rpartition(".")
        assert getattr(getattr(small, part) if part else small, name) == small_value
        assert getattr(getattr(large, part) if part else large, name) == large_value
    assert small.bundle.refine_points is None and large.bundle.refine_points is False  # free flow points up to 300
    explicit = with_values(options, {"samples": 512, "flow.preset": "medium"}).resolved(1000)
    assert (explicit.samples, explicit.flow.preset, explicit.flow.stride) == (512, "medium", 16)
    assert with_values(options, {"bundle.refine_points": True}).resolved(1000).bundle.refine_points is True
    assert options.flow.preset == "auto" and options.samples is None  # resolved() returns a copy


def test_flow_refinement_corrects_misplaced_global_pointmaps(tmp_path) -> None:
    """Each view's global pointmap misplaced by ~0.6 deg (what pointmap tracks cannot see) plus a 5 % focal error
    of the local head: the flow rounds (gate from the corrections' spread, predictions from local depth and the
    refined cameras, adaptive outlier threshold) bring the cameras to a few hundredths of a degree."""
    pytest.importorskip("cv2")
    from benchmarks.bench_refine import textured_images

    width, height = 256, 192
    scene = make_scene(12, image_size=(width, height), arc_degrees=100, seed=5)
    images = textured_images(scene, width, height)
    noise = {"global_rotation_noise_deg": 0.6, "global_translation_noise": 0.009, "local_focal_noise": 0.05}
    predictions = OraclePredictor(scene, images, **noise, **PIXEL_NOISE, seed=4)([im.tensor for im in images])
    points = PointOptions(colors="network", max_points=20_000)
    options = ReconstructOptions(points=points, refine=RefineOptions(enabled=True), device="cpu")
    unrefined = reconstruct_from_predictions(images, predictions, replace(options, refine=RefineOptions()))
    before = reconstruction_errors(unrefined, scene)
    after = reconstruct_from_predictions(images, predictions, options)
    errors = reconstruction_errors(after, scene)
    assert before["rotation_err_deg"] > 1.0 and before["focal_err_rel"] > 0.04  # the errors are really there
    assert errors["rotation_err_deg_median"] < 0.05 and errors["rotation_err_deg"] < 0.15
    assert errors["focal_err_rel"] < 0.005
    stats = after.refine_stats
    assert stats["flow_rounds"] >= 1 and stats["reprojection_err_px_after"] < stats["reprojection_err_px_initial"]
    assert stats["rotation_change_deg_max"] > 1.0 and not after.refine_unfixed and after.pose_ok.all()


def test_flow_reuse_threshold_reaches_the_flow_rounds() -> None:
    """``refine.flow.reuse_px``: 0 measures every pair again in round 2; a huge threshold keeps every pair's flows."""
    pytest.importorskip("cv2")
    from benchmarks.bench_refine import textured_images

    width, height = 256, 192
    scene = make_scene(8, image_size=(width, height), arc_degrees=80, seed=6)
    images = textured_images(scene, width, height)
    predictions = OraclePredictor(scene, images, global_rotation_noise_deg=0.3, **PIXEL_NOISE, seed=2)(
        [im.tensor for im in images]
    )
    reused = {}
    for threshold in (0.0, 1e6):
        flow = RefineFlowOptions(rounds=2, tolerance_deg=0.0, tolerance_focal=0.0, reuse_px=threshold)
        options = ReconstructOptions(
            points=PointOptions(colors="network", max_points=5_000, fuse=False),
            refine=RefineOptions(enabled=True, flow=flow),
            device="cpu",
        )
        stats = reconstruct_from_predictions(images, predictions, options).refine_stats
        assert stats["flow_rounds"] == 2
        reused[threshold] = (stats["round2_pairs_reused"], stats["candidate_pairs"])
    assert reused[0.0][0] == 0
    assert reused[1e6][0] == reused[1e6][1] > 0


def test_a_view_flagged_by_the_pose_recovery_and_re_solved_by_the_flow_is_trusted_again() -> None:
    """View 5's global pointmap warped in depth (+-12 % across the image): the pose recovery flags it (local and
    global disagree) and leaves it out of the cloud; the flow adjustment re-solves it on plenty of consistent
    observations, so the refinement clears the note and its points enter the cloud."""
    pytest.importorskip("cv2")
    from benchmarks.bench_refine import textured_images

    width, height = 256, 192
    scene = make_scene(12, image_size=(width, height), arc_degrees=100, seed=5)
    images = textured_images(scene, width, height)
    noise = {"local_focal_noise": 0.02, **PIXEL_NOISE}
    predictions = OraclePredictor(scene, images, **noise, seed=4)([im.tensor for im in images])
    center = torch.from_numpy(scene.cam_to_world_in_view0()[5][:3, 3]).float()
    points = predictions[5]["pts3d_in_other_view"]  # [1, H, W, 3]
    x = torch.linspace(-1, 1, points.shape[-2])[None, None, :, None]
    predictions[5]["pts3d_in_other_view"] = center + (points - center) * (1 + 0.12 * x)
    options = ReconstructOptions(
        points=PointOptions(colors="network", max_points=20_000), refine=RefineOptions(enabled=True), device="cpu"
    )
    unrefined = reconstruct_from_predictions(images, predictions, replace(options, refine=RefineOptions()))
    assert "disagree" in unrefined.pose_notes[5] and 5 not in set(unrefined.point_image)
    after = reconstruct_from_predictions(images, predictions, options)
    assert after.pose_ok.all() and after.refine_stats["cleared_views"] == 1
    assert reconstruction_errors(after, scene)["rotation_err_deg"] < 0.1
    assert (after.point_image == 5).sum() > 0.5 * np.bincount(after.point_image).mean()
