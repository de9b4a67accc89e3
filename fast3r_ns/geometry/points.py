"""Point cloud from pointmaps: confidence filtering, bounded-memory sampling, voxel thinning, colour sampling."""

from __future__ import annotations

import math

import numpy as np
import torch


def confidence_mask(
    conf: torch.Tensor,  # [V, N] per-view confidences
    percentile: float,
    min_confidence: float,
) -> torch.Tensor:
    """[V, N] bool: finite, >= ``min_confidence`` and >= the view's ``percentile`` (lowest X % dropped)."""
    mask = torch.isfinite(conf) & (conf >= min_confidence)
    if percentile > 0:
        count = conf.shape[-1]
        rank = min(count, max(1, int(math.ceil(count * percentile / 100.0))))
        threshold = torch.nan_to_num(conf, nan=-torch.inf).kthvalue(rank, dim=-1, keepdim=True).values
        mask &= conf > threshold if rank < count else torch.zeros_like(mask)
    return mask


class PointSampler:
    """Accumulates candidate points view by view with a per-view cap, so memory stays bounded for any number of
    views; ``finish`` voxel-thins the pool to a target count keeping the most confident point of each voxel.
    """

    def __init__(self, per_view_cap: int, seed: int = 0) -> None:
        self.per_view_cap = per_view_cap
        self.generator = torch.Generator().manual_seed(seed)
        self.chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(
        self,
        view: int,
        points: torch.Tensor,  # [N, 3] world points of one view (any device)
        conf: torch.Tensor,  # [N]
        pixel_index: torch.Tensor,  # [N] int64 flat index into the view's network image
    ) -> None:
        if len(points) > self.per_view_cap:
            # Evenly spaced picks with a random phase: a uniform thinning in image order, cheaper than randperm.
            phase = float(torch.rand((), generator=self.generator))
            step = len(points) / self.per_view_cap
            keep = ((torch.arange(self.per_view_cap, dtype=torch.float64) + phase) * step).long().to(points.device)
            points, conf, pixel_index = points[keep], conf[keep], pixel_index[keep]
        view_index = torch.full((len(points),), view, dtype=torch.int32)
        self.chunks.append((points.float().cpu(), conf.float().cpu(), view_index, pixel_index.to(torch.int32).cpu()))

    def finish(
        self, max_points: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(points [M, 3], conf [M], view [M], pixel index [M]) on the CPU with M <= max_points, sorted by view.

        The pool is voxel-thinned on ``device``.
        """
        if not self.chunks:
            return (
                torch.zeros(0, 3),
                torch.zeros(0),
                torch.zeros(0, dtype=torch.int32),
                torch.zeros(0, dtype=torch.int32),
            )
        points, conf, view, pixel = (torch.cat(parts) for parts in zip(*self.chunks))
        self.chunks = []
        if len(points) > max_points:
            keep = voxel_thin(points.to(device), conf.to(device), max_points, self.generator).cpu()
            keep = keep.sort().values
            points, conf, view, pixel = points[keep], conf[keep], view[keep], pixel[keep]
        return points, conf, view, pixel


def voxel_thin(
    points: torch.Tensor,  # [N, 3]
    conf: torch.Tensor,  # [N]
    target: int,
    generator: torch.Generator | None = None,
    max_rounds: int = 8,
) -> torch.Tensor:
    """Indices [M <= target] of points kept by a voxel grid whose size is searched so that about ``target`` voxels
    are occupied; the most confident point of each voxel is kept (random subset if still above ``target``).
    """
    count = len(points)
    if count <= target:
        return torch.arange(count)
    low = points.quantile(0.001, dim=0) if count <= 16_000_000 else points.min(0).values
    high = points.quantile(0.999, dim=0) if count <= 16_000_000 else points.max(0).values
    extent = (high - low).clamp_min(1e-9)
    # Start from a surface-like guess (occupied voxels ~ area / size^2) and correct on a log-log secant.
    size = float(torch.sqrt(extent.prod() ** (2.0 / 3.0) * 3.0 / target))
    history: list[tuple[float, int]] = []
    for _ in range(max_rounds):
        keys = _voxel_keys(points, low, size)
        occupied = int(torch.unique(keys).numel())
        history.append((size, occupied))
        if 0.85 * target <= occupied <= target:
            break
        if len(history) >= 2 and history[-1][1] != history[-2][1]:
            (s0, n0), (s1, n1) = history[-2], history[-1]
            slope = (math.log(n1) - math.log(n0)) / (math.log(s1) - math.log(s0))
            slope = min(-0.5, max(-3.0, slope))
        else:
            slope = -2.0
        size = size * math.exp((math.log(0.93 * target) - math.log(max(occupied, 1))) / slope)
    order = torch.argsort(conf, descending=True)
    _, inverse = torch.unique(keys[order], return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(order), dtype=torch.int64, device=points.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(order), device=points.device), reduce="amin")
    keep = order[first]
    if len(keep) > target:
        keep = keep[torch.randperm(len(keep), generator=generator)[:target].to(points.device)]
    return keep


def _voxel_keys(points: torch.Tensor, low: torch.Tensor, size: float) -> torch.Tensor:
    """[N] int64 voxel id (21 bits per axis, points outside the range clamp to the border voxels)."""
    cells = torch.floor((points - low) / size).clamp(0, (1 << 21) - 1).to(torch.int64)
    return (cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2]


def sample_colors(
    image: np.ndarray,  # [H0, W0, 3] uint8 original image
    xy: np.ndarray,  # [M, 2] continuous original-image coordinates
) -> np.ndarray:
    """[M, 3] uint8 colour of the original pixel containing each continuous coordinate."""
    height, width = image.shape[:2]
    cols = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, width - 1)
    rows = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, height - 1)
    return image[rows, cols]
