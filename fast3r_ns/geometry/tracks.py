"""Multi-view tracks from pointmaps: pixels of different views whose global 3-D points coincide.

Each view is subsampled on a regular grid of confident pixels; candidate view pairs are the k nearest views in
(camera centre, centre of the viewed points); each pair is matched by mutual nearest neighbours in 3-D (gated by the
local sample spacing, at most ``max_pair_matches``); the matches are merged into tracks by a greedy union-find
(closest matches first) that never lets a track hold two pixels of one view. Each observation is then moved to the
sub-pixel location where its view's pointmap (a local affine fit) comes closest to the track's 3-D point.
Memory is O(views x samples per view). Pixels are continuous NETWORK-image coordinates
(``fast3r_ns.geometry.conventions``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..imports import require
from .points import confidence_mask

if TYPE_CHECKING:
    from scipy.spatial import cKDTree


@dataclass
class ViewSamples:
    """Grid samples of one view: network pixel centres, global points and confidences of the confident ones."""

    pixels: np.ndarray  # [N, 2] float64, continuous network-image (x, y)
    points: np.ndarray  # [N, 3] float64, global pointmap at those pixels
    confidence: np.ndarray  # [N] float64
    stride: int  # grid step in network pixels


@dataclass
class Tracks:
    """Observations sorted by track; track t owns rows ``offsets[t]:offsets[t + 1]``."""

    points: np.ndarray  # [T, 3] float64, confidence-weighted mean of the members' global points
    offsets: np.ndarray  # [T + 1] int64
    view: np.ndarray  # [O] int64, view of each observation
    pixel: np.ndarray  # [O, 2] float64, continuous network-image coordinates
    source_point: np.ndarray  # [O, 3] float64, the view's own global point at the observation (before sub-pixel)
    confidence: np.ndarray  # [O] float64, the view's global confidence there
    pairs: np.ndarray  # [P, 2] int64, candidate view pairs that were matched
    pair_matches: np.ndarray  # [P] int64, mutual matches kept per pair

    @property
    def num_tracks(self) -> int:
        return len(self.points)

    @property
    def track(self) -> np.ndarray:
        """[O] int64, track of each observation."""
        return np.repeat(np.arange(self.num_tracks), np.diff(self.offsets))

    def select(self, keep: np.ndarray, min_length: int = 2) -> Tracks:
        """The observations where ``keep`` [O] is True; tracks left with fewer than ``min_length`` disappear."""
        track = self.track
        length = np.bincount(track[keep], minlength=self.num_tracks)
        keep = keep & (length >= min_length)[track]
        kept_tracks = np.flatnonzero(length >= min_length)
        return Tracks(
            points=self.points[kept_tracks],
            offsets=np.concatenate([[0], np.cumsum(length[kept_tracks])]).astype(np.int64),
            view=self.view[keep],
            pixel=self.pixel[keep],
            source_point=self.source_point[keep],
            confidence=self.confidence[keep],
            pairs=self.pairs,
            pair_matches=self.pair_matches,
        )


def sample_view(
    points: torch.Tensor,  # [H, W, 3] global pointmap
    confidence: torch.Tensor,  # [H, W]
    num_samples: int,
    conf_percentile: float = 10.0,
    min_confidence: float = 1.5,
) -> ViewSamples:
    """Regular grid subsample (about ``num_samples`` cells) of the confident, finite pixels of one view."""
    height, width = confidence.shape
    stride = max(1, int(math.floor(math.sqrt(height * width / max(1, num_samples)))))
    rows = torch.arange(stride // 2, height, stride)
    cols = torch.arange(stride // 2, width, stride)
    grid_points = points[rows][:, cols].reshape(-1, 3).double().cpu()
    grid_conf = confidence[rows][:, cols].reshape(-1).double().cpu()
    keep = confidence_mask(grid_conf[None], conf_percentile, min_confidence)[0] & torch.isfinite(grid_points).all(-1)
    ys, xs = torch.meshgrid(rows.double() + 0.5, cols.double() + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys], dim=-1).reshape(-1, 2)[keep]
    return ViewSamples(pixels.numpy(), grid_points[keep].numpy(), grid_conf[keep].numpy(), stride)


def candidate_pairs(
    cam_to_world: np.ndarray,  # [V, 4, 4]
    samples: Sequence[ViewSamples],  # or anything with .points [N, 3] (NaN rows ignored)
    neighbors: int,
) -> np.ndarray:
    """[P, 2] view pairs (i < j): each view with its ``neighbors`` nearest views in (camera centre, median point)."""
    count = len(samples)
    if count < 2:
        return np.zeros((0, 2), dtype=np.int64)
    centers = cam_to_world[:, :3, 3]
    finite = [s.points[np.isfinite(s.points).all(-1)] for s in samples]
    looks = np.stack([np.median(f, axis=0) if len(f) else c for f, c in zip(finite, centers)])
    features = np.concatenate([centers, looks], axis=1)
    features = np.where(np.isfinite(features), features, 0.0)
    k = min(neighbors + 1, count)
    _, index = _kd_tree(features).query(features, k=k)
    first = np.repeat(np.arange(count), k)
    second = index.reshape(-1)
    pairs = np.stack([np.minimum(first, second), np.maximum(first, second)], axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0)


def _kd_tree(points: np.ndarray) -> cKDTree:
    return require("scipy.spatial", extra="refine", feature="--refine (multi-view tracks)").cKDTree(points)


def mutual_matches(
    first: ViewSamples,
    second: ViewSamples,
    first_tree: cKDTree,
    second_tree: cKDTree,
    radius: float,
    max_matches: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (a [M], b [M]) of mutual nearest neighbours closer than ``radius``, the closest ``max_matches``."""
    if not len(first.points) or not len(second.points):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    distance, forward = second_tree.query(first.points, k=1, distance_upper_bound=radius)
    found = np.flatnonzero(np.isfinite(distance))
    if not len(found):
        return found, found
    _, backward = first_tree.query(second.points[forward[found]], k=1, distance_upper_bound=radius)
    mutual = found[backward == found]
    order = np.argsort(distance[mutual], kind="stable")[:max_matches]
    a = mutual[order]
    return a, forward[a]


