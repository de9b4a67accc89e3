"""Focal length from camera-frame pointmaps: the official estimate and a batched, weighted, robust one."""

from __future__ import annotations

import math

import torch

from .robust import cauchy_reweight, masked_median


def focal_official(
    points: torch.Tensor,  # [H, W, 3] one view's points in its own camera frame
    conf: torch.Tensor,  # [H, W]
    quantile: float = 0.10,
    iterations: int = 100,
    principal_point: tuple[float, float] | None = None,
) -> float:
    """Official-compatible focal (spec section 7B), in network pixels of this view.

    Uses the official INTEGER pixel grid with principal point (W/2, H/2) (continuous principal point
    W/2 + 0.5, H/2 + 0.5, see ``conventions``): pixels with conf >= the 10 % quantile, initial least-squares
    focal, then Weiszfeld (IRLS, L1 of the 2-D reprojection error) iterations; clipped to >= 0.
    principal_point: (x, y) in the same integer-pixel coordinates instead of (W/2, H/2) (not official; lets a
    comparison remove the official half-pixel offset).
    """
    height, width = conf.shape
    points, conf = points.float(), conf.float()
    mask = conf >= torch.quantile(conf.reshape(-1), quantile)
    if not bool(mask.any()):
        return max(height, width) / (2.0 * math.tan(math.radians(30.0)))
    rows, cols = torch.meshgrid(
        torch.arange(height, device=conf.device), torch.arange(width, device=conf.device), indexing="ij"
    )
    center_x, center_y = (width / 2, height / 2) if principal_point is None else principal_point
    offsets = torch.stack([cols - center_x, rows - center_y], dim=-1).float()[mask]  # [N, 2]
    rays = torch.nan_to_num(points[..., :2] / points[..., 2:3], nan=0.0, posinf=0.0, neginf=0.0)[mask]
    dot = (rays * offsets).sum(-1)  # [N]
    norm = rays.square().sum(-1)
    focal = dot.mean() / norm.mean()
    for _ in range(iterations):
        residual = (offsets - focal * rays).norm(dim=-1)
        weight = 1.0 / residual.clamp_min(1e-8)
        focal = (weight * dot).sum() / (weight * norm).sum()
    return float(focal.clamp_min(0.0))


def estimate_focal(
    rays: torch.Tensor,  # [V, N, 2] (x/z, y/z) of camera-frame points
    offsets: torch.Tensor,  # [V, N, 2] pixel coordinates minus the principal point (any pixel unit)
    weights: torch.Tensor,  # [V, N] >= 0 (zero for unusable points)
    shared: bool = False,
    iterations: int = 30,
) -> torch.Tensor:
    """Robust weighted focal per view [V] (or one value repeated, ``shared``), same unit as ``offsets``.

    The pixel offsets are exact and the rays carry the pointmap's errors, so the fit regresses rays on offsets,
    ray ~ offset / f, which (unlike offset ~ f * ray) has no errors-in-variables bias towards short focals.
    Minimises sum w_i * rho(|ray_i - offset_i / f|): a weighted least-squares start, then Weiszfeld iterations
    (rho = L1 of the 2-D error) and a final Cauchy stage with a scale from the median residual, which gives gross
    outliers (wrong depths, wrong points) a vanishing weight. Square pixels (fx = fy).
    """
    rays, offsets, weights = rays.double(), offsets.double(), weights.double()
    finite = torch.isfinite(rays).all(-1) & torch.isfinite(offsets).all(-1)
    weights = torch.where(finite, weights, torch.zeros_like(weights))
    rays = torch.where(finite[..., None], rays, torch.zeros_like(rays))
    offsets = torch.where(finite[..., None], offsets, torch.zeros_like(offsets))
    dot = (rays * offsets).sum(-1)  # [V, N]
    norm = offsets.square().sum(-1)
    dims = (0, 1) if shared else (1,)

    def solve(w: torch.Tensor) -> torch.Tensor:
        """Inverse focal [V, 1] of the weighted least-squares fit."""
        g = (w * dot).sum(dims, keepdim=True) / (w * norm).sum(dims, keepdim=True)  # [V or 1, 1]
        return g.expand(rays.shape[0], 1)

    def residual(g: torch.Tensor) -> torch.Tensor:
        return (rays - g[..., None] * offsets).norm(dim=-1)  # [V, N]

    inverse = solve(weights)
    for _ in range(iterations):
        inverse = solve(weights / residual(inverse).clamp_min(1e-9))
    errors = residual(inverse)
    scale = masked_median(errors, weights > 0, None if shared else 1, keepdim=True).clamp_min(1e-9)  # [V or 1, 1]
    for _ in range(5):
        inverse = solve(cauchy_reweight(weights, errors, scale, c=3.0))
        errors = residual(inverse)
    return 1.0 / inverse[:, 0]
