from __future__ import annotations

import numpy as np
import pytest
import torch

from fast3r_ns.geometry.focal import estimate_focal, focal_official


def test_official_focal_matches_fixture(oracle_fixture: dict[str, np.ndarray]) -> None:
    points, conf = oracle_fixture["pts3d_in_other_view"], oracle_fixture["conf"]
    focal = focal_official(torch.from_numpy(points[0]), torch.from_numpy(conf[0]))
    assert focal == pytest.approx(float(oracle_fixture["est_focal_view0_global"]), rel=1e-3)
    # The official routine on other views' global points (wrong frame, meaningless focals): still the same numbers.
    for view in range(1, 4):
        other = focal_official(torch.from_numpy(points[view]), torch.from_numpy(conf[view]))
        assert other == pytest.approx(float(oracle_fixture["est_focal_per_view_global"][view]), rel=1e-3)


def test_official_focal_matches_tiny_model(tiny_fixture) -> None:
    outputs, poses = tiny_fixture
    focals = [
        focal_official(
            torch.from_numpy(outputs[f"view{v}_pts3d_in_other_view"][0]), torch.from_numpy(outputs[f"view{v}_conf"][0])
        )
        for v in range(4)
    ]
    np.testing.assert_allclose(focals, poses["focal_per_view_global"], rtol=1e-3, atol=1e-5)


def _synthetic_rays(focals: list[float], count: int, outliers: float, seed: int):
    """Rays and pixel offsets of pinhole cameras, 1 % isotropic point noise, a fraction of gross outliers."""
    rng = np.random.default_rng(seed)
    rays, offsets = [], []
    for focal in focals:
        offset = rng.uniform((-160, -120), (160, 120), size=(count, 2))
        depth = rng.uniform(2, 8, size=(count, 1))
        points = np.concatenate([offset / focal * depth, depth], axis=1)
        points += 0.01 * depth * rng.standard_normal(points.shape)
        bad = rng.random(count) < outliers
        points[bad] *= rng.uniform(0.2, 3.0, size=(bad.sum(), 3))
        rays.append(points[:, :2] / points[:, 2:])
        offsets.append(offset)
    return torch.tensor(np.stack(rays)), torch.tensor(np.stack(offsets))


def test_robust_focal_per_view_with_outliers() -> None:
    focals = [200.0, 300.0, 450.0]
    rays, offsets = _synthetic_rays(focals, 4000, outliers=0.1, seed=0)
    weights = torch.ones(rays.shape[:2])
    estimate = estimate_focal(rays, offsets, weights).numpy()
    np.testing.assert_allclose(estimate, focals, rtol=3e-3)
    # Plain least squares on the same data is far off: the test data really carries outliers.
    plain = ((rays * offsets).sum((1, 2)) / rays.square().sum((1, 2))).numpy()
    assert np.abs(plain / focals - 1).max() > 0.05


def test_robust_focal_shared_and_padding() -> None:
    rays, offsets = _synthetic_rays([250.0, 250.0], 3000, outliers=0.05, seed=1)
    weights = torch.ones(rays.shape[:2])
    weights[1, 2000:] = 0  # padding
    rays[1, 2000:] = torch.nan
    estimate = estimate_focal(rays, offsets, weights, shared=True).numpy()
    assert estimate.shape == (2,) and estimate[0] == estimate[1]
    assert estimate[0] == pytest.approx(250.0, rel=3e-3)
