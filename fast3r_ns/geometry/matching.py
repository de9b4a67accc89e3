"""Guided descriptor matching of two views' keypoints: the pointmaps say where to look, the descriptors decide.

Each keypoint of view A has a 3-D point (A's global pointmap, ``features.sample_points``); projected with view
B's current camera it predicts where the keypoint appears in B. Only B's keypoints within ``radius`` of the
prediction compete; the nearest descriptor wins when it passes Lowe's ratio test against the second nearest of
those candidates, and the same must hold from B to A (mutual check). The correspondences come from the images,
so a view whose pointmap is misplaced no longer drags its matches along. Pixels: continuous network pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .features import ViewFeatures
from .tracks import Tracks, candidate_pairs, tracks_from_matches


@dataclass
class MatchOptions:
    """Gates of the guided matching."""

    radius: float = 24.0
    """Search radius around the predicted position, network pixels. Default is 24.0."""
    ratio: float = 0.8
    """Lowe's ratio: best descriptor distance below this times the second best among the candidates. Default is
    0.8."""
    max_distance: float = 0.7
    """Largest descriptor distance of a match (unit descriptors, so in [0, 2]). Default is 0.7."""
    ratio_radius: float = 48.0
    """The second best descriptor for the ratio test comes from this wider radius (network pixels), so a lone
    lookalike near the prediction does not pass. Default is 48.0."""
    max_candidates: int = 64
    """Most keypoints considered per prediction (the nearest to it). Default is 64."""
    epipolar: float | None = None
    """When set, candidates must also lie within this many network pixels of the epipolar line of the current
    cameras (for re-matching once the cameras are refined). Default is None."""


def project(
    points: np.ndarray,  # [N, 3] world
    world_to_cam: np.ndarray,  # [4, 4]
    intrinsics: np.ndarray,  # [4] (fx, fy, cx, cy) network pixels
) -> np.ndarray:
    """[N, 2] network pixels of the points (NaN behind the camera or where the point is NaN)."""
    cam = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = cam[:, :2] / cam[:, 2:3] * intrinsics[:2] + intrinsics[2:]
    return np.where(cam[:, 2:3] > 0, xy, np.nan)


def _one_way(
    source: ViewFeatures,
    predicted: np.ndarray,  # [Ns, 2] source keypoints predicted in the target view
    target: ViewFeatures,
    target_tree: cKDTree,
    options: MatchOptions,
    allowed: np.ndarray | None,  # [Ns, Nt] bool or None (epipolar gate)
) -> tuple[np.ndarray, np.ndarray]:
    """Best target keypoint [Ns] (-1 where none passes) and its descriptor distance [Ns]."""
    count, k = len(source.pixels), min(options.max_candidates, len(target.pixels))
    best = np.full(count, -1, dtype=np.int64)
    best_distance = np.full(count, np.inf)
    finite = np.flatnonzero(np.isfinite(predicted).all(-1))
    if not len(finite) or k == 0:
        return best, best_distance
    wide = max(options.radius, options.ratio_radius)
    offset, index = target_tree.query(predicted[finite], k=k, distance_upper_bound=wide)
    offset, index = offset.reshape(len(finite), k), index.reshape(len(finite), k)  # missing: len(target.pixels)
    valid = index < len(target.pixels)
    safe = np.where(valid, index, 0)
    if allowed is not None:
        valid &= allowed[finite[:, None], safe]
    similarity = np.einsum("nd,nkd->nk", source.descriptors[finite], target.descriptors[safe])
    distance = np.where(valid, np.sqrt(np.clip(2.0 - 2.0 * similarity, 0.0, None)), np.inf)
    near = np.where(offset <= options.radius, distance, np.inf)
    choice = np.argmin(near, axis=1)
    first = near[np.arange(len(finite)), choice]
    others = distance.copy()
    others[np.arange(len(finite)), choice] = np.inf
    second = others.min(axis=1)
    good = (first <= options.max_distance) & (first < options.ratio * second)
    best[finite[good]] = safe[good, choice[good]]
    best_distance[finite[good]] = first[good]
    return best, best_distance


def epipolar_gate(
    first: ViewFeatures,
    second: ViewFeatures,
    fundamental: np.ndarray,  # [3, 3] x2^T F x1 = 0, network pixels
    tolerance: float,
) -> np.ndarray:
    """[N1, N2] bool: the symmetric point-to-epipolar-line distances are both within ``tolerance`` pixels."""
    x1 = np.concatenate([first.pixels, np.ones((len(first.pixels), 1))], axis=1)
    x2 = np.concatenate([second.pixels, np.ones((len(second.pixels), 1))], axis=1)
    lines2 = x1 @ fundamental.T  # [N1, 3] lines in view 2
    lines1 = x2 @ fundamental  # [N2, 3] lines in view 1
    algebraic = np.abs(lines2 @ x2.T)  # [N1, N2]
    norm2 = np.linalg.norm(lines2[:, :2], axis=1)[:, None]
    norm1 = np.linalg.norm(lines1[:, :2], axis=1)[None, :]
    return (algebraic <= tolerance * norm2) & (algebraic <= tolerance * norm1)


def fundamental_from_cameras(
    intrinsics: np.ndarray,  # [2, 4] network (fx, fy, cx, cy) of views 1 and 2
    world_to_cam: np.ndarray,  # [2, 4, 4]
) -> np.ndarray:
    """[3, 3] fundamental matrix of two calibrated views (x2^T F x1 = 0)."""
    relative = world_to_cam[1] @ np.linalg.inv(world_to_cam[0])
    rotation, (tx, ty, tz) = relative[:3, :3], relative[:3, 3]
    cross = np.array([[0, -tz, ty], [tz, 0, -tx], [-ty, tx, 0]])
    matrices = [np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]) for fx, fy, cx, cy in intrinsics]
    return np.linalg.inv(matrices[1]).T @ cross @ rotation @ np.linalg.inv(matrices[0])


def guided_matches(
    first: ViewFeatures,
    second: ViewFeatures,
    intrinsics: np.ndarray,  # [2, 4] network (fx, fy, cx, cy) of the two views
    world_to_cam: np.ndarray,  # [2, 4, 4] current cameras
    options: MatchOptions | None = None,
    trees: tuple[cKDTree, cKDTree] | None = None,  # kd-trees of first.pixels and second.pixels
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual guided matches: indices into first [M], into second [M] and the descriptor distance [M]."""
    options = options or MatchOptions()
    empty = np.zeros(0, dtype=np.int64)
    if not len(first.pixels) or not len(second.pixels):
        return empty, empty, np.zeros(0)
    first_tree, second_tree = trees or (cKDTree(first.pixels), cKDTree(second.pixels))
    allowed = None
    if options.epipolar is not None:
        allowed = epipolar_gate(first, second, fundamental_from_cameras(intrinsics, world_to_cam), options.epipolar)
    forward, distance = _one_way(
        first, project(first.points, world_to_cam[1], intrinsics[1]), second, second_tree, options, allowed
    )
    backward, _ = _one_way(
        second,
        project(second.points, world_to_cam[0], intrinsics[0]),
        first,
        first_tree,
        options,
        None if allowed is None else allowed.T,
    )
    a = np.flatnonzero(forward >= 0)
    a = a[backward[forward[a]] == a]
    return a, forward[a], distance[a]