def build_tracks(
    samples: Sequence[ViewSamples],
    cam_to_world: np.ndarray,  # [V, 4, 4], to choose candidate pairs
    neighbors: int = 10,
    max_pair_matches: int = 256,
    match_radius: float = 1.0,
    min_track_length: int = 2,
) -> Tracks:
    """Tracks from mutual 3-D nearest neighbours of candidate view pairs, merged by ``merge_consistent``.

    match_radius: the 3-D gate as a multiple of the larger of the two views' median sample spacing.
    """
    count = len(samples)
    trees = [_kd_tree(s.points) if len(s.points) else None for s in samples]
    spacing = np.zeros(count)
    for view, (sample, tree) in enumerate(zip(samples, trees)):
        if tree is not None and len(sample.points) > 1:
            distance, _ = tree.query(sample.points, k=2)
            spacing[view] = float(np.median(distance[:, 1]))
    offsets = np.concatenate([[0], np.cumsum([len(s.points) for s in samples])])
    pairs = candidate_pairs(cam_to_world, samples, neighbors)
    pair_matches = np.zeros(len(pairs), dtype=np.int64)
    rows, cols, distances = [], [], []
    for index, (i, j) in enumerate(pairs):
        if trees[i] is None or trees[j] is None:
            continue
        radius = match_radius * max(spacing[i], spacing[j])
        a, b = mutual_matches(samples[i], samples[j], trees[i], trees[j], radius, max_pair_matches)
        pair_matches[index] = len(a)
        rows.append(a + offsets[i])
        cols.append(b + offsets[j])
        distances.append(np.linalg.norm(samples[i].points[a] - samples[j].points[b], axis=-1))
    total = int(offsets[-1])
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    order = np.argsort(np.concatenate(distances) if distances else np.zeros(0), kind="stable")
    return tracks_from_matches(
        np.repeat(np.arange(count), np.diff(offsets)),
        np.concatenate([s.pixels for s in samples]) if total else np.zeros((0, 2)),
        np.concatenate([s.points for s in samples]) if total else np.zeros((0, 3)),
        np.concatenate([s.confidence for s in samples]) if total else np.zeros(0),
        row[order],
        col[order],
        pairs,
        pair_matches,
        min_track_length,
    )


