"""Robust estimation shared by the focal, pose and chunk-merging fits: masked medians, Cauchy reweighting and a
Cauchy-IRLS similarity fit between point sets."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .align import apply_similarity, umeyama

MAD_TO_SIGMA = 1.4826
"""Median absolute residual -> standard deviation of a Gaussian."""
CAUCHY_C = 2.385
"""Cauchy scale in sigmas (95 % efficiency on Gaussian residuals)."""


def masked_median(
    values: torch.Tensor, mask: torch.Tensor, dim: int | None = -1, keepdim: bool = False
) -> torch.Tensor:
    """Median of ``values`` where ``mask`` holds, over ``dim`` (None: over all entries); NaN where none."""
    filled = torch.where(mask, values, torch.full_like(values, torch.nan))
    if dim is None:
        median = filled.reshape(-1).nanmedian()
        return median.reshape([1] * values.ndim) if keepdim else median
    return filled.nanmedian(dim=dim, keepdim=keepdim).values


def robust_sigma(residual: torch.Tensor, mask: torch.Tensor, floor: float) -> torch.Tensor:
    """[B] noise scale of residuals [B, N]: 1.4826 x their masked median, at least ``floor``."""
    return (MAD_TO_SIGMA * masked_median(residual, mask)).clamp_min(floor)


def cauchy_reweight(
    weights: torch.Tensor, residual: torch.Tensor, sigma: torch.Tensor, c: float = CAUCHY_C
) -> torch.Tensor:
    """weights / (1 + (residual / (c sigma))^2): one Cauchy IRLS step (``sigma`` broadcast against residual)."""
    return weights / (1.0 + (residual / (c * sigma)).square())


def symmetric_similarity(
    source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted Umeyama rotation with the symmetric scale sqrt(var(target) / var(source)): both point sets are
    predictions with errors, and Umeyama's scale shrinks by var(source) / (var(source) + var(noise)) then."""
    _, rotation, _ = umeyama(source, target, weights)
    norm_w = weights / weights.sum(-1, keepdim=True)
    mean_source = (norm_w[..., None] * source).sum(-2)
    mean_target = (norm_w[..., None] * target).sum(-2)
    var_source = (norm_w * (source - mean_source[..., None, :]).square().sum(-1)).sum(-1)
    var_target = (norm_w * (target - mean_target[..., None, :]).square().sum(-1)).sum(-1)
    scale = (var_target / var_source).sqrt()
    translation = mean_target - scale[..., None] * (rotation @ mean_source[..., None])[..., 0]
    return scale, rotation, translation


@dataclass
class SimilarityFit:
    """A robust similarity target ~ s R source + t per batch item (B items, N points each), float64."""

    scale: torch.Tensor  # [B]
    rotation: torch.Tensor  # [B, 3, 3]
    translation: torch.Tensor  # [B, 3]
    residual: torch.Tensor  # [B, N] |s R x + t - y|
    relative: torch.Tensor  # [B, N] residual over each point's noise level
    sigma: torch.Tensor  # [B] robust scale of ``relative``
    inlier_fraction: torch.Tensor  # [B] base-weighted fraction of usable points within 3 sigmas


def cauchy_similarity(
    source: torch.Tensor,  # [B, N, 3], zero where not usable
    target: torch.Tensor,  # [B, N, 3], zero where not usable
    base: torch.Tensor,  # [B, N] >= 0 prior weights, zero where not usable
    usable: torch.Tensor,  # [B, N] bool
    noise: torch.Tensor,  # [B, N] > 0, each point's noise level (in source units with ``noise_scales``)
    iterations: int = 6,
    symmetric_scale: bool = False,
    noise_scales: bool = False,
    sigma_floor: float = 1e-9,
) -> SimilarityFit:
    """Cauchy IRLS: ``iterations`` reweighting rounds of a weighted similarity fit on residual / noise.

    symmetric_scale: ``symmetric_similarity`` (both sides are predictions) instead of Umeyama's scale;
    noise_scales: the noise level is in source units, so it is multiplied by |s| (target units).
    """
    current = base
    for step in range(iterations + 1):
        fit = symmetric_similarity if symmetric_scale else umeyama
        scale, rotation, translation = fit(source, target, current)
        residual = (apply_similarity(source, scale, rotation, translation) - target).norm(dim=-1)
        level = scale.abs()[:, None] * noise if noise_scales else noise
        relative = residual / level.clamp_min(1e-12)
        sigma = robust_sigma(relative, usable, sigma_floor)
        if step < iterations:
            current = cauchy_reweight(base, relative, sigma[:, None])
    inliers = usable & (relative < 3.0 * sigma[:, None])
    inlier_fraction = (base * inliers).sum(-1) / base.sum(-1).clamp_min(1e-30)
    return SimilarityFit(scale, rotation, translation, residual, relative, sigma, inlier_fraction)
