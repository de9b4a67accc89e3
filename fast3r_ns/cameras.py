"""Cameras from pointmaps: per-view (or shared) focal from the local pointmaps and a robust local->global pose,
or the official Fast3R recovery (view 0's focal, PnP-RANSAC per view), for comparison.

Conventions (pixels, axes, poses, intrinsics of the original image): ``fast3r_ns.geometry.conventions``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .geometry.conventions import OFFICIAL_PIXEL_OFFSET, intrinsics_to_network, intrinsics_to_original
from .geometry.focal import estimate_focal, focal_official
from .geometry.points import confidence_mask
from .geometry.pose import pnp_official, refine_reprojection, solve_poses
from .io.images import PreparedImage
from .predictions import Output, first_item

if TYPE_CHECKING:
    from .options import CameraOptions, ReconstructOptions

Progress = Callable[[str], None]


@dataclass
class Cameras:
    """Per-view cameras of the original images (conventions), with the pose solver's scale and notes."""

    intrinsics: np.ndarray  # [V, 4] original-image (fx, fy, cx, cy)
    cam_to_world: np.ndarray  # [V, 4, 4]
    scale: np.ndarray  # [V] local -> world scale (NaN when unknown)
    notes: list[str]  # [V]


def recover_cameras(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    options: ReconstructOptions,
    device: torch.device,
    progress: Progress | None = None,
) -> Cameras:
    """Intrinsics of the original images and camera-to-world poses by ``options.cameras.focal_mode``; implausible
    focal lengths are clamped and noted (``check_focal``)."""
    camera_options, chunk_views = options.cameras, options.chunk_views
    if camera_options.focal_mode == "official":
        cameras = _cameras_official(images, predictions, camera_options, chunk_views, progress)
    elif camera_options.focal_mode in ("per-view", "shared"):
        cameras = _cameras_robust(images, predictions, camera_options, chunk_views, device, progress)
    else:
        raise ValueError(f"unknown focal_mode {camera_options.focal_mode!r}")
    check_focal(images, cameras, camera_options)
    return cameras


def network_intrinsics(images: Sequence[PreparedImage], intrinsics: np.ndarray) -> np.ndarray:
    """[V, 4] network-pixel (fx, fy, cx, cy) of original-image intrinsics [V, 4]."""
    return np.stack(
        [intrinsics_to_network(k, image.scale_to_original, image.crop_offset) for k, image in zip(intrinsics, images)]
    )


def original_center(image: PreparedImage) -> np.ndarray:
    return np.array(image.original_size, dtype=np.float64) / 2.0


