"""Multi-view fusion of per-view depth maps placed with (refined) cameras: the dense cloud after refinement.

Each view's depth map (network pixels) is back-projected with its camera. A pixel's point is projected into each
neighbouring view; where that view's own depth there agrees within a relative ``tolerance``, the neighbour
confirms it and contributes its point (on its own ray through the projection, at its own depth); where it is
nearer than the point by a little, or farther (it sees through the point), it disagrees; much nearer, another
surface hides the point from it and it says nothing. A pixel is kept, at the mean of its point and the confirming
ones, when ``min_views`` neighbours confirm it, or all that see it and at least one: errors that the views do not
share (each view's misplacement, depth noise, flying pixels, outliers) are removed or averaged down, surfaces that
few views see keep their points; what the views share (a common bias of the depth maps) stays.

With the flows of the refinement (``triangulated_depths``), each view's depth comes from the data first: every
flow target of a pixel in a neighbour is triangulated with the two refined cameras (midpoint of the two rays), and
the estimates that agree with the view's depth map (within a gate that follows their spread) are averaged with
weights sin^2 of the parallax; the depth map itself is kept only where nothing triangulates. That removes the
depth maps' own errors, shared or not, where the images have texture and parallax. Then each pixel takes the median
of its window where the window holds one surface and the pixel is near that median (``median_filtered``): the
per-pixel noise of both the depth map and the triangulation goes, edges and thin structures stay.
"""

from __future__ import annotations

