"""Multi-view fusion of per-view depth maps placed with (refined) cameras: the dense cloud after refinement.

Each view's depth map (network pixels) is back-projected with its camera. A pixel's point is projected into each
neighbouring view; where that view's own depth there agrees within a relative ``tolerance``, the neighbour
confirms it and contributes its point (on its own ray through the projection, at its own depth). A pixel confirmed
by at least ``min_views`` neighbours is kept at the mean of its point and the confirming ones: errors that the views
do not share (each view's misplacement, depth noise, flying pixels, outliers) are removed or averaged down; what
they share (a common bias of the depth maps) stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FusionOptions:
    tolerance: float | None = None
    """Relative depth difference below which a neighbour confirms a pixel; None: 3x the median relative
    difference of the pixels that land in a neighbour (within 20 %), clamped to [0.003, 0.1]."""
    min_views: int = 2
    """Neighbours that must confirm a pixel for it to stay (all of them when a view has fewer). Cloud to the true
    surface, median / p90 of the diagonal, room_natural at 0.2 and 1.2 deg (``benchmarks/bench_fusion.py``,
    ``fusion_cpu.jsonl``): 1: 0.00144 / 0.0060 and 0.0032 / 0.0136; 2: 0.00138 / 0.0056 and 0.0029 / 0.0121,
    keeping 85-88 % of the points; 3: 0.00127 / 0.0050 and 0.0026 / 0.0104, keeping 65-72 %."""

    def __post_init__(self) -> None:
        if self.tolerance is not None and not 0 < self.tolerance < 1:
            raise ValueError(f"FusionOptions.tolerance must be in (0, 1), got {self.tolerance}")
        if self.min_views < 1:
            raise ValueError(f"FusionOptions.min_views must be >= 1, got {self.min_views}")


@dataclass
class FusedView:
    points: torch.Tensor  # [N, 3] fused world points of the kept pixels
    index: torch.Tensor  # [N] int64, flat pixel index (row * W + col) in the view's network image
    confirmations: torch.Tensor  # [N] int64, neighbours that confirmed each pixel


def neighbours_of(pairs: np.ndarray, count: int) -> list[list[int]]:
    """Each view's neighbours in the undirected view pairs [P, 2]."""
    out: list[list[int]] = [[] for _ in range(count)]
    for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2):
        if a != b:
            out[a].append(int(b))
            out[b].append(int(a))
    return [sorted(set(n)) for n in out]


class _Views:
    """Depth maps (float32) and cameras of all views on one device (float64 geometry)."""

    def __init__(self, depths, intrinsics, cam_to_world, device) -> None:
        self.depths = [torch.as_tensor(d, device=device, dtype=torch.float32) for d in depths]
        self.intrinsics = torch.as_tensor(np.asarray(intrinsics), device=device, dtype=torch.float64)
        self.pose = torch.as_tensor(np.asarray(cam_to_world), device=device, dtype=torch.float64)

    def points(self, view: int, index: torch.Tensor) -> torch.Tensor:
        width = self.depths[view].shape[1]
        fx, fy, cx, cy = self.intrinsics[view]
        x, y = (index % width).double() + 0.5, (index // width).double() + 0.5  # the pixel centres
        rays = torch.stack([(x - cx) / fx, (y - cy) / fy, torch.ones_like(x)], dim=-1)
        camera = rays * self.depths[view].reshape(-1)[index, None].double()
        return camera @ self.pose[view, :3, :3].T + self.pose[view, :3, 3]

    def look_up(self, view: int, world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(relative depth difference [N], the neighbour's point [N, 3], landed [N] bool) of world points seen
        from ``view``: its depth at the nearest pixel against the point's depth."""
        height, width = self.depths[view].shape
        rotation, center = self.pose[view, :3, :3], self.pose[view, :3, 3]
        camera = (world - center) @ rotation
        z = camera[:, 2]
        fx, fy, cx, cy = self.intrinsics[view]
        safe = torch.where(z > 0, z, torch.ones_like(z))
        col = torch.floor(camera[:, 0] / safe * fx + cx).long()
        row = torch.floor(camera[:, 1] / safe * fy + cy).long()
        landed = (z > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        flat = torch.where(landed, row * width + col, torch.zeros_like(col))
        theirs = self.depths[view].reshape(-1)[flat].double()
        landed &= torch.isfinite(theirs)
        difference = torch.where(landed, (theirs - z) / safe, torch.full_like(z, float("inf")))
        point = (camera * (theirs / safe)[:, None]) @ rotation.T + center
        return difference, point, landed


def fuse_depths(
    depths: Sequence[np.ndarray | torch.Tensor],  # V x [H, W] world-scale depth along each camera's z, NaN: none
    intrinsics: np.ndarray,  # [V, 4] network-pixel (fx, fy, cx, cy)
    cam_to_world: np.ndarray,  # [V, 4, 4]
    neighbours: Sequence[Sequence[int]],
    options: FusionOptions = FusionOptions(),
    device: torch.device | str = "cpu",
    max_pixels: int | None = None,
) -> tuple[list[FusedView], float]:
    """Fused points of every view's confirmed pixels (at most ``max_pixels`` random valid ones per view, seeded),
    and the tolerance used."""
    views = _Views(depths, intrinsics, cam_to_world, torch.device(device))
    valid = [torch.isfinite(d).reshape(-1).nonzero()[:, 0] for d in views.depths]
    if max_pixels is not None:
        generator = torch.Generator().manual_seed(1)
        valid = [
            index
            if len(index) <= max_pixels
            else index[torch.randperm(len(index), generator=generator)[:max_pixels].to(index.device)].sort().values
            for index in valid
        ]
    tolerance = options.tolerance or _tolerance(views, valid, neighbours)
    fused = []
    for view, index in enumerate(valid):
        own = views.points(view, index)
        total, count = own.clone(), torch.zeros(len(index), dtype=torch.int64, device=own.device)
        for other in neighbours[view]:
            difference, point, _ = views.look_up(other, own)
            agree = difference.abs() <= tolerance
            total += torch.where(agree[:, None], point, torch.zeros_like(point))
            count += agree.long()
        keep = count >= max(1, min(options.min_views, len(neighbours[view])))  # fewer neighbours: all of them
        mean = total[keep] / (1 + count[keep, None]).to(total.dtype)
        fused.append(FusedView(mean.float(), index[keep], count[keep]))
    return fused, tolerance


def _tolerance(views: _Views, valid: list[torch.Tensor], neighbours: Sequence[Sequence[int]]) -> float:
    """3x the median |relative depth difference| of sampled pixels that land within 20 % in a neighbour."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for view, index in enumerate(valid):
        if not len(index) or not neighbours[view]:
            continue
        pick = index[torch.randperm(len(index), generator=generator)[:2048].to(index.device)]
        own = views.points(view, pick)
        for other in neighbours[view]:
            difference = views.look_up(other, own)[0].abs()
            samples.append(difference[difference < 0.2])
    if not samples or not sum(len(s) for s in samples):
        return 0.02
    return float(np.clip(3.0 * torch.cat(samples).median().item(), 0.003, 0.1))
