from __future__ import annotations

import numpy as np
import pytest
import torch

from fast3r_ns.geometry.focal import focal_official
from fast3r_ns.geometry.pose import _so3_exp, pnp_official, refine_reprojection, solve_poses


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle of a^T b, computed stably (chordal distance) for tiny angles."""
    chord = np.linalg.norm(a[:3, :3].T @ b[:3, :3] - np.eye(3)) / (2 * np.sqrt(2))
    return float(np.degrees(2 * np.arcsin(min(1.0, chord))))


def _views(count: int, points: int, noise: float, outliers: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(count, 3, 3, generator=generator, dtype=torch.float64))[0]
    rotation = rotation * torch.linalg.det(rotation)[:, None, None]
    centers = torch.randn(count, 3, generator=generator, dtype=torch.float64)
    local = torch.rand(count, points, 3, generator=generator, dtype=torch.float64) * 6 - 3
    local[..., 2] = local[..., 2].abs() * 4 + 2  # in front of the camera
    world = local @ rotation.transpose(1, 2) + centers[:, None]
    local_scale = torch.rand(count, 1, 1, generator=generator, dtype=torch.float64) + 0.1  # per-view scale
    local_noisy = local * (1 + noise * torch.randn(count, points, 1, generator=generator, dtype=torch.float64))
    world_noisy = world + noise * local[..., 2:] * torch.randn(
        count, points, 3, generator=generator, dtype=torch.float64
    )
    bad = torch.rand(count, points, generator=generator) < outliers
    world_noisy[bad] += 3 * torch.randn(int(bad.sum()), 3, generator=generator, dtype=torch.float64)
    cam_to_world = torch.eye(4, dtype=torch.float64).repeat(count, 1, 1)
    cam_to_world[:, :3, :3], cam_to_world[:, :3, 3] = rotation, centers
    return local_noisy * local_scale, world_noisy, cam_to_world, local_scale[:, 0, 0]


def test_solve_poses_exact() -> None:
    local, world, truth, local_scale = _views(4, 500, 0.0, 0.0, seed=0)
    result = solve_poses(local, world, torch.ones(local.shape[:2]))
    torch.testing.assert_close(result.cam_to_world, truth)
    torch.testing.assert_close(result.scale, 1 / local_scale)
    assert result.ok.all() and result.notes == [""] * 4


def test_solve_poses_robust_to_noise_and_outliers() -> None:
    local, world, truth, _ = _views(6, 5000, 0.02, 0.1, seed=1)
    result = solve_poses(local, world, torch.ones(local.shape[:2]))
    for v in range(6):
        assert rotation_error_deg(result.cam_to_world[v].numpy(), truth[v].numpy()) < 0.2
        assert np.linalg.norm(result.cam_to_world[v, :3, 3] - truth[v, :3, 3]) < 0.02
    assert result.ok.all()
    assert ((result.inlier_fraction > 0.8) & (result.inlier_fraction < 0.95)).all()


def test_solve_poses_reports_untrusted_views() -> None:
    local, world, _, _ = _views(4, 400, 0.01, 0.0, seed=2)
    weights = torch.ones(local.shape[:2])
    weights[0, 10:] = 0  # too few points
    world[1] = world[1][torch.randperm(400)]  # pointmaps that do not correspond
    local[2, :, :2] = 0  # all points on the optical axis: collinear
    result = solve_poses(local, world, weights)
    assert result.ok.tolist() == [False, False, False, True]
    assert "usable points" in result.notes[0]
    assert "disagree" in result.notes[1] or "inliers" in result.notes[1]
    assert "degenerate" in result.notes[2]
    assert not torch.allclose(result.cam_to_world[1], torch.eye(4, dtype=torch.float64))  # never a silent identity


def test_official_pnp_matches_fixture(oracle_fixture: dict[str, np.ndarray]) -> None:
    pytest.importorskip("cv2")
    points, conf = oracle_fixture["pts3d_in_other_view"], oracle_fixture["conf"]
    focal = focal_official(torch.from_numpy(points[0]), torch.from_numpy(conf[0]))
    reference = oracle_fixture["est_first_view_from_global_head_c2w"]
    size = float(np.linalg.norm(np.ptp(points.reshape(-1, 3), axis=0)))
    for view in range(len(conf)):
        pose, inliers = pnp_official(points[view], conf[view], focal)
        assert pose is not None and inliers > 0.9 * conf[view].size
        assert rotation_error_deg(pose, reference[view]) < 0.05
        assert np.linalg.norm(pose[:3, 3] - reference[view][:3, 3]) < 1e-3 * size


def test_official_pnp_fails_loudly_with_zero_focal() -> None:
    pose, inliers = pnp_official(np.ones((8, 8, 3), np.float32), np.full((8, 8), 2.0, np.float32), 0.0)
    assert pose is None and inliers == 0


def test_refine_reprojection_converges_despite_outliers() -> None:
    generator = torch.Generator().manual_seed(0)
    local, world, truth, _ = _views(3, 2000, 0.0, 0.0, seed=3)
    local = local / local[..., 2:].mean()  # the scale does not matter for the pixels
    focal = torch.tensor([300.0, 400.0, 500.0], dtype=torch.float64)
    offsets = focal[:, None, None] * local[..., :2] / local[..., 2:]
    offsets[:, :100] += 50 * torch.randn(3, 100, 2, generator=generator, dtype=torch.float64)  # 5 % outliers
    start = truth.clone()
    start[:, :3, :3] = _so3_exp(0.05 * torch.randn(3, 3, generator=generator, dtype=torch.float64)) @ start[:, :3, :3]
    start[:, :3, 3] += 0.1
    refined = refine_reprojection(start, world, offsets, focal, torch.ones(3, 2000))
    torch.testing.assert_close(refined, truth, atol=1e-8, rtol=0)
    assert (start - truth).abs().max() > 0.05
