"""Photometric correction of observations: sampling convention, shift recovery, rejection, robust Jacobians."""

from __future__ import annotations

import numpy as np
import torch

from fast3r_ns.geometry import photometric as ph
from fast3r_ns.geometry.tracks import Tracks, local_affine


def _texture(xy: np.ndarray) -> np.ndarray:
    """A smooth grey texture of continuous pixel coordinates [..., 2] without repeats: 40 random plane waves
    (wavelengths 4-20 pixels), values in about [-1, 1]."""
    rng = np.random.default_rng(5)
    angle = rng.uniform(0, 2 * np.pi, 40)
    frequency = 2 * np.pi / rng.uniform(4.0, 20.0, 40)
    phase = rng.uniform(0, 2 * np.pi, 40)
    waves = (xy[..., None, 0] * np.cos(angle) + xy[..., None, 1] * np.sin(angle)) * frequency + phase
    return np.sin(waves).sum(-1) / np.sqrt(40 / 2) / 2


def _image(shift: tuple[float, float], height: int = 96, width: int = 128) -> torch.Tensor:
    """[1, 3, H, W] image whose content at pixel p is _texture(p - shift)."""
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    grey = _texture(np.stack([xs - shift[0], ys - shift[1]], -1))
    return torch.from_numpy(grey).float()[None, None].expand(1, 3, height, width)


def test_sample_uses_pixel_centres() -> None:
    ys, xs = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    images = ph.grey_images([torch.from_numpy(2.0 * xs + 3.0 * ys).float()])
    xy = torch.tensor([[[0.5, 0.5], [3.25, 2.75], [7.5, 5.5]]])
    (values,), inside = ph.sample(images, (images.values,), torch.tensor([0]), xy)
    expected = 2.0 * (xy[..., 0] - 0.5) + 3.0 * (xy[..., 1] - 0.5)
    torch.testing.assert_close(values, expected)
    assert inside.all()


def test_matching_recovers_a_subpixel_shift_from_a_wrong_prediction() -> None:
    shift = np.array([2.3, -1.7])
    pyramid = ph.grey_pyramid([_image((0.0, 0.0)), _image(tuple(shift))])
    ref = np.stack(np.meshgrid(np.arange(24.5, 100, 9.0), np.arange(24.5, 70, 9.0)), -1).reshape(-1, 2)
    rng = np.random.default_rng(0)
    truth = ref + shift
    predicted = truth + rng.uniform(-6, 6, size=truth.shape)  # pointmap-like errors of several pixels
    count = len(ref)
    tracks = Tracks(
        points=np.zeros((count, 3)),
        offsets=np.arange(0, 2 * count + 1, 2),
        view=np.tile([0, 1], count),
        pixel=np.stack([ref, predicted], 1).reshape(-1, 2),
        source_point=np.zeros((2 * count, 3)),
        confidence=np.tile([5.0, 2.0], count),
        pairs=np.array([[0, 1]]),
        pair_matches=np.array([count]),
    )
    reference = ph.reference_rows(tracks)
    np.testing.assert_array_equal(reference, np.arange(0, 2 * count, 2))
    warps = np.broadcast_to(np.eye(2), (2 * count, 2, 2)).copy()
    matched, score = ph.match_observations(tracks, pyramid, warps, reference, ph.MatchOptions(min_gradient=0.01))
    moved = matched[1::2]
    ok = np.isfinite(moved).all(-1)
    assert ok.mean() > 0.8
    before = np.linalg.norm(predicted - truth, axis=-1)
    after = np.linalg.norm(moved[ok] - truth[ok], axis=-1)
    assert np.median(before) > 3.0 and np.median(after) < 0.05 and after.max() < 0.3
    assert score[1::2][ok].min() > 0.99
    np.testing.assert_array_equal(matched[::2], ref)  # references keep their pixels


def test_flat_patches_are_rejected() -> None:
    flat = torch.zeros(1, 3, 64, 64)
    pyramid = ph.grey_pyramid([flat, flat])
    tracks = Tracks(
        points=np.zeros((1, 3)),
        offsets=np.array([0, 2]),
        view=np.array([0, 1]),
        pixel=np.array([[32.5, 32.5], [33.0, 31.0]]),
        source_point=np.zeros((2, 3)),
        confidence=np.array([5.0, 2.0]),
        pairs=np.array([[0, 1]]),
        pair_matches=np.array([1]),
    )
    matched, _ = ph.match_observations(tracks, pyramid, np.tile(np.eye(2), (2, 1, 1)), np.array([0]))
    assert np.isnan(matched[1]).all() and np.isfinite(matched[0]).all()


def test_robust_affine_fit_ignores_pointmap_outliers() -> None:
    ys, xs = np.meshgrid(np.arange(40) + 0.5, np.arange(40) + 0.5, indexing="ij")
    plane = np.stack([0.01 * xs, 0.02 * ys, 2.0 + 0.005 * xs], -1)
    noisy = plane.copy()
    rng = np.random.default_rng(1)
    bad = rng.random((40, 40)) < 0.05
    noisy[bad] *= rng.uniform(0.3, 3.0, size=(int(bad.sum()), 1))
    pixel = np.array([[20.5, 20.5], [12.5, 25.5]])
    truth = np.array([[0.01, 0.0], [0.0, 0.02], [0.005, 0.0]])
    _, plain, _ = local_affine(torch.from_numpy(noisy), pixel, 4)
    _, robust, _ = local_affine(torch.from_numpy(noisy), pixel, 4, robust=True)
    assert np.abs(plain - truth).max() > 0.01  # outliers tilt a least-squares fit by more than the slope itself
    assert np.abs(robust - truth).max() < 1e-3