from collections import defaultdict
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
    """Neighbours that must confirm a pixel for it to stay where that many see it (else all that see it, at least
    one; ``occlusion_margin``). Default triangulated fusion, room_natural 0.2 / 1.2 deg (``bench_fusion.py``,
    ``fusion_cpu.jsonl``: distance to the true surface median / p90 of the diagonal; true surface farther than 0.5 %
    of it from any point): 1: 0.00052 / 0.0018, 5.3 % and 0.0011 / 0.0046, 7.1 % uncovered; 2: 0.00049 / 0.0016,
    5.7 % and 0.0010 / 0.0037, 7.9 %; 3: 0.00047 / 0.0015, 5.9 % and 0.00095 / 0.0034, 8.2 %."""

    occlusion_margin: float = 3.0
    """A neighbour whose depth at a pixel's point is smaller by more than this many tolerances sees another
    surface in front of it: it neither confirms nor counts against the pixel (so surfaces that few views see keep
    their points). Default is 3.0."""

    min_parallax_deg: float = 2.0
    """Smallest angle between the two rays of a triangulated flow match (``triangulated_depths``); flatter ones
    carry little depth. Default is 2.0."""
    triangulation_spread: float = 3.0
    """A triangulated depth is used when it is within this many times the view's median relative difference
    between triangulated and depth-map depths (clamped to [0.01, 0.2]); others are flow errors. Default is 3.0."""
    median_window: int = 5
    """Side (odd, grid pixels) of the median filter on each view's triangulated depth map (``median_filtered``);
    1: none. room / room_natural at 1.2 deg (a scratch scoring of the refinement's own fusion inputs, oracle seed
    11; distance to the true surface median / p90 of the diagonal): none 0.00196 / 0.0093 and 0.00102 / 0.0038;
    5: 0.00076 / 0.0028 and 0.00058 / 0.0018; 7: 0.00071 / 0.0025 and 0.00058 / 0.0018. Default is 5."""
    median_band: float = 0.15
    """A pixel takes its window's median only when its depth is within this relative band of it (and the window's
    median relative deviation from it is below 0.1: one surface); farther ones are an edge or a thin structure
    (or an outlier, which the neighbours' check removes). Default is 0.15."""

    def __post_init__(self) -> None:
        if self.min_parallax_deg < 0 or self.triangulation_spread <= 0:
            raise ValueError("FusionOptions.min_parallax_deg must be >= 0 and triangulation_spread > 0")
        if self.median_window < 1 or self.median_window % 2 == 0 or self.median_band <= 0:
            raise ValueError("FusionOptions.median_window must be odd and >= 1, median_band > 0")
        if self.tolerance is not None and not 0 < self.tolerance < 1:
            raise ValueError(f"FusionOptions.tolerance must be in (0, 1), got {self.tolerance}")
        if self.occlusion_margin < 1:
            raise ValueError(f"FusionOptions.occlusion_margin must be >= 1, got {self.occlusion_margin}")
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
        x, y = (index % width).double() + 0.5, (index // width).double() + 0.5  # the pixel centres
        rays = _rays(self.intrinsics[view], x, y, self.pose[view])
        return rays * self.depths[view].reshape(-1)[index, None].double() + self.pose[view, :3, 3]

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
        disagree = torch.zeros_like(count)
        for other in neighbours[view]:
            difference, point, landed = views.look_up(other, own)
            agree = difference.abs() <= tolerance
            total += torch.where(agree[:, None], point, torch.zeros_like(point))
            count += agree.long()
            # the neighbour sees the pixel's surface and disagrees (it sees through the point, or a little in
            # front of it); far in front is another surface occluding it, which says nothing
            disagree += (landed & ~agree & (difference >= -options.occlusion_margin * tolerance)).long()
        # min_views confirmations where that many neighbours see the pixel, else all that see it, at least one
        keep = (count >= 1) & (count >= torch.clamp(count + disagree, max=options.min_views))
        mean = total[keep] / (1 + count[keep, None]).to(total.dtype)
        fused.append(FusedView(mean.float(), index[keep], count[keep]))
    return fused, tolerance


def triangulated_depths(
    priors: Sequence[torch.Tensor],  # V x [h, w] depth of each view's grid along its camera's z (NaN: none)
    targets: dict[tuple[int, int], np.ndarray],  # (a, b) -> [h, w, 2] network pixels in b of a's grid (NaN: none)
    grid_intrinsics: np.ndarray,  # [V, 4] (fx, fy, cx, cy) of the grids of ``priors``
    intrinsics: np.ndarray,  # [V, 4] network (fx, fy, cx, cy), for the targets
    cam_to_world: np.ndarray,  # [V, 4, 4]
    options: FusionOptions = FusionOptions(),
    device: torch.device | str = "cpu",
) -> tuple[list[torch.Tensor], float]:
    """Depth maps [h, w] (float32) where each pixel's flow targets that triangulate within the view's gate of
    the prior are averaged (weights sin^2 of the parallax), the prior elsewhere, then ``median_filtered``; and the
    share of the priors' finite pixels that got a triangulated depth."""
    by_view: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for (a, b), pixels in targets.items():
        by_view[a].append((b, pixels))
    pose = torch.as_tensor(np.asarray(cam_to_world), device=device, dtype=torch.float64)
    min_sine2 = float(np.sin(np.radians(options.min_parallax_deg)) ** 2)
    out, triangulated, finite = [], 0, 0
    for view, prior in enumerate(priors):
        prior = torch.as_tensor(prior, device=device, dtype=torch.float64).reshape(-1)
        finite += int(torch.isfinite(prior).sum())
        height, width = priors[view].shape
        if not by_view[view]:
            prior = prior.reshape(height, width)
            out.append(median_filtered(prior, options.median_window, options.median_band).float())
            continue
        index = torch.arange(height * width, device=device)
        own = _rays(grid_intrinsics[view], (index % width).double() + 0.5, (index // width).double() + 0.5, pose[view])
        estimates, weights = [], []
        for other, pixels in by_view[view]:
            pixels = torch.as_tensor(pixels, device=device, dtype=torch.float64).reshape(-1, 2)
            theirs = _rays(intrinsics[other], pixels[:, 0], pixels[:, 1], pose[other])
            depth, sine2 = _midpoint_depth(own, theirs, pose[view, :3, 3] - pose[other, :3, 3])
            estimates.append(depth)
            weights.append(torch.where(sine2 >= min_sine2, sine2, torch.zeros_like(sine2)))
        estimate, weight = torch.stack(estimates), torch.stack(weights)
        relative = ((estimate - prior) / prior).abs()
        usable = torch.isfinite(relative) & (weight > 0)
        if usable.any():
            spread = options.triangulation_spread * float(relative[usable].median())
            usable &= relative <= float(np.clip(spread, 0.01, 0.2))
        weight = torch.where(usable, weight, torch.zeros_like(weight))
        total = weight.sum(0)
        mean = (weight * torch.nan_to_num(estimate, nan=0.0, posinf=0.0, neginf=0.0)).sum(0) / total.clamp_min(1e-30)
        hit = (total > 0) & torch.isfinite(prior)
        triangulated += int(hit.sum())
        depth = torch.where(hit, mean, prior).reshape(height, width)
        out.append(median_filtered(depth, options.median_window, options.median_band).float())
    return out, triangulated / max(finite, 1)


def median_filtered(depth: torch.Tensor, window: int, band: float) -> torch.Tensor:
    """``depth`` [h, w] (NaN: none) with each finite pixel replaced by the median of its window's finite pixels
    where that window holds one surface (median relative deviation from its median below 0.1) and the pixel is
    within ``band`` of it."""
    if window <= 1:
        return depth
    height, width = depth.shape
    padded = torch.nn.functional.pad(depth[None, None], (window // 2,) * 4, value=float("nan"))
    windows = torch.nn.functional.unfold(padded, window).reshape(window * window, height, width)
    median = torch.nanmedian(windows, 0).values
    deviation = torch.nanmedian((windows / median - 1).abs(), 0).values
    use = torch.isfinite(depth) & torch.isfinite(median) & (deviation < 0.1) & ((depth / median - 1).abs() < band)
    return torch.where(use, median, depth)


def _rays(intrinsics, x: torch.Tensor, y: torch.Tensor, cam_to_world: torch.Tensor) -> torch.Tensor:
    """[N, 3] world directions (camera z = 1) through continuous pixels (x, y) of a camera."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return torch.stack([(x - cx) / fx, (y - cy) / fy, torch.ones_like(x)], dim=-1) @ cam_to_world[:3, :3].T


def _midpoint_depth(own: torch.Tensor, theirs: torch.Tensor, baseline: torch.Tensor):
    """Depth along ``own`` rays [N, 3] of the points closest to ``theirs`` (rays from a centre ``baseline``
    behind: c_own - c_theirs), and sin^2 of the angle between the rays."""
    aa, bb, cc = (own * own).sum(-1), (own * theirs).sum(-1), (theirs * theirs).sum(-1)
    dd, ee = own @ baseline, theirs @ baseline
    depth = (bb * ee - cc * dd) / (aa * cc - bb * bb)
    sine2 = 1.0 - bb * bb / (aa * cc)
    return torch.where(depth > 0, depth, torch.full_like(depth, float("nan"))), sine2


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
