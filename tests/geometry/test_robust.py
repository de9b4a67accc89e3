"""The shared robust estimators: masked medians, Cauchy reweighting and the Cauchy-IRLS similarity fit."""

from __future__ import annotations

import math

import pytest
import torch

from fast3r_ns.geometry.align import apply_similarity, umeyama
from fast3r_ns.geometry.robust import (
    cauchy_reweight,
    cauchy_similarity,
    masked_median,
    robust_sigma,
    symmetric_similarity,
)


def test_masked_median_rows_all_and_empty() -> None:
    values = torch.tensor([[1.0, 9.0, 3.0, 5.0], [4.0, 2.0, 8.0, 6.0]])
    mask = torch.tensor([[True, False, True, True], [False, False, False, False]])
    rows = masked_median(values, mask)
    assert rows[0] == 3.0 and math.isnan(rows[1])  # torch's median of an even count is the lower middle
    assert masked_median(values, mask, dim=None, keepdim=True).tolist() == [[3.0]]
    assert masked_median(values, mask, dim=1, keepdim=True).shape == (2, 1)


def test_cauchy_weights_and_sigma() -> None:
    residual = torch.tensor([[0.0, 1.0, 2.0, 100.0]])
    sigma = robust_sigma(residual, torch.ones_like(residual, dtype=torch.bool), floor=1e-9)
    assert sigma.item() == pytest.approx(1.4826 * 1.0)
    weights = cauchy_reweight(torch.ones_like(residual), residual, sigma[:, None])
    expected = 1 / (1 + (residual / (2.385 * 1.4826)) ** 2)
    torch.testing.assert_close(weights, expected)
    assert weights[0, 3] < 2e-3  # a gross outlier loses its pull
    assert robust_sigma(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), floor=0.5).item() == 0.5


def _scene(seed: int, outliers: int):
    generator = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(2, 3, 3, generator=generator, dtype=torch.float64))[0]
    rotation = rotation * torch.linalg.det(rotation)[:, None, None]
    scale = torch.tensor([0.5, 2.5], dtype=torch.float64)
    translation = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    source = torch.randn(2, 2000, 3, generator=generator, dtype=torch.float64)
    target = apply_similarity(source, scale, rotation, translation)
    target = target + 1e-3 * torch.randn(target.shape, generator=generator, dtype=torch.float64)
    target[:, :outliers] += 5 * torch.randn(2, outliers, 3, generator=generator, dtype=torch.float64)
    return source, target, (scale, rotation, translation)


def test_cauchy_similarity_ignores_outliers_that_bend_least_squares() -> None:
    source, target, (scale, rotation, translation) = _scene(0, outliers=400)  # 20 % gross outliers
    base = torch.ones(source.shape[:2], dtype=torch.float64)
    usable = torch.ones_like(base, dtype=torch.bool)
    fit = cauchy_similarity(source, target, base, usable, torch.ones_like(base))
    torch.testing.assert_close(fit.scale, scale, rtol=1e-3, atol=0)
    torch.testing.assert_close(fit.rotation, rotation, rtol=0, atol=1e-3)
    torch.testing.assert_close(fit.translation, translation, rtol=0, atol=5e-3)
    assert ((fit.inlier_fraction - 0.8).abs() < 0.02).all()
    plain = umeyama(source, target, base)
    robust_error = (fit.translation - translation).norm(dim=-1)
    assert ((plain[2] - translation).norm(dim=-1) > 10 * robust_error).all()  # least squares is pulled far off


def test_cauchy_similarity_noise_in_source_units_and_symmetric_scale() -> None:
    source, target, (scale, _, _) = _scene(1, outliers=0)
    base = torch.ones(source.shape[:2], dtype=torch.float64)
    usable = torch.ones_like(base, dtype=torch.bool)
    noise = source.norm(dim=-1)
    fit = cauchy_similarity(source, target, base, usable, noise, noise_scales=True)
    torch.testing.assert_close(fit.relative, fit.residual / (fit.scale.abs()[:, None] * noise))
    symmetric = cauchy_similarity(source, target, base, usable, noise, symmetric_scale=True)
    torch.testing.assert_close(symmetric.scale, scale, rtol=1e-3, atol=0)
    torch.testing.assert_close(symmetric_similarity(source, target, base)[0], symmetric.scale, rtol=1e-4, atol=0)
