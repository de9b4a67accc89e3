from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fast3r_ns import CameraOptions, PointOptions, ReconstructOptions, reconstruct, reconstruct_from_predictions
from fast3r_ns.io import PreparedImage, load_images
from fast3r_ns.testing import OraclePredictor, make_scene
from fast3r_ns.testing.metrics import camera_errors

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "poses"
# Mixed cameras: different sizes (a square image is cropped to 4:3, one crop has an odd offset) and focals.
SIZES = [(200, 150), (160, 160), (150, 200), (200, 150), (210, 140), (200, 150)]
FACTORS = [1.0, 0.7, 1.3, 1.0, 1.15, 0.85]
NOISE = {"depth_noise": 0.03, "point_noise": 0.01, "outlier_fraction": 0.05, "low_conf_fraction": 0.1}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    scene = make_scene(len(SIZES), image_size=SIZES, focal_factors=FACTORS, seed=3)
    images = load_images(scene.write_images(tmp_path_factory.mktemp("mixed")), size=128)
    return scene, images


def _focal_errors(result, scene) -> np.ndarray:
    truth = np.array([c.intrinsics[0] for c in scene.cameras])
    return np.abs(result.intrinsics[:, 0] / truth - 1)


def test_exact_pointmaps_give_exact_cameras(mixed) -> None:
    scene, images = mixed
    result = reconstruct(images, OraclePredictor(scene, images), ReconstructOptions(device="cpu"))
    assert result.pose_ok.all() and result.pose_notes == [""] * len(images)
    truth = np.array([c.intrinsics for c in scene.cameras])
    np.testing.assert_allclose(result.intrinsics[:, 0], result.intrinsics[:, 1])
    np.testing.assert_allclose(result.intrinsics, truth, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(result.image_sizes, SIZES)
    errors = camera_errors(result.cam_to_world, scene.cam_to_world_in_view0(), scene.size)
    assert errors["rotation_err_deg"].max() < 1e-3 and errors["translation_err_rel"].max() < 1e-5
    assert set(result.timings) == {"predict", "cameras", "tracks", "points"}  # tracks: for the COLMAP model


def test_reprojection_refinement_keeps_exact_cameras(mixed) -> None:
    scene, images = mixed
    options = ReconstructOptions(CameraOptions(refine_poses=True), PointOptions(max_points=1000), device="cpu")
    result = reconstruct(images, OraclePredictor(scene, images, seed=1), options)
    errors = camera_errors(result.cam_to_world, scene.cam_to_world_in_view0(), scene.size)
    assert result.pose_ok.all()
    assert errors["rotation_err_deg"].max() < 1e-3 and errors["translation_err_rel"].max() < 1e-5


def test_default_mode_beats_official_on_noisy_mixed_cameras(mixed) -> None:
    pytest.importorskip("cv2")
    scene, images = mixed
    predictor = OraclePredictor(scene, images, **NOISE, seed=7)
    truth = scene.cam_to_world_in_view0()
    ours = reconstruct(images, predictor, ReconstructOptions(device="cpu"))
    official = reconstruct(images, predictor, ReconstructOptions(CameraOptions(focal_mode="official")))
    ours_errors = camera_errors(ours.cam_to_world, truth, scene.size)
    official_errors = camera_errors(official.cam_to_world, truth, scene.size)
    assert ours.pose_ok.all()
    assert ours_errors["rotation_err_deg"].max() <= 0.2
    assert ours_errors["translation_err_rel"].max() <= 2e-3
    assert _focal_errors(ours, scene).max() <= 0.01
    # The official recovery applies view 0's focal everywhere: it is worse on both counts here.
    assert _focal_errors(official, scene).max() > 0.1
    assert official_errors["rotation_err_deg"].max() > 3 * ours_errors["rotation_err_deg"].max()


def test_shared_focal_for_one_camera(tmp_path) -> None:
    scene = make_scene(4, image_size=(180, 120), focal_factors=1.1, seed=5)
    images = load_images(scene.write_images(tmp_path), size=96)
    predictor = OraclePredictor(scene, images, **NOISE, seed=1)
    result = reconstruct(images, predictor, ReconstructOptions(CameraOptions(focal_mode="shared"), device="cpu"))
    assert result.shared_intrinsics and np.ptp(result.intrinsics[:, 0]) == 0
    assert _focal_errors(result, scene).max() < 0.005
    np.testing.assert_allclose(result.intrinsics[:, 2:], [[90.0, 60.0]] * 4)


def test_official_half_pixel_offset_and_centered_variant(tmp_path) -> None:
    pytest.importorskip("cv2")
    scene = make_scene(4, image_size=(180, 120), focal_factors=1.1, seed=5)
    images = load_images(scene.write_images(tmp_path), size=96)
    predictor = OraclePredictor(scene, images)
    truth = scene.cam_to_world_in_view0()
    official = reconstruct(images, predictor, ReconstructOptions(CameraOptions(focal_mode="official")))
    centered = reconstruct(
        images, predictor, ReconstructOptions(CameraOptions(focal_mode="official", official_principal_point="centered"))
    )
    # Official pp (W/2, H/2) on integer pixels = continuous (W/2 + 0.5, H/2 + 0.5) network px, 0.9375 original px.
    np.testing.assert_allclose(official.intrinsics[:, 2:], [[90.9375, 60.9375]] * 4)
    np.testing.assert_allclose(centered.intrinsics[:, 2:], [[90.0, 60.0]] * 4)
    assert camera_errors(official.cam_to_world, truth, scene.size)["rotation_err_deg"].max() > 0.1
    assert camera_errors(centered.cam_to_world, truth, scene.size)["rotation_err_deg"].max() < 1e-3
    assert _focal_errors(centered, scene).max() < 1e-5


def test_point_cloud_pixels_colours_and_filters(mixed) -> None:
    scene, images = mixed
    # the dense cloud alone (the COLMAP model's multi-view track points are tested in tests/nerfstudio/test_readers.py)
    options = ReconstructOptions(
        points=PointOptions(max_points=6000, conf_percentile=20, min_confidence=3.0, colmap_tracks=False),
        device="cpu",
    )
    result = reconstruct(images, OraclePredictor(scene, images, normalize=False, seed=2), options)
    count = len(result.points)
    assert 0.85 * 6000 <= count <= 6000
    assert result.points.dtype == np.float32 and result.colors.dtype == np.uint8
    assert result.point_confidence.min() >= 3.0
    assert set(np.unique(result.point_image)) == set(range(len(images)))
    truth = scene.cam_to_world_in_view0()
    for view in range(len(images)):
        sel = result.point_image == view
        world_to_cam = np.linalg.inv(truth[view])
        cam = result.points[sel].astype(np.float64) @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        fx, fy, cx, cy = scene.cameras[view].intrinsics
        projected = np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], -1)
        np.testing.assert_allclose(projected, result.point_pixel[sel], atol=2e-3)  # the pixel it came from
        rgb = scene.render(view)["rgb"]
        cols, rows = np.floor(result.point_pixel[sel]).astype(int).T
        np.testing.assert_array_equal(result.colors[sel], rgb[rows, cols])  # colours of the original image


