"""Multi-view depth fusion (fast3r_ns.geometry.fusion) on a plane seen by three cameras with known poses."""

import numpy as np
import pytest
import torch

from fast3r_ns.geometry.fusion import (
    FusionOptions,
    fuse_depths,
    median_filtered,
    neighbours_of,
    triangulated_depths,
)
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
    # the default asks for two confirmations where two neighbours see the pixel: some noisy ones go
    strict, _ = fuse_depths(depths, intrinsics, poses, neighbours)
    assert 0 < len(strict[1].index) < len(fused[1].index)


def test_a_neighbour_that_sees_another_surface_in_front_does_not_count_against_a_pixel():
    depths, intrinsics, poses = _plane_views(noise=0.0)
    depths[2][:, : WIDTH // 2] = np.nan  # view 2 has no depth on its left half
    exact = FusionOptions(tolerance=0.01)
    only_two = [[], [2], []]
    seen_by_two = set(
        fuse_depths(depths, intrinsics, poses, only_two, FusionOptions(0.01, min_views=1))[0][1].index.tolist()
    )
    assert 0.2 * HEIGHT * WIDTH < len(seen_by_two) < 0.8 * HEIGHT * WIDTH
    both = [[], [0, 2], []]
    occluded = [d.copy() for d in depths]
    occluded[0] *= 0.5  # view 0 sees an occluder in front of the plane everywhere
    kept = fuse_depths(occluded, intrinsics, poses, both, exact)[0][1]
    assert set(kept.index.tolist()) == seen_by_two and int(kept.confirmations.max()) == 1
    # view 0 sees the plane 3 % farther (through view 1's points): it disagrees, two confirmations are needed
    through = [d.copy() for d in depths]
    through[0] *= 1.03
    strict = set(fuse_depths(through, intrinsics, poses, both, exact)[0][1].index.tolist())
    lenient = set(fuse_depths(through, intrinsics, poses, both, FusionOptions(0.01, min_views=1))[0][1].index.tolist())
    assert lenient == seen_by_two and len(strict) < 0.3 * len(seen_by_two)


def test_exact_depths_stay_exact_and_a_view_without_neighbours_keeps_nothing():
    # views 0 and 1 have one neighbour each: one confirmation is all they can get
    depths, intrinsics, poses = _plane_views(noise=0.0)
    fused, _ = fuse_depths(depths, intrinsics, poses, neighbours_of(np.array([[0, 1]]), 3), FusionOptions(0.01))
    assert _plane_error(fused[0].points) < 1e-5
    assert len(fused[0].points) > 0.5 * HEIGHT * WIDTH
    assert len(fused[2].points) == 0  # no neighbour: no confirmation


def _true_targets(intrinsics, poses, source: int, target: int, step: int = 1) -> np.ndarray:
    """[h, w, 2] pixels in ``target`` of ``source``'s pixels (step r, step c) on the plane z = 4 (exact flow)."""
    ys, xs = np.mgrid[0:HEIGHT:step, 0:WIDTH:step] + 0.5
    rays = np.stack([(xs - WIDTH / 2) / FOCAL, (ys - HEIGHT / 2) / FOCAL, np.ones_like(xs)], axis=-1)
    world_rays = rays @ poses[source, :3, :3].T
    world = poses[source, :3, 3] + world_rays * ((4.0 - poses[source, 2, 3]) / world_rays[..., 2])[..., None]
    camera = (world - poses[target, :3, 3]) @ poses[target, :3, :3]
    fx, fy, cx, cy = intrinsics[target]
    return np.stack([fx * camera[..., 0] / camera[..., 2] + cx, fy * camera[..., 1] / camera[..., 2] + cy], -1)


def test_triangulated_depth_replaces_the_noisy_depth_map_where_flow_matches():
    truth, intrinsics, poses = _plane_views(noise=0.0)
    noisy, _, _ = _plane_views(noise=0.03, seed=1)
    targets = {(a, b): _true_targets(intrinsics, poses, a, b) for a in range(3) for b in range(3) if a != b}
    targets[(1, 0)][5, 7] += 3.0  # a flow error: far from the depth map, it must not be used
    targets[(1, 2)][5, 7] += 3.0
    targets[(0, 1)][:, : WIDTH // 2] = np.nan  # half of view 0 has no match in view 1
    unfiltered = FusionOptions(median_window=1)
    depths, share = triangulated_depths(noisy, targets, intrinsics, intrinsics, poses, unfiltered)
    assert share > 0.9
    for view in range(3):
        error = np.abs(depths[view].numpy() - truth[view]) / truth[view]
        assert np.median(error) < 1e-4, (view, np.median(error))  # the data, not the 3 % noise of the map
    assert depths[1][5, 7] == pytest.approx(noisy[1][5, 7], rel=1e-6)  # kept from the depth map
    # with no flow, the depth map is returned as it is
    same, none = triangulated_depths(noisy, {}, intrinsics, intrinsics, poses, unfiltered)
    assert none == 0.0 and np.allclose(same[2].numpy(), noisy[2], rtol=1e-6)


def test_rays_closer_than_the_parallax_floor_do_not_triangulate():
    truth, intrinsics, poses = _plane_views(noise=0.0)
    noisy, _, _ = _plane_views(noise=0.03, seed=1)
    targets = {(0, 1): _true_targets(intrinsics, poses, 0, 1)}  # the centres are 0.3 apart at 4: ~4 deg
    _, share = triangulated_depths(noisy, targets, intrinsics, intrinsics, poses, FusionOptions(min_parallax_deg=8))
    assert share == 0.0
    _, share = triangulated_depths(noisy, targets, intrinsics, intrinsics, poses, FusionOptions(min_parallax_deg=2))
    assert share > 0.3  # view 0's pixels (a third of all) seen by view 1


def test_the_median_removes_pixel_noise_and_keeps_edges_and_thin_structures():
    rng = np.random.default_rng(3)
    truth = np.full((60, 80), 4.0)
    truth[:, 40:] = 6.0  # a step edge
    truth[20:22, 5:35] = 2.0  # a bar two pixels thick in front
    truth[50, 60] = np.nan
    noisy = truth * (1 + 0.03 * rng.standard_normal(truth.shape))
    filtered = median_filtered(torch.from_numpy(noisy), 5, 0.15).numpy()
    finite = np.isfinite(truth)
    assert np.array_equal(np.isfinite(filtered), finite)
    error, before = np.abs(filtered / truth - 1)[finite], np.abs(noisy / truth - 1)[finite]
    assert np.median(error) < 0.4 * np.median(before), (np.median(error), np.median(before))
    assert np.abs(filtered[20:22, 5:35] / 2.0 - 1).max() < 0.15  # the bar is not eaten by the wall behind it
    assert np.abs(filtered[:, 38:40] / 4.0 - 1).max() < 0.15 and np.abs(filtered[:, 40:42] / 6.0 - 1).max() < 0.15
    assert np.array_equal(median_filtered(torch.from_numpy(noisy), 1, 0.15).numpy(), noisy, equal_nan=True)


def test_options_are_validated():
    with pytest.raises(ValueError, match="tolerance"):
        FusionOptions(tolerance=0.0)
    with pytest.raises(ValueError, match="min_views"):
        FusionOptions(min_views=0)
    with pytest.raises(ValueError, match="occlusion_margin"):
        FusionOptions(occlusion_margin=0.5)
    with pytest.raises(ValueError, match="min_parallax_deg"):
        FusionOptions(min_parallax_deg=-1.0)
    with pytest.raises(ValueError, match="median_window"):
        FusionOptions(median_window=4)
