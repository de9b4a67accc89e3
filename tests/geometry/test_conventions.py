from __future__ import annotations

import numpy as np
import torch

from fast3r_ns.geometry.conventions import (
    APPLIED_TRANSFORM,
    NERFSTUDIO_APPLIED_TRANSFORM,
    intrinsics_to_network,
    intrinsics_to_original,
    opencv_to_opengl,
    pixel_centers,
)
from fast3r_ns.io.images import PreparedImage


def test_opencv_to_opengl_flips_camera_y_and_z() -> None:
    rng = np.random.default_rng(0)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rotation, [1.0, 2.0, 3.0]
    gl = opencv_to_opengl(np.stack([c2w, c2w]))
    assert gl.shape == (2, 4, 4)
    np.testing.assert_allclose(gl[0, :3, 0], rotation[:, 0])
    np.testing.assert_allclose(gl[0, :3, 1:3], -rotation[:, 1:3])
    np.testing.assert_allclose(gl[0, :3, 3], c2w[:3, 3])
    np.testing.assert_allclose(opencv_to_opengl(gl[0]), c2w)  # an involution
    # A point in front of the OpenCV camera (z > 0) is behind the OpenGL camera's +z (it looks down -z).
    world_point = c2w @ np.array([0.1, 0.2, 2.0, 1.0])
    assert (np.linalg.inv(gl[0]) @ world_point)[2] < 0


def test_applied_transform_is_nerfstudio_colmap_to_world() -> None:
    np.testing.assert_array_equal(APPLIED_TRANSFORM, [[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0]])
    np.testing.assert_array_equal(NERFSTUDIO_APPLIED_TRANSFORM @ [1.0, 2.0, 3.0, 1.0], [1.0, 3.0, -2.0, 1.0])


def test_pixel_centers_are_half_integers() -> None:
    centers = pixel_centers(2, 3)
    assert centers.shape == (2, 3, 2)
    np.testing.assert_array_equal(centers[1, 2], [2.5, 1.5])


def test_intrinsics_to_original_matches_prepared_image_mapping() -> None:
    image = PreparedImage("x.png", torch.zeros(1, 3, 336, 512), (1536, 1024), (512, 341), (0, 2))
    network = np.array([400.0, 400.0, 256.3, 168.5])
    original = intrinsics_to_original(network, image.scale_to_original, image.crop_offset)
    np.testing.assert_allclose(intrinsics_to_network(original, image.scale_to_original, image.crop_offset), network)
    # Projection in network pixels mapped to the original == projection with the original intrinsics.
    point = np.array([0.3, -0.2, 2.0])
    net_xy = network[:2] * point[:2] / point[2] + network[2:]
    orig_xy = original[:2] * point[:2] / point[2] + original[2:]
    np.testing.assert_allclose(image.to_original(net_xy), orig_xy, atol=1e-9)
    np.testing.assert_allclose(original[2:], [(256.3 + 0) * 3.0, (168.5 + 2) * 1024 / 341])
