"""Camera poses from pointmaps: a batched robust local->global similarity (default) and the official PnP.

Poses are camera-to-world in OpenCV axes (``conventions``). The local pointmap of a view is that view's camera
frame up to scale, the global pointmap the same pixels in the world frame, so the similarity local -> global *is*
the camera pose (rotation, centre = translation) plus the local-to-global scale: no intrinsics and no RANSAC are
needed, and all views are solved at once as a batch (GPU when available).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..imports import require
from .robust import cauchy_reweight, cauchy_similarity, masked_median, robust_sigma


@dataclass
class PoseResult:
    """Per-view output of ``solve_poses`` (V views)."""

    cam_to_world: torch.Tensor  # [V, 4, 4] float64
    scale: torch.Tensor  # [V] local -> world scale
    residual: torch.Tensor  # [V] median |s R x + t - y| / |s x| (relative to the distance from the camera)
    inlier_fraction: torch.Tensor  # [V] weighted fraction of points within 3 robust sigmas
    num_points: torch.Tensor  # [V] usable points
    ok: torch.Tensor  # [V] bool
    notes: list[str] = field(default_factory=list)  # [V] why a pose is not trusted ("" when ok)


def solve_poses(
    local: torch.Tensor,  # [V, N, 3] points in each view's own camera frame (any per-view scale)
    world: torch.Tensor,  # [V, N, 3] the same pixels in the world frame
    weights: torch.Tensor,  # [V, N] >= 0, zero for padding / unusable points
    iterations: int = 6,
    min_points: int = 32,
    max_residual: float = 0.15,
    min_inlier_fraction: float = 0.5,
) -> PoseResult:
    """Robust weighted similarity fit world ~ s R local + t per view, batched.

    Weights are scaled by 1/|x|^2 (pointmap errors grow with distance) and, after a first fit, by Cauchy weights
    of the relative residual with a scale of 1.4826 * median (iteratively reweighted least squares), so gross
    outliers and disagreeing regions stop pulling on the pose. A view is not trusted (``ok`` False, reason in
    ``notes``) with fewer than ``min_points`` usable points, degenerate (collinear) points, a median relative
    residual above ``max_residual``, fewer than ``min_inlier_fraction`` inliers, or a non-finite fit.
    """
    local, world, weights = local.double(), world.double(), weights.double()
    distance = local.norm(dim=-1)  # [V, N]
    usable = (
        (weights > 0)
        & torch.isfinite(local).all(-1)
        & torch.isfinite(world).all(-1)
        & (local[..., 2] > 0)
        & (distance > 0)
    )
    local = torch.where(usable[..., None], local, torch.zeros_like(local))
    world = torch.where(usable[..., None], world, torch.zeros_like(world))
    distance = torch.where(usable, distance, torch.ones_like(distance))
    typical = masked_median(distance, usable)  # [V]
    base = torch.where(usable, weights * (typical[:, None] / distance).square(), torch.zeros_like(weights))
    # residuals relative to each point's distance from the camera (in world units: times the fitted scale)
    fit = cauchy_similarity(local, world, base, usable, distance, iterations, noise_scales=True)
    scale, rotation, translation, inlier_fraction = fit.scale, fit.rotation, fit.translation, fit.inlier_fraction
    num_points = usable.sum(-1)
    median_relative = masked_median(fit.relative, usable)
    spread = _spread(local, base)  # [V] second / first singular value of the point covariance

    cam_to_world = torch.eye(4, dtype=torch.float64, device=local.device).repeat(local.shape[0], 1, 1)
    cam_to_world[:, :3, :3] = rotation
    cam_to_world[:, :3, 3] = translation
    notes = []
    for v in range(local.shape[0]):
        if int(num_points[v]) < min_points:
            notes.append(f"only {int(num_points[v])} usable points (< {min_points})")
        elif not (bool(torch.isfinite(cam_to_world[v]).all()) and float(scale[v]) > 0):
            notes.append("similarity fit failed (non-finite or non-positive scale)")
        elif float(spread[v]) < 1e-3:
            notes.append("degenerate points (nearly collinear)")
        elif float(median_relative[v]) > max_residual:
            notes.append(
                f"local and global pointmaps disagree (median residual {float(median_relative[v]):.1%} of depth)"
            )
        elif float(inlier_fraction[v]) < min_inlier_fraction:
            notes.append(f"only {float(inlier_fraction[v]):.0%} inliers")
        else:
            notes.append("")
    ok = torch.tensor([n == "" for n in notes], device=local.device)
    return PoseResult(cam_to_world, scale, median_relative, inlier_fraction, num_points, ok, notes)


def refine_reprojection(
    cam_to_world: torch.Tensor,  # [V, 4, 4] initial poses
    world: torch.Tensor,  # [V, N, 3] global points
    offsets: torch.Tensor,  # [V, N, 2] their pixels minus the principal point
    focal: torch.Tensor,  # [V] in the unit of ``offsets`` (square pixels)
    weights: torch.Tensor,  # [V, N] >= 0
    iterations: int = 5,
) -> torch.Tensor:
    """Batched robust Gauss-Newton on the reprojection error of the global points (a PnP refinement).

    Each step linearises the camera-frame points P = R X + t under P -> P + w x P + d, solves the 6x6 normal
    equations per view with Cauchy weights of the pixel residual (scale 1.4826 * median), and updates
    R <- exp(w) R, t <- exp(w) t + d. Returns refined camera-to-world poses [V, 4, 4] (float64).
    """
    world, offsets, weights = world.double(), offsets.double(), weights.double()
    focal = focal.double()[:, None]  # [V, 1]
    world_to_cam = torch.linalg.inv(cam_to_world.double())
    rotation, translation = world_to_cam[:, :3, :3], world_to_cam[:, :3, 3]
    usable = (weights > 0) & torch.isfinite(world).all(-1) & torch.isfinite(offsets).all(-1)
    world = torch.where(usable[..., None], world, torch.zeros_like(world))
    offsets = torch.where(usable[..., None], offsets, torch.zeros_like(offsets))
    eye = torch.eye(6, dtype=torch.float64, device=world.device)
    for _ in range(iterations):
        points = world @ rotation.transpose(1, 2) + translation[:, None]  # [V, N, 3]
        x, y, z = points.unbind(-1)
        front = usable & (z > 1e-9)
        z = torch.where(front, z, torch.ones_like(z))
        residual = torch.stack([focal * x / z, focal * y / z], -1) - offsets  # [V, N, 2]
        error = residual.norm(dim=-1)
        sigma = robust_sigma(error, front, 1e-9)
        w = torch.where(front, cauchy_reweight(weights, error, sigma[:, None]), 0.0)
        zero = torch.zeros_like(z)
        d_proj = torch.stack(  # [V, N, 2, 3] d(pixel)/dP
            [
                torch.stack([focal / z, zero, -focal * x / z**2], -1),
                torch.stack([zero, focal / z, -focal * y / z**2], -1),
            ],
            -2,
        )
        skew = torch.stack(  # [V, N, 3, 3] -[P]x, the derivative of w x P with respect to w
            [
                torch.stack([zero, z, -y], -1),
                torch.stack([-z, zero, x], -1),
                torch.stack([y, -x, zero], -1),
            ],
            -2,
        )
        jacobian = torch.cat([d_proj @ skew, d_proj], -1)  # [V, N, 2, 6]
        hessian = torch.einsum("vn,vnki,vnkj->vij", w, jacobian, jacobian) + 1e-9 * eye
        gradient = torch.einsum("vn,vnki,vnk->vi", w, jacobian, residual)
        step = -torch.linalg.solve(hessian, gradient[..., None])[..., 0]  # [V, 6]
        step = torch.nan_to_num(step)
        update = _so3_exp(step[:, :3])
        rotation = update @ rotation
        translation = (update @ translation[..., None])[..., 0] + step[:, 3:]
    refined = torch.eye(4, dtype=torch.float64, device=world.device).repeat(len(world), 1, 1)
    refined[:, :3, :3] = rotation.transpose(1, 2)
    refined[:, :3, 3] = -(rotation.transpose(1, 2) @ translation[..., None])[..., 0]
    return refined


def _so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [V, 3, 3] of axis-angle vectors [V, 3] (Rodrigues)."""
    angle = omega.norm(dim=-1, keepdim=True)[..., None]  # [V, 1, 1]
    zero = torch.zeros_like(omega[:, 0])
    wx, wy, wz = omega.unbind(-1)
    skew = torch.stack(
        [torch.stack([zero, -wz, wy], -1), torch.stack([wz, zero, -wx], -1), torch.stack([-wy, wx, zero], -1)], -2
    )
    small = angle < 1e-8
    safe = torch.where(small, torch.ones_like(angle), angle)
    a = torch.where(small, 1.0 - angle**2 / 6.0, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - angle**2 / 24.0, (1.0 - torch.cos(safe)) / safe**2)
    return torch.eye(3, dtype=omega.dtype, device=omega.device) + a * skew + b * (skew @ skew)