def test_untrusted_view_is_reported_and_left_out(mixed) -> None:
    scene, images = mixed
    oracle = OraclePredictor(scene, images, seed=3)

    def broken(views: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = oracle(views)
        generator = torch.Generator().manual_seed(0)
        outputs[2]["pts3d_local"] = torch.randn(outputs[2]["pts3d_local"].shape, generator=generator)
        return outputs

    result = reconstruct(images, broken, ReconstructOptions(device="cpu"))
    assert result.pose_ok.tolist() == [True, True, False, True, True, True]
    assert result.pose_notes[2] and not result.pose_notes[0]
    assert 2 not in set(result.point_image)


def test_official_mode_matches_fixtures() -> None:
    pytest.importorskip("cv2")
    for name in ("oracle_scene", "oracle_noisy_scene"):
        with np.load(FIXTURES / f"{name}.npz") as data:
            fixture = dict(data)
        width, height = (int(v) for v in fixture["image_wh"])
        images = [
            PreparedImage(
                Path(f"view{v}.png"), torch.zeros(1, 3, height, width), (width, height), (width, height), (0, 0)
            )
            for v in range(len(fixture["conf"]))
        ]
        predictions = [
            {
                key: torch.from_numpy(fixture[key][v])[None]
                for key in ("pts3d_in_other_view", "conf", "pts3d_local", "conf_local")
            }
            for v in range(len(images))
        ]
        options = ReconstructOptions(CameraOptions(focal_mode="official"), PointOptions(colors="network"))
        result = reconstruct_from_predictions(images, predictions, options)
        focal = fixture["est_first_view_from_global_head_focals"]
        np.testing.assert_allclose(result.intrinsics[:, 0], focal, rtol=1e-3)
        np.testing.assert_allclose(result.intrinsics[:, 2:], [[width / 2 + 0.5, height / 2 + 0.5]] * len(images))
        errors = camera_errors(result.cam_to_world, fixture["est_first_view_from_global_head_c2w"], 1.0)
        size = float(np.linalg.norm(np.ptp(fixture["pts3d_in_other_view"].reshape(-1, 3), axis=0)))
        assert errors["rotation_err_deg"].max() < 0.05
        assert (
            np.abs(result.cam_to_world[:, :3, 3] - fixture["est_first_view_from_global_head_c2w"][:, :3, 3]).max()
            < 1e-3 * size
        )
        assert result.pose_ok.all()
        # Our default mode on the same data is at least as close to the ground truth.
        ours = reconstruct_from_predictions(
            images, predictions, ReconstructOptions(points=PointOptions(colors="network"), device="cpu")
        )
        gt = camera_errors(ours.cam_to_world, fixture["gt_c2w_in_cam0"], size)
        assert gt["rotation_err_deg"].max() < 0.05 and gt["translation_err_rel"].max() < 1e-3
        np.testing.assert_allclose(ours.intrinsics[:, 0], fixture["gt_focal"], rtol=2e-3)


def test_mismatched_predictions_are_rejected(mixed) -> None:
    scene, images = mixed
    predictions = OraclePredictor(scene, images)([im.tensor for im in images])
    with pytest.raises(ValueError, match="predictions"):
        reconstruct_from_predictions(images[:-1], predictions)
    with pytest.raises(ValueError, match="grid"):
        reconstruct_from_predictions(images[::-1], predictions)


def test_local_point_source_and_network_colours(mixed) -> None:
    scene, images = mixed
    options = ReconstructOptions(
        points=PointOptions(point_source="local", colors="network", max_points=3000, colmap_tracks=False),
        device="cpu",
    )
    result = reconstruct(images, OraclePredictor(scene, images, seed=4), options)
    # Local points moved by the estimated similarity land where the global head puts them (exact data).
    reference = reconstruct(images, OraclePredictor(scene, images, seed=4), ReconstructOptions(device="cpu"))
    scale = np.linalg.norm(reference.points, axis=1).mean()
    for view in range(len(images)):
        sel = result.point_image == view
        world_to_cam = np.linalg.inv(result.cam_to_world[view])
        cam = result.points[sel].astype(np.float64) @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        fx, fy, cx, cy = result.intrinsics[view]
        projected = np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], -1)
        np.testing.assert_allclose(projected, result.point_pixel[sel], atol=2e-3)
        assert np.linalg.norm(cam, axis=1).max() < 10 * scale
    # Network colours are the preprocessed (resized) image: close to, not equal to, the original pixels.
    rgb = scene.render(0)["rgb"]
    sel = result.point_image == 0
    cols, rows = np.floor(result.point_pixel[sel]).astype(int).T
    difference = np.abs(result.colors[sel].astype(int) - rgb[rows, cols]).mean()
    assert difference < 40


def test_implausible_focal_is_flagged_and_clamped(mixed) -> None:
    """A mirrored local pointmap gives a negative focal: the view is untrusted and its written focal stays positive."""
    scene, images = mixed
    oracle = OraclePredictor(scene, images, seed=3)

    def mirrored(views: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = oracle(views)
        outputs[1]["pts3d_local"][..., :2] *= -1
        return outputs

    result = reconstruct(images, mirrored, ReconstructOptions(device="cpu"))
    assert not result.pose_ok[1] and "implausible focal" in result.pose_notes[1]
    long_side = max(images[1].original_size)
    assert 0.1 * long_side <= result.intrinsics[1, 0] <= 10 * long_side
    assert result.intrinsics[1, 0] == result.intrinsics[1, 1]
    assert result.pose_ok[0] and result.intrinsics[0, 0] > 0