def tracks_from_matches(
    node_view: np.ndarray,  # [N] int, view of each node (a sample or a flow observation)
    node_pixel: np.ndarray,  # [N, 2] network pixels
    node_point: np.ndarray,  # [N, 3] global pointmap at the node (NaN: not usable)
    node_confidence: np.ndarray,  # [N]
    first: np.ndarray,  # [M] node index, matches sorted best first
    second: np.ndarray,  # [M] node index
    pairs: np.ndarray,  # [P, 2] the view pairs that were matched
    pair_matches: np.ndarray,  # [P] matches per pair
    min_track_length: int = 2,
) -> Tracks:
    """Tracks by ``merge_consistent``; each starts at the confidence-weighted mean of its members' usable points
    (NaN when none is usable)."""
    label = merge_consistent(first, second, node_view)
    matched = np.flatnonzero(label >= 0)
    size = np.bincount(label[matched])
    nodes = matched[size[label[matched]] >= max(2, min_track_length)]
    nodes = nodes[np.argsort(label[nodes], kind="stable")]
    _, new_label = np.unique(label[nodes], return_inverse=True)
    track_offsets = np.concatenate([[0], np.cumsum(np.bincount(new_label))]).astype(np.int64)
    usable = np.isfinite(node_point[nodes]).all(-1)
    weights = np.where(usable, np.log(np.maximum(node_confidence[nodes], 1.0 + 1e-6)), 0.0)
    sums = np.zeros((len(track_offsets) - 1, 3))
    np.add.at(sums, new_label, weights[:, None] * np.where(usable[:, None], node_point[nodes], 0.0))
    totals = np.bincount(new_label, weights=weights, minlength=len(sums))
    with np.errstate(divide="ignore", invalid="ignore"):
        points = sums / totals[:, None]
    return Tracks(
        points=np.where(totals[:, None] > 0, points, np.nan),
        offsets=track_offsets,
        view=node_view[nodes].astype(np.int64),
        pixel=node_pixel[nodes],
        source_point=node_point[nodes],
        confidence=node_confidence[nodes],
        pairs=pairs,
        pair_matches=pair_matches,
    )


def merge_consistent(first: np.ndarray, second: np.ndarray, node_view: np.ndarray) -> np.ndarray:
    """Greedy union-find over matches (best first): two tracks merge only when they share no view, so a track
    never holds two pixels of one image. Returns [N] track label per node (its root), -1 for nodes in no match."""
    parent = list(range(len(node_view)))
    views = [1 << view for view in node_view.tolist()]  # the views of each root's track, as a bit set

    def find(node: int) -> int:
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:
            parent[node], node = root, parent[node]
        return root

    for a, b in zip(first.tolist(), second.tolist()):
        root_a, root_b = find(a), find(b)
        if root_a == root_b or views[root_a] & views[root_b]:
            continue
        if views[root_a].bit_count() < views[root_b].bit_count():
            root_a, root_b = root_b, root_a
        parent[root_b] = root_a
        views[root_a] |= views[root_b]
    label = np.asarray(parent, dtype=np.int64)
    while True:  # every node to its root
        up = label[label]
        if np.array_equal(up, label):
            break
        label = up
    matched = np.zeros(len(node_view), dtype=bool)
    matched[first] = matched[second] = True
    return np.where(matched, label, -1)


