"""Relocalisation (geometry.relocalise) on the splat benchmark's natural-texture room with the clean oracle and true
cameras: patch matches from a prediction tens of pixels off land on the true correspondences, and PnP on them puts
a misplaced camera back (SIFT matches where the turn is beyond the patch window); a right camera is kept."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import splat_scene  # noqa: E402

from fast3r_ns.cameras import network_intrinsics  # noqa: E402
from fast3r_ns.geometry.flow import FlowOptions, _at, grey_image, predicted_flow, view_anchors  # noqa: E402
from fast3r_ns.geometry.relocalise import WindowOptions, relocalise_view, window_matches  # noqa: E402
from fast3r_ns.io import load_images  # noqa: E402
from fast3r_ns.testing.metrics import rotation_angle_deg  # noqa: E402
from fast3r_ns.testing.oracle import OraclePredictor  # noqa: E402


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    """(greys, true world pointmaps, network intrinsics, true cameras) of four neighbouring views."""
    scene = splat_scene.make("room_natural")
    scene = scene.reordered(scene.process_order()[10:14])
    images = load_images(scene.write_images(tmp_path_factory.mktemp("room_natural")), size=512)
    clean = OraclePredictor(scene, images, normalize=False)([im.tensor for im in images])
    maps = [p["pts3d_in_other_view"][0].numpy().astype(np.float64) for p in clean]
    network = network_intrinsics(images, np.array([camera.intrinsics for camera in scene.cameras]))
    return [grey_image(im.tensor) for im in images], maps, network, scene.cam_to_world_in_view0()


def _turned(cam_to_world: np.ndarray, degrees: float) -> np.ndarray:
    """The camera turned by ``degrees`` about an oblique axis through its centre."""
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    out = cam_to_world.copy()
    out[:3, :3] = cam_to_world[:3, :3] @ rotation
    return out


def _anchors(greys, maps, view):
    pixels, points, _ = view_anchors(maps[view], np.ones(maps[view].shape[:2]), greys[view], FlowOptions(stride=16))
    return pixels, points


def test_window_matches_land_on_the_true_correspondences_from_a_prediction_far_off(views) -> None:
    greys, maps, network, cam_to_world = views
    pixels, _ = _anchors(greys, maps, 0)
    truth = _at(predicted_flow(maps[0], np.linalg.inv(cam_to_world[1]), network[1]), pixels)
    off = predicted_flow(maps[0], np.linalg.inv(_turned(cam_to_world[1], 2.0)), network[1])
    assert np.nanmedian(np.linalg.norm(_at(off, pixels) - truth, axis=-1)) > 10.0  # DIS's reach is a few px
    kept, targets = window_matches(greys[0], greys[1], off, pixels, WindowOptions(radius=48))
    miss = np.linalg.norm(targets - (pixels[kept] + truth[kept]), axis=-1)
    assert len(kept) >= 0.3 * len(pixels)
    assert np.mean(miss < 1.0) >= 0.85


@pytest.mark.parametrize("degrees", [1.0, 3.0])
def test_a_misplaced_camera_is_put_back_and_a_right_one_kept(views, degrees) -> None:
    greys, maps, network, cam_to_world = views
    known = [(other, *_anchors(greys, maps, other)) for other in (0, 1, 3)]
    misplaced = cam_to_world.copy()
    misplaced[2] = _turned(cam_to_world[2], degrees)
    moved = relocalise_view(2, known, greys, maps, network, misplaced, WindowOptions())
    assert moved.cam_to_world is not None and moved.inliers >= 50
    assert rotation_angle_deg(moved.cam_to_world[:3, :3].T @ cam_to_world[2][:3, :3]) < 0.05
    center_error = np.linalg.norm(moved.cam_to_world[:3, 3] - cam_to_world[2][:3, 3])
    assert center_error < 0.01 * np.linalg.norm(cam_to_world[2][:3, 3] - cam_to_world[1][:3, 3]) + 1e-3
    kept = relocalise_view(2, known, greys, maps, network, cam_to_world, WindowOptions())
    assert kept.cam_to_world is None and kept.current_inliers >= 50


def test_a_turn_beyond_the_window_is_put_back_by_sift_matches(views) -> None:
    """15 deg is beyond the patch window's reach (48 px at this focal: ~7 deg): no patch pose is accepted, and
    without the SIFT fallback the camera stays; with it, PnP on SIFT matches puts it back."""
    greys, maps, network, cam_to_world = views
    known = [(other, *_anchors(greys, maps, other)) for other in (0, 1, 3)]
    misplaced = cam_to_world.copy()
    misplaced[2] = _turned(cam_to_world[2], 15.0)
    stays = relocalise_view(2, known, greys, maps, network, misplaced, WindowOptions(features=0))
    assert stays.cam_to_world is None and not stays.features
    moved = relocalise_view(2, known, greys, maps, network, misplaced, WindowOptions())
    assert moved.features and moved.cam_to_world is not None and moved.inliers >= 50
    assert abs(moved.turn - 15.0) < 0.5
    assert rotation_angle_deg(moved.cam_to_world[:3, :3].T @ cam_to_world[2][:3, :3]) < 0.03


def test_the_refinement_relocalises_a_held_view_from_its_free_neighbours(tmp_path) -> None:
    """refinement._relocalise: flow tracks of the clean oracle on true cameras, one view then turned 2 deg and held;
    it comes back from the free views' track points."""
    from fast3r_ns import ReconstructOptions
    from fast3r_ns.cameras import Cameras
    from fast3r_ns.options import with_values
    from fast3r_ns.refinement import FlowViews, _flow_tracks, _relocalise

    scene = splat_scene.make("room_natural")
    scene = scene.reordered(scene.process_order()[10:15])
    images = load_images(scene.write_images(tmp_path), size=512)
    predictions = OraclePredictor(scene, images, normalize=False)([im.tensor for im in images])
    truth = scene.cam_to_world_in_view0()
    intrinsics = np.array([camera.intrinsics for camera in scene.cameras])
    cameras = Cameras(intrinsics, truth.copy(), np.ones(len(images)), [""] * len(images))
    options = with_values(ReconstructOptions(device="cpu"), {"refine.enabled": True})
    options = with_values(options, {"refine": options.refine.resolved(len(images))})
    views = FlowViews.of(images, predictions, options)
    tracks = _flow_tracks(images, predictions, cameras, options, True, views)
    held = np.arange(len(images)) == 2
    cameras.cam_to_world[2] = _turned(truth[2], 2.0)
    found = _relocalise(images, predictions, cameras, options, tracks, held, views, None)
    assert found == {2: "patch"}
    assert rotation_angle_deg(cameras.cam_to_world[2][:3, :3].T @ truth[2][:3, :3]) < 0.05
    np.testing.assert_array_equal(cameras.cam_to_world[~held], truth[~held])