def _cameras_robust(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    options: CameraOptions,
    chunk_views: int,
    device: torch.device,
    progress: Progress | None,
) -> Cameras:
    """Per-view (or shared) robust focal from the local pointmaps, pose by robust local->global similarity."""
    count = len(images)
    samples = [_solver_sample(image, prediction, options) for image, prediction in zip(images, predictions)]
    focal = np.empty(count)
    if options.focal_mode == "shared":
        per_view = max(64, min(options.solver_points, 2_000_000 // count))  # bounded pool for many views
        steps = [max(1, math.ceil(len(s["rays"]) / per_view)) for s in samples]
        rays, offsets, weights = _stack(
            [s["rays"][::step] for s, step in zip(samples, steps)],
            [s["offsets"][::step] for s, step in zip(samples, steps)],
            [s["focal_weights"][::step] for s, step in zip(samples, steps)],
            device,
        )
        focal[:] = float(estimate_focal(rays, offsets, weights, shared=True)[0])
    cam_to_world = np.empty((count, 4, 4))
    scale = np.empty(count)
    notes: list[str] = []
    for begin in range(0, count, chunk_views):
        chunk = samples[begin : begin + chunk_views]
        if options.focal_mode == "per-view":
            rays, offsets, weights = _stack(
                [s["rays"] for s in chunk], [s["offsets"] for s in chunk], [s["focal_weights"] for s in chunk], device
            )
            focal[begin : begin + len(chunk)] = estimate_focal(rays, offsets, weights).cpu().numpy()
        local, world, weights = _stack(
            [s["local"] for s in chunk], [s["world"] for s in chunk], [s["pose_weights"] for s in chunk], device
        )
        poses = solve_poses(
            local,
            world,
            weights,
            iterations=options.pose_iterations,
            min_points=options.min_pose_points,
            max_residual=options.max_residual,
            min_inlier_fraction=options.min_inlier_fraction,
        )
        if options.refine_poses:
            offsets, _, global_weights = _stack(
                [s["offsets"] for s in chunk],
                [s["offsets"] for s in chunk],
                [s["global_weights"] for s in chunk],
                device,
            )
            chunk_focal = torch.from_numpy(focal[begin : begin + len(chunk)]).to(device)
            refined = refine_reprojection(poses.cam_to_world, world, offsets, chunk_focal, global_weights)
            finite = torch.isfinite(refined).all(-1).all(-1)[:, None, None]
            poses.cam_to_world = torch.where(finite, refined, poses.cam_to_world)
        cam_to_world[begin : begin + len(chunk)] = poses.cam_to_world.cpu().numpy()
        scale[begin : begin + len(chunk)] = poses.scale.cpu().numpy()
        notes.extend(poses.notes)
        if progress:
            progress(f"cameras: {begin + len(chunk)}/{count} views")
    centers = np.stack([original_center(image) for image in images])
    intrinsics = np.stack([focal, focal, centers[:, 0], centers[:, 1]], axis=1)
    return Cameras(intrinsics, cam_to_world, scale, notes)


def _solver_sample(image: PreparedImage, prediction: Output, options: CameraOptions) -> dict[str, torch.Tensor]:
    """A regular grid subsample of one view's confident pixels, with what the focal and pose solvers need."""
    width, height = image.size
    stride = max(1, int(math.floor(math.sqrt(width * height / max(1, options.solver_points)))))
    rows = torch.arange(stride // 2, height, stride)
    cols = torch.arange(stride // 2, width, stride)
    local = first_item(prediction["pts3d_local"])[rows][:, cols].reshape(-1, 3).float().cpu()
    world = first_item(prediction["pts3d_in_other_view"])[rows][:, cols].reshape(-1, 3).float().cpu()
    conf = first_item(prediction["conf"])[rows][:, cols].reshape(-1).float().cpu()
    conf_local = first_item(prediction["conf_local"])[rows][:, cols].reshape(-1).float().cpu()
    keep = confidence_mask(conf[None], options.solver_conf_percentile, 1.0)[0]
    keep &= confidence_mask(conf_local[None], options.solver_conf_percentile, 1.0)[0]
    grid_y, grid_x = torch.meshgrid(rows.double() + 0.5, cols.double() + 0.5, indexing="ij")
    network_xy = torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)[keep]
    original_xy = torch.from_numpy(image.to_original(network_xy.numpy()))
    local, world, conf, conf_local = local[keep], world[keep], conf[keep], conf_local[keep]
    log_conf, log_conf_local = conf.log().clamp_min(0), conf_local.log().clamp_min(0)
    return {
        "rays": local[:, :2] / local[:, 2:3],
        "offsets": original_xy - torch.from_numpy(original_center(image)),
        "focal_weights": log_conf_local * (local[:, 2] > 0),
        "local": local,
        "world": world,
        "pose_weights": log_conf * log_conf_local,
        "global_weights": log_conf,
    }


def _stack(
    first: list[torch.Tensor], second: list[torch.Tensor], weights: list[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad per-view [N_v, D] arrays to [V, N, D] (zero weight on padding) on ``device``."""
    length = max(1, max(len(w) for w in weights))
    out_first = torch.zeros(len(first), length, first[0].shape[-1], dtype=first[0].dtype)
    out_second = torch.zeros(len(second), length, second[0].shape[-1], dtype=second[0].dtype)
    out_weights = torch.zeros(len(weights), length, dtype=torch.float32)
    for v, (a, b, w) in enumerate(zip(first, second, weights)):
        out_first[v, : len(a)], out_second[v, : len(b)], out_weights[v, : len(w)] = a, b, w
    return out_first.to(device), out_second.to(device), out_weights.to(device)


def _cameras_official(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    options: CameraOptions,
    chunk_views: int,
    progress: Progress | None,
) -> Cameras:
    """Official recovery: view 0's focal (network pixels of view 0) for every view, PnP-RANSAC per view."""

    def principal_point(image: PreparedImage) -> tuple[float, float] | None:
        """None (official (W/2, H/2)) or the original image centre in integer network-pixel coordinates."""
        if options.official_principal_point == "official":
            return None
        camera = np.array([1.0, 1.0, *original_center(image)])  # (fx, fy, cx, cy); the focal is unused here
        network = intrinsics_to_network(camera, image.scale_to_original, image.crop_offset)
        return (network[2] - OFFICIAL_PIXEL_OFFSET, network[3] - OFFICIAL_PIXEL_OFFSET)

    focal = focal_official(
        first_item(predictions[0]["pts3d_in_other_view"]).float().cpu(),
        first_item(predictions[0]["conf"]).float().cpu(),
        principal_point=principal_point(images[0]),
    )
    count = len(images)
    intrinsics = np.empty((count, 4))
    cam_to_world = np.empty((count, 4, 4))
    notes = []
    for view, (image, prediction) in enumerate(zip(images, predictions)):
        width, height = image.size
        center = principal_point(image) or (width / 2, height / 2)
        network = np.array([focal, focal, center[0] + OFFICIAL_PIXEL_OFFSET, center[1] + OFFICIAL_PIXEL_OFFSET])
        intrinsics[view] = intrinsics_to_original(network, image.scale_to_original, image.crop_offset)
        pose, _ = pnp_official(
            first_item(prediction["pts3d_in_other_view"]).float().cpu().numpy(),
            first_item(prediction["conf"]).float().cpu().numpy(),
            focal,
            iterations=options.pnp_iterations,
            principal_point=principal_point(image),
        )
        if pose is None:
            cam_to_world[view] = np.eye(4)
            notes.append("PnP failed; the pose is a placeholder (identity)")
        else:
            cam_to_world[view] = pose
            notes.append("")
        if progress and (view + 1) % chunk_views == 0:
            progress(f"cameras: {view + 1}/{count} views")
    return Cameras(intrinsics, cam_to_world, np.full(count, np.nan), notes)


def check_focal(images: Sequence[PreparedImage], cameras: Cameras, options: CameraOptions) -> None:
    """Mark views whose focal is non-finite or implausible and clamp it into ``focal_range`` (in place), so every
    written camera stays usable (a NaN becomes the official 60-degree fallback)."""
    low, high = options.focal_range
    for view, image in enumerate(images):
        long_side = max(image.original_size)
        focal = cameras.intrinsics[view, 0] / long_side
        if not np.isfinite(focal) or not low <= focal <= high:
            clamped = float(np.clip(focal, low, high)) if np.isfinite(focal) else 0.5 / np.tan(np.radians(30))
            note = f"implausible focal ({cameras.intrinsics[view, 0]:.4g} px, written as {clamped * long_side:.4g})"
            cameras.notes[view] = f"{cameras.notes[view]}; {note}" if cameras.notes[view] else note
            cameras.intrinsics[view, :2] = clamped * long_side
