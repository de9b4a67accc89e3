"""Binary PLY writer/reader: round trip, and open3d (nerfstudio's reader) sees the same points and colors."""

from __future__ import annotations

import numpy as np
import pytest

from fast3r_ns.io.ply import read_ply, write_ply


def test_round_trip_and_open3d(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(1000, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(1000, 3), dtype=np.uint8)
    path = write_ply(tmp_path / "pc.ply", points, colors)
    read_points, read_colors = read_ply(path)
    np.testing.assert_array_equal(read_points, points)
    np.testing.assert_array_equal(read_colors, colors)

    o3d = pytest.importorskip("open3d")
    cloud = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(cloud.points), points, atol=0)
    np.testing.assert_array_equal(np.round(np.asarray(cloud.colors) * 255).astype(np.uint8), colors)


def test_empty_cloud(tmp_path):
    path = write_ply(tmp_path / "empty.ply", np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    points, colors = read_ply(path)
    assert points.shape == (0, 3) and colors.shape == (0, 3)


def test_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="colors must be uint8"):
        write_ply(tmp_path / "x.ply", np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"expected points \[M, 3\]"):
        write_ply(tmp_path / "x.ply", np.zeros((2, 2)), np.zeros((2, 2), np.uint8))
