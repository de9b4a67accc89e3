from __future__ import annotations

import numpy as np
import torch

from fast3r_ns.geometry.points import PointSampler, confidence_mask, sample_colors, voxel_thin


def test_confidence_mask_percentile_and_floor() -> None:
    conf = torch.arange(1, 101, dtype=torch.float32)[None].repeat(2, 1)  # 1..100
    conf[1, 0] = torch.nan
    mask = confidence_mask(conf, percentile=10, min_confidence=0.0)
    assert mask[0].sum() == 90 and not mask[0, :10].any()
    assert not mask[1, 0]
    assert confidence_mask(conf, percentile=0, min_confidence=50.5)[0].sum() == 50
    assert confidence_mask(conf, percentile=100, min_confidence=0)[0].sum() == 0


def test_voxel_thin_hits_target_and_keeps_most_confident() -> None:
    generator = torch.Generator().manual_seed(0)
    # Points on two planes (a surface-like cloud) with 4 exact duplicates of every location.
    base = torch.rand(50_000, 3, generator=generator)
    base[:25_000, 2] = 0
    base[25_000:, 0] = 1
    points = base.repeat(4, 1)
    conf = torch.rand(len(points), generator=generator)
    keep = voxel_thin(points, conf, 20_000, generator)
    assert 0.85 * 20_000 <= len(keep) <= 20_000
    assert len(torch.unique(keep)) == len(keep)
    # For duplicates the kept one is the most confident of its copies.
    location = keep % 50_000
    best = conf.reshape(4, -1).max(0).values
    np.testing.assert_array_equal(conf[keep].numpy(), best[location].numpy())


def test_point_sampler_bounds_memory_and_sorts_by_view() -> None:
    sampler = PointSampler(per_view_cap=100, seed=0)
    for view in range(3):
        points = torch.randn(1000, 3)
        sampler.add(view, points, torch.rand(1000), torch.arange(1000))
    points, conf, view, pixel = sampler.finish(max_points=10_000)
    assert len(points) == 300 and (view.diff() >= 0).all()
    points, _, _, _ = PointSampler(per_view_cap=1000).finish(10)
    assert len(points) == 0


def test_sample_colors_uses_the_pixel_containing_the_coordinate() -> None:
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    xy = np.array([[0.5, 0.5], [4.99, 3.01], [2.0, 1.0], [10.0, -3.0]])
    np.testing.assert_array_equal(sample_colors(image, xy), image[[0, 3, 1, 0], [0, 4, 2, 4]])
