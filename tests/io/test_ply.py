"""PLY writer/reader: round trip, other writers' files, and open3d (nerfstudio's reader) sees the same points."""

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


def test_reads_other_writers_and_names_missing_properties(tmp_path):
    # nerfstudio's create_ply_from_colmap writes ascii, with the colour properties as uint8
    lines = ["ply", "format ascii 1.0", "comment from another writer", "element vertex 2"]
    lines += [f"property float {k}" for k in "xyz"] + [f"property uint8 {k}" for k in ("red", "green", "blue")]
    lines += ["end_header", "0.5 -1.25 3 255 0 7", "1 2 -3.5 1 2 3"]
    (tmp_path / "a.ply").write_text("\n".join(lines) + "\n")
    points, colors = read_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(points, np.array([[0.5, -1.25, 3], [1, 2, -3.5]], np.float32))
    np.testing.assert_array_equal(colors, np.array([[255, 0, 7], [1, 2, 3]], np.uint8))
    assert points.dtype == np.float32 and colors.dtype == np.uint8

    header = "ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
    header += "property float x\nproperty float y\nproperty float z\nend_header\n"
    (tmp_path / "b.ply").write_bytes(header.encode("ascii") + np.zeros(3, "<f4").tobytes())
    with pytest.raises(ValueError, match="no red, green, blue"):
        read_ply(tmp_path / "b.ply")
