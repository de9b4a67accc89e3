from __future__ import annotations

import numpy as np
import pytest

from fast3r_ns.io import load_images
from fast3r_ns.testing import OraclePredictor, Scene, make_scene
from fast3r_ns.testing.metrics import camera_errors, rotation_angle_deg


def test_ray_casting_hits_sphere_and_walls_exactly() -> None:
    scene = Scene(np.array([[0.0, 0.0, 5.0]]), np.array([1.0]), np.array([-10.0, -10.0, -10.0]), np.full(3, 10.0))
    t, obj = scene.cast(np.zeros(3), np.array([[0.0, 0.0, 2.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(t, [2.0, 10.0, 10.0])  # sphere front at z = 4 (t in units of the direction)
    assert obj.tolist() == [0, 1 + 2 * 2 + 0, 1 + 2 * 0 + 1]


def test_render_is_consistent_with_the_pinhole_model() -> None:
    scene = make_scene(3, image_size=[(64, 48), (48, 64), (50, 50)], focal_factors=[1.0, 0.6, 1.4])
    for view, camera in enumerate(scene.cameras):
        rendered = scene.render(view)
        assert rendered["rgb"].shape == (camera.height, camera.width, 3)
        world_to_cam = np.linalg.inv(camera.cam_to_world)
        cam = rendered["points_world"] @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        np.testing.assert_allclose(cam[..., 2], rendered["depth"], atol=1e-9)
        projected = cam[..., :2] / cam[..., 2:] * camera.intrinsics[:2] + camera.intrinsics[2:]
        rows, cols = np.mgrid[: camera.height, : camera.width]
        np.testing.assert_allclose(projected, np.stack([cols + 0.5, rows + 0.5], -1), atol=1e-6)
        assert 2.0 < rendered["depth"].min() and rendered["depth"].max() < 15.0


def test_oracle_pointmaps_follow_the_network_grid_of_prepared_images(tmp_path) -> None:
    scene = make_scene(3, image_size=[(160, 120), (100, 100), (150, 100)], focal_factors=[1.0, 0.8, 1.2])
    images = load_images(scene.write_images(tmp_path), size=64)
    assert images[1].crop_offset == (0, 8) and images[2].size == (64, 32)
    outputs = OraclePredictor(scene, images, normalize=False)([im.tensor for im in images])
    truth = scene.cam_to_world_in_view0()
    for view, (image, output) in enumerate(zip(images, outputs)):
        width, height = image.size
        local = output["pts3d_local"][0].double().numpy()
        world = output["pts3d_in_other_view"][0].double().numpy()
        assert local.shape == (height, width, 3)
        np.testing.assert_allclose(world, local @ truth[view, :3, :3].T + truth[view, :3, 3], atol=1e-4)
        rows, cols = np.mgrid[:height, :width]
        expected = image.to_original(np.stack([cols + 0.5, rows + 0.5], -1))
        fx, fy, cx, cy = scene.cameras[view].intrinsics
        projected = np.stack([fx * local[..., 0] / local[..., 2] + cx, fy * local[..., 1] / local[..., 2] + cy], -1)
        np.testing.assert_allclose(projected, expected, atol=1e-3)


def test_oracle_corruptions_are_seeded_and_as_requested() -> None:
    scene = make_scene(2, image_size=(80, 60))

    def make(seed: int) -> OraclePredictor:
        return OraclePredictor(scene, outlier_fraction=0.05, low_conf_fraction=0.2, depth_noise=0.02, seed=seed)

    views = [np.zeros((1, 3, 60, 80))] * 2
    first, again, other = make(1)(views), make(1)(views), make(2)(views)
    assert (first[1]["pts3d_local"] == again[1]["pts3d_local"]).all()
    assert not (first[1]["pts3d_local"] == other[1]["pts3d_local"]).all()
    low = (first[1]["conf"] < 1.3).float().mean()
    assert 0.2 <= low < 0.45
    assert first[0]["conf"].min() >= 1.0
    # Normalised as in training: mean distance 1 over all global points, per view for local points.
    mean_global = np.mean([np.linalg.norm(o["pts3d_in_other_view"][0].numpy(), axis=-1).mean() for o in first])
    assert mean_global == pytest.approx(1.0, rel=1e-5)
    assert np.linalg.norm(first[1]["pts3d_local"][0].numpy(), axis=-1).mean() == pytest.approx(1.0, rel=1e-5)


def test_camera_errors_are_invariant_to_a_similarity() -> None:
    scene = make_scene(4)
    truth = scene.cam_to_world_in_view0()
    similarity = np.eye(4)
    similarity[:3, :3] = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0] * 2.5
    if np.linalg.det(similarity[:3, :3]) < 0:
        similarity[:3, :3] *= -1
    similarity[:3, 3] = [1.0, -2.0, 0.5]
    moved = similarity @ truth
    moved[:, :3, :3] /= 2.5  # poses stay rotations
    errors = camera_errors(moved, truth, scene.size)
    assert errors["rotation_err_deg"].max() < 1e-6 and errors["translation_err_rel"].max() < 1e-9
    moved[2, :3, 3] += 0.1
    assert camera_errors(moved, truth, scene.size)["translation_err_rel"][2] > 1e-3


def _local_and_global(oracle: OraclePredictor) -> list[tuple[np.ndarray, np.ndarray]]:
    views = [np.zeros((1, 3, 60, 80))] * len(oracle.scene.cameras)
    return [(o["pts3d_local"][0].double().numpy(), o["pts3d_in_other_view"][0].double().numpy()) for o in oracle(views)]


def test_oracle_local_focal_bias_and_noise_scale_the_local_field_of_view() -> None:
    scene = make_scene(3, image_size=(80, 60))
    exact = _local_and_global(OraclePredictor(scene, normalize=False))
    biased = OraclePredictor(scene, normalize=False, local_focal_bias=0.1, local_focal_noise=0.05, seed=3)
    for view, ((local, glob), (true_local, true_glob)) in enumerate(zip(_local_and_global(biased), exact)):
        # x/z of every local point shrinks by one factor per view: (1 + bias)(1 + noise draw), as view_errors says
        ratio = (true_local[..., :2] / true_local[..., 2:]) / (local[..., :2] / local[..., 2:])
        factor = float(biased.view_errors(view, 1.0)["focal_factor"])
        np.testing.assert_allclose(ratio[np.abs(true_local[..., :2]) > 1e-3], factor, rtol=1e-5)
        assert factor != pytest.approx(1.1) and factor == pytest.approx(1.1, abs=0.2)
        np.testing.assert_allclose(glob, true_glob, rtol=1e-5, atol=1e-6)  # the global head is untouched
    bias_only = OraclePredictor(scene, normalize=False, local_focal_bias=0.1, seed=3)
    assert [float(bias_only.view_errors(v, 1.0)["focal_factor"]) for v in range(3)] == pytest.approx([1.1] * 3)


def test_oracle_local_global_disagreement_rotates_the_local_pointmap() -> None:
    scene = make_scene(3, image_size=(80, 60))
    exact = _local_and_global(OraclePredictor(scene, normalize=False))
    oracle = OraclePredictor(scene, normalize=False, local_rotation_noise_deg=1.0, seed=5)
    angles = []
    for (local, glob), (true_local, true_glob) in zip(_local_and_global(oracle), exact):
        a, b = true_local.reshape(-1, 3), local.reshape(-1, 3)
        u, _, vt = np.linalg.svd((b - b.mean(0)).T @ (a - a.mean(0)))  # Kabsch: b ~ R a + t
        rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
        assert np.abs(b - a @ rotation.T).max() < 1e-5  # a rotation about the camera, exactly
        angles.append(float(rotation_angle_deg(rotation)))
        np.testing.assert_allclose(glob, true_glob, rtol=1e-5, atol=1e-6)
    assert 0.05 < np.mean(angles) < 3.0 and len(set(np.round(angles, 6))) == 3  # one draw of ~1 degree per view
