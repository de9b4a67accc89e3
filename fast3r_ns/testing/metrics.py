"""Camera errors against ground truth, up to the global similarity that pointmaps leave free."""

from __future__ import annotations

import numpy as np


def rotation_angle_deg(rotation: np.ndarray) -> np.ndarray:
    """Angle [...] in degrees of rotation matrices [..., 3, 3], stable for tiny angles (chordal distance)."""
    chord = np.linalg.norm(rotation - np.eye(3), axis=(-2, -1)) / (2.0 * np.sqrt(2.0))
    return np.degrees(2.0 * np.arcsin(np.clip(chord, 0.0, 1.0)))


def align_cameras(
    estimate: np.ndarray,  # [V, 4, 4] camera-to-world
    truth: np.ndarray,  # [V, 4, 4] camera-to-world
    use: np.ndarray | None = None,  # [V] bool, views that define the alignment (default: all finite ones)
) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R [3, 3], t [3]) mapping the estimated world onto the true one.

    R is the rotation closest to sum_i R_true_i R_est_i^T (rotation averaging, well posed even for collinear
    camera centres); s and t are then the least-squares fit of the camera centres given R.
    """
    finite = np.isfinite(estimate).all(axis=(1, 2))
    use = finite if use is None else (use & finite)
    u, _, vt = np.linalg.svd(np.einsum("vij,vkj->ik", truth[use, :3, :3], estimate[use, :3, :3]))
    rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    est_centers = estimate[use, :3, 3] @ rotation.T
    true_centers = truth[use, :3, 3]
    est_mean, true_mean = est_centers.mean(0), true_centers.mean(0)
    spread = np.square(est_centers - est_mean).sum()
    scale = float(((true_centers - true_mean) * (est_centers - est_mean)).sum() / spread) if spread > 0 else 1.0
    return scale, rotation, true_mean - scale * est_mean


def camera_errors(
    estimate: np.ndarray,  # [V, 4, 4]
    truth: np.ndarray,  # [V, 4, 4]
    scene_size: float,
    use: np.ndarray | None = None,  # [V] bool, views that define the alignment
) -> dict[str, np.ndarray]:
    """Per-view rotation error (deg) and camera-centre error relative to ``scene_size`` after ``align_cameras``."""
    scale, rotation, translation = align_cameras(estimate, truth, use)
    rotations = np.einsum("ij,vjk->vik", rotation, estimate[:, :3, :3])
    centers = scale * estimate[:, :3, 3] @ rotation.T + translation
    return {
        "rotation_err_deg": rotation_angle_deg(np.einsum("vji,vjk->vik", rotations, truth[:, :3, :3])),
        "translation_err_rel": np.linalg.norm(centers - truth[:, :3, 3], axis=-1) / scene_size,
    }


def reconstruction_errors(reconstruction, scene) -> dict[str, float]:
    """Max, median and mean over views of a reconstruction's errors against a synthetic ``scene``: rotation (deg),
    camera centre (relative to the scene size) after ``align_cameras``, and focal (relative)."""
    errors = camera_errors(reconstruction.cam_to_world, scene.cam_to_world_in_view0(), scene.size)
    focal = np.array([camera.intrinsics[0] for camera in scene.cameras])
    errors["focal_err_rel"] = np.abs(reconstruction.intrinsics[:, 0] / focal - 1)
    summary = {}
    for name, values in errors.items():
        summary[name] = float(values.max())
        summary[f"{name}_median"] = float(np.median(values))
        summary[f"{name}_mean"] = float(values.mean())
    return summary