def _spread(points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[V] ratio of the second to the first singular value of the weighted covariance of points [V, N, 3]."""
    norm_w = weights / weights.sum(-1, keepdim=True).clamp_min(1e-30)
    mean = (norm_w[..., None] * points).sum(-2, keepdim=True)
    centered = points - mean
    covariance = torch.einsum("vn,vni,vnj->vij", norm_w, centered, centered)
    singular = torch.linalg.svdvals(torch.nan_to_num(covariance))
    return singular[:, 1] / singular[:, 0].clamp_min(1e-30)


def pnp_official(
    world: np.ndarray,  # [H, W, 3] global points of one view
    conf: np.ndarray,  # [H, W]
    focal: float,  # network pixels
    iterations: int = 100,
    reprojection_error: float = 5.0,
    principal_point: tuple[float, float] | None = None,
) -> tuple[np.ndarray | None, int]:
    """Official-compatible PnP (spec section 7C): OpenCV SQPnP in RANSAC on the pixels with conf > 1.

    Uses the official INTEGER pixel grid and principal point (W/2, H/2). Returns (cam_to_world [4, 4] float64, or
    None when PnP fails, number of inliers). Needs OpenCV (imported here only). principal_point: (x, y) in
    integer-pixel coordinates instead of (W/2, H/2) (not official, for comparisons).
    """
    cv2 = require("cv2", extra="refine", feature="--focal-mode official (OpenCV's PnP)")

    height, width = conf.shape
    mask = conf > 1.0
    if mask.sum() < 4 or not np.isfinite(focal) or focal <= 0:
        return None, 0
    rows, cols = np.mgrid[:height, :width]
    pixels = np.stack([cols, rows], axis=-1).astype(np.float32)[mask]
    points = np.asarray(world, dtype=np.float32)[mask]
    center_x, center_y = (width / 2, height / 2) if principal_point is None else principal_point
    camera = np.array([[focal, 0, center_x], [0, focal, center_y], [0, 0, 1]], dtype=np.float32)
    try:
        success, rvec, tvec, inliers = cv2.solvePnPRansac(
            points,
            pixels,
            camera,
            None,
            iterationsCount=iterations,
            reprojectionError=reprojection_error,
            flags=cv2.SOLVEPNP_SQPNP,
        )
    except cv2.error:
        return None, 0
    if not success:
        return None, 0
    world_to_cam = np.eye(4)
    world_to_cam[:3, :3] = cv2.Rodrigues(rvec)[0]
    world_to_cam[:3, 3] = tvec[:, 0]
    return np.linalg.inv(world_to_cam), 0 if inliers is None else len(inliers)