def match_tracks(
    features: Sequence[ViewFeatures],
    intrinsics: np.ndarray,  # [V, 4] network (fx, fy, cx, cy)
    cam_to_world: np.ndarray,  # [V, 4, 4] current cameras
    neighbors: int = 10,
    options: MatchOptions | None = None,
    min_track_length: int = 2,
) -> Tracks:
    """Guided matches of every candidate pair (``tracks.candidate_pairs``) merged into tracks (closest
    descriptors first, ``tracks.tracks_from_matches``); observations are the keypoints themselves."""
    count = len(features)
    world_to_cam = np.linalg.inv(cam_to_world)
    trees = [cKDTree(f.pixels) if len(f.pixels) else None for f in features]
    offsets = np.concatenate([[0], np.cumsum([len(f.pixels) for f in features])])
    pairs = candidate_pairs(cam_to_world, features, neighbors)
    pair_matches = np.zeros(len(pairs), dtype=np.int64)
    rows, cols, distances = [], [], []
    for index, (i, j) in enumerate(pairs):
        if trees[i] is None or trees[j] is None:
            continue
        a, b, distance = guided_matches(
            features[i], features[j], intrinsics[[i, j]], world_to_cam[[i, j]], options, (trees[i], trees[j])
        )
        pair_matches[index] = len(a)
        rows.append(a + offsets[i])
        cols.append(b + offsets[j])
        distances.append(distance)
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    order = np.argsort(np.concatenate(distances) if distances else np.zeros(0), kind="stable")
    return tracks_from_matches(
        np.repeat(np.arange(count), np.diff(offsets)),
        np.concatenate([f.pixels for f in features]) if offsets[-1] else np.zeros((0, 2)),
        np.concatenate([f.points for f in features]) if offsets[-1] else np.zeros((0, 3)),
        np.concatenate([f.confidence for f in features]) if offsets[-1] else np.zeros(0),
        row[order],
        col[order],
        pairs,
        pair_matches,
        min_track_length,
    )
