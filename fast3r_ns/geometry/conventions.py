"""Coordinate conventions of fast3r_ns, written once here; every other module refers to this one.

Camera axes (OpenCV): +x right, +y down, +z forward; a point is in front of a camera when its z > 0.

Poses are ``cam_to_world`` 4x4 matrices: ``X_world = cam_to_world @ X_cam``. The world frame is the camera frame
of view 0, in the (arbitrary) scale of the network's global pointmap.

Pixel coordinates are CONTINUOUS with (0, 0) at the top-left CORNER of the image (the COLMAP and nerfstudio
convention): the pixel with column index u and row index v covers [u, u+1) x [v, v+1) and its centre is at
(u + 0.5, v + 0.5). A camera-frame point (x, y, z) projects to (fx * x / z + cx, fy * y / z + cy).

The official Fast3R recovery uses INTEGER pixel coordinates (pixel (u, v) at (u, v)) with principal point
(W/2, H/2); in continuous coordinates that is a principal point of (W/2 + 0.5, H/2 + 0.5)
(``OFFICIAL_PIXEL_OFFSET``).

Intrinsics of a ``Reconstruction`` are (fx, fy, cx, cy) of the ORIGINAL image. Network image coordinates map to
the original by ``x_orig = (x_net + left) * sx`` with ``(left, top)`` the crop offset in the resized image and
``sx, sy`` = original size / resized size (see ``fast3r_ns.io.PreparedImage.to_original``), hence
``fx_orig = fx * sx`` and ``cx_orig = (cx + left) * sx`` (same for y).

nerfstudio (OpenGL camera axes: +x right, +y up, +z backward) is reached with ``opencv_to_opengl``; nerfstudio's
COLMAP importer additionally maps the world by (x, y, z) -> (x, z, -y), recorded as ``applied_transform``.
"""

from __future__ import annotations

import numpy as np

OFFICIAL_PIXEL_OFFSET = 0.5
"""Add to the official integer pixel coordinates (and principal point) to get continuous coordinates."""

APPLIED_TRANSFORM = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
"""[3, 4] nerfstudio's world transform of COLMAP data, (x, y, z) -> (x, z, -y), as written to transforms.json."""

NERFSTUDIO_APPLIED_TRANSFORM = np.concatenate([APPLIED_TRANSFORM, [[0.0, 0.0, 0.0, 1.0]]], axis=0)
"""[4, 4] homogeneous form of ``APPLIED_TRANSFORM``."""


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world [..., 4, 4] (or [..., 3, 4]) with OpenCV camera axes -> OpenGL/nerfstudio camera axes.

    Flips the camera y and z axes (negates columns 1 and 2 of the rotation); the camera centre is unchanged.
    The map is its own inverse.
    """
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[..., :3, 1:3] *= -1.0
    return out


def pixel_centers(height: int, width: int) -> np.ndarray:
    """[H, W, 2] continuous (x, y) coordinates of the pixel centres of an image, i.e. (u + 0.5, v + 0.5)."""
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    return np.stack([xs + 0.5, ys + 0.5], axis=-1)


def intrinsic_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """[3, 3] pinhole matrix K for continuous pixel coordinates."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def intrinsics_to_original(
    intrinsics: np.ndarray, scale: tuple[float, float], crop_offset: tuple[int, int]
) -> np.ndarray:
    """(fx, fy, cx, cy) [..., 4] in network-image pixels -> the same camera in original-image pixels.

    scale: (sx, sy) original pixels per resized pixel; crop_offset: (left, top) of the crop in the resized image.
    """
    fx, fy, cx, cy = np.moveaxis(np.asarray(intrinsics, dtype=np.float64), -1, 0)
    sx, sy = scale
    left, top = crop_offset
    return np.stack([fx * sx, fy * sy, (cx + left) * sx, (cy + top) * sy], axis=-1)


def intrinsics_to_network(
    intrinsics: np.ndarray, scale: tuple[float, float], crop_offset: tuple[int, int]
) -> np.ndarray:
    """Inverse of ``intrinsics_to_original``: original-image (fx, fy, cx, cy) [..., 4] -> network-image pixels."""
    fx, fy, cx, cy = np.moveaxis(np.asarray(intrinsics, dtype=np.float64), -1, 0)
    sx, sy = scale
    left, top = crop_offset
    return np.stack([fx / sx, fy / sy, cx / sx - left, cy / sy - top], axis=-1)