def subpixel_observations(
    tracks: Tracks,
    pointmaps: Sequence[torch.Tensor],  # per view [H, W, 3] global pointmap
    window: int = 4,
    max_shift: float | None = None,
) -> np.ndarray:
    """[O, 2] observation pixels moved to where their view's pointmap comes closest to the track's 3-D point.

    Around each observation the pointmap is fitted by an affine function of the pixel offset over a
    (2 window + 1)^2 window (the least-squares fit of a symmetric window is a box mean and two ramp filters);
    the shift solves that model for the track point. Shifts beyond ``max_shift`` (default: the window) or from
    degenerate fits are NaN: the caller drops those observations.
    """
    limit = float(window if max_shift is None else max_shift)
    out = np.full_like(tracks.pixel, np.nan)
    target = tracks.points[tracks.track]
    order = np.argsort(tracks.view, kind="stable")
    bounds = np.searchsorted(tracks.view[order], np.arange(len(pointmaps) + 1))
    for view, pointmap in enumerate(pointmaps):
        rows = order[bounds[view] : bounds[view + 1]]
        if not len(rows):
            continue
        mean, jacobian, centre = local_affine(pointmap, tracks.pixel[rows], window)
        normal = np.einsum("nki,nkj->nij", jacobian, jacobian)
        rhs = np.einsum("nki,nk->ni", jacobian, target[rows] - mean)
        det = normal[:, 0, 0] * normal[:, 1, 1] - normal[:, 0, 1] ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = (
                np.stack(
                    [
                        normal[:, 1, 1] * rhs[:, 0] - normal[:, 0, 1] * rhs[:, 1],
                        normal[:, 0, 0] * rhs[:, 1] - normal[:, 0, 1] * rhs[:, 0],
                    ],
                    axis=-1,
                )
                / det[:, None]
            )
        moved = centre + shift
        bad = ~np.isfinite(moved).all(-1) | (np.abs(moved - tracks.pixel[rows]).max(-1) > limit)
        moved[bad] = np.nan
        out[rows] = moved
    return out


def local_affine(
    pointmap: torch.Tensor,  # [H, W, 3]
    pixel: np.ndarray,  # [n, 2] continuous network pixels
    window: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine fit X(centre + d) ~ mean + jacobian d of a pointmap over the (2 window + 1)^2 pixels around each
    pixel's cell (moved inside the image). Returns mean [n, 3], jacobian [n, 3, 2] (per network pixel) and the
    window centre [n, 2] (least squares over the whole window; NaN where a pixel of it is not finite)."""
    grid = pointmap.cpu()  # gathered first, converted to float64 per patch (the whole map is far larger)
    height, width = grid.shape[:2]
    offsets = torch.arange(-window, window + 1, dtype=torch.float64)
    col = np.clip(np.floor(pixel[:, 0]).astype(np.int64), window, width - 1 - window)
    row = np.clip(np.floor(pixel[:, 1]).astype(np.int64), window, height - 1 - window)
    index_y = torch.from_numpy(row)[:, None, None] + offsets.long()[None, :, None]
    index_x = torch.from_numpy(col)[:, None, None] + offsets.long()[None, None, :]
    patch = grid[index_y, index_x].reshape(len(pixel), -1, 3).double()  # [n, K*K, 3]
    ys, xs = torch.meshgrid(offsets, offsets, indexing="ij")
    design = torch.stack([torch.ones_like(xs), xs, ys], dim=-1).reshape(-1, 3)  # [K*K, 3]
    finite = torch.isfinite(patch).all(-1)
    weighted = design[None] * finite.double()[..., None]  # [n, K*K, 3]
    patch = torch.where(finite[..., None], patch, 0.0)
    normal = weighted.transpose(1, 2) @ design[None]
    coef = torch.linalg.solve_ex(normal, weighted.transpose(1, 2) @ patch)[0]  # [n, 3, 3]
    coef[~finite.all(-1)] = float("nan")  # the fit needs the whole window
    centre = np.stack([col + 0.5, row + 0.5], axis=-1)
    return coef[:, 0].numpy(), coef[:, 1:].transpose(1, 2).numpy(), centre
