"""Pieces of the iterated flow refinement (``refinement.refine_cameras``): flow predictions from the current
cameras, how far the cameras moved, and which views the data does not support.

Each flow round predicts where a pixel of view A lands in view B from A's LOCAL depth (the local head's pointmap,
in A's own camera frame, so it does not carry the global pointmap's per-view misplacement) back-projected with the
current (refined) camera of A, instead of A's global pointmap. Conventions: ``fast3r_ns.geometry.conventions``
(network pixels for the maps, camera-to-world poses).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def depth_pointmap(
    local: np.ndarray,  # [H, W, 3] local pointmap (camera frame of the view)
    world: np.ndarray,  # [H, W, 3] global pointmap, NaN where not confident
    intrinsics: np.ndarray,  # [4] network (fx, fy, cx, cy) of the view
    cam_to_world: np.ndarray,  # [4, 4] current camera of the view
    median_window: int = 1,
) -> np.ndarray:
    """[H, W, 3] float32 world points: each pixel centre back-projected at the local depth, scaled to the world by
    the median ratio of the global points' depth (in the current camera) to the local depth; NaN where ``world``
    is (the confidence mask) or the depth is not positive. ``median_window`` > 1: the confident local depth is
    first median-filtered (``geometry.fusion.median_filtered``, 15 % band)."""
    height, width = local.shape[:2]
    rotation, center = cam_to_world[:3, :3].astype(np.float32), cam_to_world[:3, 3].astype(np.float32)
    depth = local[..., 2].astype(np.float32)
    if median_window > 1:
        depth = _filtered(np.where(np.isfinite(world).all(-1) & (depth > 0), depth, np.nan), median_window)
    world_depth = ((world.reshape(-1, 3).astype(np.float32) - center) @ rotation[:, 2]).reshape(height, width)
    usable = np.isfinite(world_depth) & np.isfinite(depth) & (depth > 0) & (world_depth > 0)
    if not usable.any():
        return np.full((height, width, 3), np.nan, dtype=np.float32)
    scale = np.float32(np.median(world_depth[usable] / depth[usable]))
    fx, fy, cx, cy = (np.float32(v) for v in intrinsics)
    x = (np.arange(width, dtype=np.float32) + 0.5 - cx) / fx
    y = (np.arange(height, dtype=np.float32) + 0.5 - cy) / fy
    z = scale * depth
    keep = np.isfinite(world).all(-1) & (depth > 0)
    z = np.where(keep, z, np.float32(np.nan))
    camera = np.stack([z * x[None, :], z * y[:, None], z], axis=-1)  # NaN rows stay NaN through the pose
    return camera @ rotation.T + center


def _filtered(depth: np.ndarray, window: int) -> np.ndarray:
    import torch

    from .geometry.fusion import median_filtered

    return median_filtered(torch.from_numpy(depth), window, 0.15).numpy()


def rotation_changes(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """[V] degrees each camera turned between two camera sets [V, 4, 4], after removing the one rotation that best
    maps the whole set (the adjustment's gauge) so that a common turn does not count."""
    finite = np.isfinite(before).all(axis=(1, 2)) & np.isfinite(after).all(axis=(1, 2))
    if not finite.any():
        return np.full(len(before), np.nan)
    common = _common_rotation(before[finite], after[finite])
    relative = before[:, :3, :3].transpose(0, 2, 1) @ common.T @ after[:, :3, :3]  # common R_before ~ R_after
    cosine = np.clip((np.trace(relative, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    angles = np.degrees(np.arccos(cosine))
    return np.where(finite, angles, np.nan)


def carried_poses(
    reference: np.ndarray,  # [V, 4, 4] cameras of an earlier stage
    current: np.ndarray,  # [V, 4, 4] the same cameras now
    free: np.ndarray,  # [V] bool, views whose current pose the adjustment determined
) -> np.ndarray:
    """[V, 4, 4] ``reference`` cameras moved by the similarity that best takes the ``free`` views' reference poses
    onto their current ones (rotation from the orientations, then scale and shift from the centres): a held
    view keeps its pose relative to the others while their frame moves. ``reference`` where fewer than three
    views are free."""
    if free.sum() < 3:
        return reference.copy()
    rotation = _common_rotation(reference[free], current[free])
    before, after = reference[free, :3, 3] @ rotation.T, current[free, :3, 3]
    before_mean, after_mean = before.mean(0), after.mean(0)
    spread = float(((before - before_mean) ** 2).sum())
    scale = float(((before - before_mean) * (after - after_mean)).sum()) / spread if spread > 0 else 1.0
    out = reference.copy()
    out[:, :3, :3] = rotation @ reference[:, :3, :3]
    out[:, :3, 3] = scale * (reference[:, :3, 3] @ rotation.T - before_mean) + after_mean
    return out


def _common_rotation(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """[3, 3] the rotation C that best maps the orientations of camera set ``before`` onto ``after`` ([V, 4, 4]):
    C R_before ~ R_after in the least-squares (chordal) sense."""
    u, _, vt = np.linalg.svd(np.einsum("vij,vkj->ik", after[:, :3, :3], before[:, :3, :3]))
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


def focal_changes(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """[V] relative focal change |f_after / f_before - 1| of intrinsics [V, 4]."""
    return np.abs(after[:, 0] / before[:, 0] - 1.0)


@dataclass
class Support:
    """What the final adjustment rests on, per view."""

    observations: np.ndarray  # [V] kept observations in tracks of three or more views
    reprojection: np.ndarray  # [V] median reprojection error of the kept observations (original px; NaN: none)
    notes: list[str] = field(default_factory=list)  # [V] why a view is not trusted ("" when it is)


def view_support(
    view: np.ndarray,  # [O] int, kept observations
    track_length: np.ndarray,  # [O] length of each observation's track
    error: np.ndarray,  # [O] reprojection error after the adjustment
    count: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Kept observations in tracks of three or more views [V] and the median reprojection error per view [V]."""
    multi = track_length >= 3
    observations = np.bincount(view[multi], minlength=count)
    reprojection = np.full(count, np.nan)
    order = np.argsort(view, kind="stable")
    bounds = np.searchsorted(view[order], np.arange(count + 1))
    for index in range(count):
        rows = order[bounds[index] : bounds[index + 1]]
        if len(rows):
            reprojection[index] = float(np.median(error[rows]))
    return observations, reprojection


def unsupported_views(
    turned: np.ndarray,  # [V] degrees each camera turned from the prediction
    zoomed: np.ndarray,  # [V] relative focal change from the prediction
    observations: np.ndarray,  # [V] kept observations in tracks of three or more views
    reprojection: np.ndarray,  # [V] median reprojection error per view (NaN: none)
    min_observations: int,
    max_turn_deg: float,
    max_focal_change: float,
) -> dict[int, str]:
    """Views the adjustment moved far without support in the data -> why: a turn beyond ``max_turn_deg`` with few
    observations (below ``min_observations``) or inconsistent ones (median error beyond 5x the views' median), or
    a focal change beyond ``max_focal_change``."""
    consistent = _consistent(reprojection)
    out: dict[int, str] = {}
    for view in range(len(turned)):
        weak = observations[view] < min_observations
        inconsistent = not consistent[view]
        if turned[view] > max_turn_deg and (weak or inconsistent):
            why = f"{int(observations[view])} observations" if weak else f"reprojection {reprojection[view]:.2f} px"
            out[view] = f"refinement turned it {turned[view]:.1f} deg on {why}"
        elif zoomed[view] > max_focal_change:
            out[view] = f"refinement changed its focal by {zoomed[view]:.0%}"
    return out


def supported_views(
    observations: np.ndarray,  # [V] kept observations in tracks of three or more views
    reprojection: np.ndarray,  # [V] median reprojection error per view (NaN: none)
    min_observations: int,
) -> np.ndarray:
    """[V] bool: views whose adjusted camera rests on the data, at least ``min_observations`` observations and a
    median error within 5x the views' median (the opposite of ``unsupported_views``' weak or inconsistent)."""
    return (observations >= min_observations) & _consistent(reprojection)


def _consistent(reprojection: np.ndarray) -> np.ndarray:
    """[V] bool: median reprojection error within 5x the views' median (False where a view has none)."""
    typical = float(np.nanmedian(reprojection)) if np.isfinite(reprojection).any() else np.inf
    with np.errstate(invalid="ignore"):
        return reprojection <= 5.0 * typical
