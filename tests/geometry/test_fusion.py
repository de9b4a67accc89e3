"""Multi-view depth fusion (fast3r_ns.geometry.fusion) on a plane seen by three cameras with known poses."""

import numpy as np
import pytest
import torch

from fast3r_ns.geometry.fusion import FusionOptions, fuse_depths, neighbours_of
from fast3r_ns.testing.scene import look_at

HEIGHT, WIDTH, FOCAL = 48, 64, 60.0


def _plane_views(noise: float, seed: int = 0):
    """Depth maps of the plane z = 4 from three cameras near the origin, with relative depth noise."""
    rng = np.random.default_rng(seed)
    poses = np.stack(
        [look_at(np.array([x, 0.0, 0.0]), np.array([0.0, 0.0, 4.0]), up=(0.0, 1.0, 0.0)) for x in (-0.3, 0.0, 0.3)]
    )
    intrinsics = np.tile([FOCAL, FOCAL, WIDTH / 2, HEIGHT / 2], (3, 1))
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    rays = np.stack([(xs - WIDTH / 2) / FOCAL, (ys - HEIGHT / 2) / FOCAL, np.ones_like(xs)], axis=-1)
    depths = []
    for pose in poses:
        world_rays = rays @ pose[:3, :3].T
        t = (4.0 - pose[2, 3]) / world_rays[..., 2]  # distance along the ray to z = 4, in ray units
        depths.append(t * (1.0 + noise * rng.standard_normal(t.shape)))
    return depths, intrinsics, poses


def _plane_error(points: torch.Tensor) -> float:
    return float((points[:, 2].double() - 4.0).abs().median())


def test_fusion_averages_noise_and_drops_unconfirmed_pixels():
    depths, intrinsics, poses = _plane_views(noise=0.02)
    depths[1][10, 20] *= 2.0  # an outlier that no other view confirms
    neighbours = neighbours_of(np.array([[0, 1], [1, 2], [0, 2]]), 3)
    fused, tolerance = fuse_depths(depths, intrinsics, poses, neighbours, FusionOptions(min_views=1))
    # the automatic tolerance follows the noise: 3x the median of |difference| of two 2 % noisy depths (~1.9 %)
    assert 0.04 < tolerance < 0.08
    before = float(np.median(np.abs(depths[1] - 4.0)))  # view 1 looks straight at the plane: depth = world z
    after = _plane_error(fused[1].points)
    assert after < 0.7 * before, (before, after)
    assert (10 * WIDTH + 20) not in set(fused[1].index.tolist())
    assert int(fused[1].confirmations.max()) == 2
    # the default asks for two confirmations: view 1's pixels seen by one other view only go
    strict, _ = fuse_depths(depths, intrinsics, poses, neighbours)
    assert 0 < len(strict[1].index) < len(fused[1].index) and int(strict[1].confirmations.min()) == 2


def test_exact_depths_stay_exact_and_a_view_without_neighbours_keeps_nothing():
    # views 0 and 1 have one neighbour each: one confirmation is all they can get
    depths, intrinsics, poses = _plane_views(noise=0.0)
    fused, _ = fuse_depths(depths, intrinsics, poses, neighbours_of(np.array([[0, 1]]), 3), FusionOptions(0.01))
    assert _plane_error(fused[0].points) < 1e-5
    assert len(fused[0].points) > 0.5 * HEIGHT * WIDTH
    assert len(fused[2].points) == 0  # no neighbour: no confirmation


def test_options_are_validated():
    with pytest.raises(ValueError, match="tolerance"):
        FusionOptions(tolerance=0.0)
    with pytest.raises(ValueError, match="min_views"):
        FusionOptions(min_views=0)
