"""Pieces of the iterated flow refinement: predictions from local depth and the current cameras, camera motion
measured without the adjustment's gauge, the adaptive correction gate of the flow matches."""

from __future__ import annotations

import numpy as np
import pytest

from fast3r_ns.geometry.flow import correction_inliers
from fast3r_ns.refine_rounds import (
    carried_poses,
    depth_pointmap,
    focal_changes,
    rotation_changes,
    unsupported_views,
    view_support,
)
from fast3r_ns.testing import make_scene
from fast3r_ns.testing.scene import Scene


def _rotation(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_depth_pointmap_back_projects_the_local_depth_with_the_camera() -> None:
    scene: Scene = make_scene(2, image_size=(64, 48), arc_degrees=30, seed=4)
    camera = scene.cameras[0]
    ys, xs = np.mgrid[0:48, 0:64] + 0.5
    _, world, _ = scene.cast_pixels(0, np.stack([xs, ys], -1))
    cam = (world - camera.cam_to_world[:3, 3]) @ camera.cam_to_world[:3, :3]
    local = cam / 2.5  # the local head's pointmap: same shape, its own scale
    # A misplaced global pointmap (rotated 2 degrees about the camera) only sets the depth scale.
    center = camera.cam_to_world[:3, 3]
    misplaced = (world - center) @ _rotation([0.3, 1.0, 0.2], 2.0).T + center
    misplaced[:4] = np.nan  # not confident: stays NaN
    points = depth_pointmap(local, misplaced, np.asarray(camera.intrinsics), camera.cam_to_world)
    assert np.isnan(points[:4]).all()
    np.testing.assert_allclose(points[4:], world[4:], rtol=0, atol=2e-3 * np.abs(world).max())


def test_depth_pointmap_median_filters_the_local_depth() -> None:
    scene: Scene = make_scene(2, image_size=(64, 48), arc_degrees=30, seed=4)
    camera = scene.cameras[0]
    ys, xs = np.mgrid[0:48, 0:64] + 0.5
    _, world, _ = scene.cast_pixels(0, np.stack([xs, ys], -1))
    local = (world - camera.cam_to_world[:3, 3]) @ camera.cam_to_world[:3, :3]
    noisy = local * (1 + 0.02 * np.random.default_rng(0).standard_normal((48, 64, 1)))  # 2 % depth noise
    intrinsics = np.asarray(camera.intrinsics)

    def error(window: int) -> float:
        points = depth_pointmap(noisy, world, intrinsics, camera.cam_to_world, median_window=window)
        return float(np.nanmedian(np.linalg.norm(points - world, axis=-1)))

    assert error(5) < 0.6 * error(1)
    world[:4] = np.nan  # not confident: stays NaN, and does not enter the window of its neighbours
    assert np.isnan(depth_pointmap(noisy, world, intrinsics, camera.cam_to_world, median_window=5)[:4]).all()


def test_rotation_changes_ignore_a_common_rotation() -> None:
    rng = np.random.default_rng(0)
    before = np.tile(np.eye(4), (5, 1, 1))
    for view in range(5):
        before[view, :3, :3] = _rotation(rng.standard_normal(3), rng.uniform(0, 90))
    after = before.copy()
    common = _rotation([1.0, 2.0, 0.5], 7.0)
    after[:, :3, :3] = common @ before[:, :3, :3]
    after[3, :3, :3] = common @ before[3, :3, :3] @ _rotation([0.0, 0.0, 1.0], 0.5)
    changes = rotation_changes(before, after)
    assert changes[3] == pytest.approx(0.5 * 4 / 5, abs=0.05)  # the common fit absorbs a fifth of the odd one out
    assert np.all(np.delete(changes, 3) < 0.15)
    intrinsics = np.array([[100.0, 100.0, 32, 24], [200.0, 200.0, 32, 24]])
    np.testing.assert_allclose(focal_changes(intrinsics, intrinsics * [1.1, 1.1, 1, 1]), [0.1, 0.1])


def test_a_held_view_moves_with_the_frame_of_the_free_ones() -> None:
    rng = np.random.default_rng(1)
    reference = np.tile(np.eye(4), (6, 1, 1))
    for view in range(6):
        reference[view, :3, :3] = _rotation(rng.standard_normal(3), rng.uniform(0, 60))
        reference[view, :3, 3] = rng.standard_normal(3)
    motion = np.eye(4)  # the adjustment's frame: a similarity (scale 1.3)
    motion[:3, :3], motion[:3, 3] = 1.3 * _rotation([0.2, 1.0, -0.4], 5.0), [0.5, -0.2, 1.0]
    current = np.einsum("ij,vjk->vik", motion, reference)
    current[:, :3, :3] /= 1.3
    current[0, :3, 3] += 9.0  # the held view: wherever the adjustment left it
    free = np.arange(6) > 0
    carried = carried_poses(reference, current, free)
    np.testing.assert_allclose(carried[1:], current[1:], atol=1e-9)
    expected = motion @ reference[0]
    expected[:3, :3] /= 1.3
    np.testing.assert_allclose(carried[0], expected, atol=1e-9)
    np.testing.assert_array_equal(carried_poses(reference, current, free & (np.arange(6) < 3)), reference)


def test_correction_gate_follows_the_spread_of_a_smooth_error_field() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.uniform(0, 512, size=(600, 2))
    # A misplaced view: a smooth correction of up to ~15 px (far beyond a fixed 6 px gate), 0.3 px matching noise.
    smooth = np.array([9.0, -4.0]) + pixels @ np.array([[0.012, -0.004], [0.006, 0.01]])
    correction = smooth + 0.3 * rng.standard_normal(pixels.shape)
    slipped = rng.choice(600, size=40, replace=False)
    correction[slipped] += rng.choice([-1, 1], size=(40, 1)) * np.array([[8.0, 0.0]])  # one checker period off
    keep = correction_inliers(pixels, correction, spread=3.0, min_gate=1.0)
    assert not keep[slipped].any()
    assert np.delete(keep, slipped).mean() > 0.97
    assert (np.linalg.norm(correction, axis=-1) <= 6.0).mean() < 0.3  # what the fixed gate would have kept


def test_view_support_counts_multi_view_observations() -> None:
    view = np.array([0, 0, 1, 1, 1, 2])
    length = np.array([3, 2, 3, 3, 4, 2])
    error = np.array([0.5, 9.0, 0.2, 0.4, 0.3, 1.0])
    observations, reprojection = view_support(view, length, error, 4)
    assert observations.tolist() == [1, 3, 0, 0]
    np.testing.assert_allclose(reprojection[:3], [4.75, 0.3, 1.0])
    assert np.isnan(reprojection[3])


def test_unsupported_views_are_large_moves_on_weak_or_inconsistent_data() -> None:
    turned = np.array([0.4, 3.0, 3.0, 3.0, 0.2])
    zoomed = np.array([0.01, 0.02, 0.02, 0.02, 0.40])
    observations = np.array([900, 900, 12, 900, 900])
    reprojection = np.array([0.1, 0.12, 0.1, 0.9, 0.1])
    notes = unsupported_views(turned, zoomed, observations, reprojection, 40, 1.0, 0.25)
    # 1 turned far but on plenty of consistent observations: a real correction, kept.
    assert sorted(notes) == [2, 3, 4]
    assert "12 observations" in notes[2] and "0.90 px" in notes[3] and "40%" in notes[4]
