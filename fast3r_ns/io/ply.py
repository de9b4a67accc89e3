"""Binary little-endian PLY point clouds (xyz float32, rgb uint8), written and read with numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
_HEADER = (
    "ply\nformat binary_little_endian 1.0\nelement vertex {count}\n"
    "property float x\nproperty float y\nproperty float z\n"
    "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
)


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray) -> Path:
    """Write points [M, 3] (cast to float32) and colors [M, 3] uint8 as a binary PLY (what open3d reads)."""
    points = np.asarray(points)
    colors = np.asarray(colors)
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ValueError(f"write_ply: expected points [M, 3] and colors [M, 3], got {points.shape} and {colors.shape}")
    if colors.dtype != np.uint8:
        raise ValueError(f"write_ply: colors must be uint8, got {colors.dtype}")
    vertices = np.empty(len(points), dtype=_VERTEX)
    for axis, name in enumerate("xyz"):
        vertices[name] = points[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = colors[:, channel]
    path = Path(path)
    with open(path, "wb") as file:
        file.write(_HEADER.format(count=len(points)).encode("ascii"))
        file.write(vertices.tobytes())
    return path


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a PLY written by :func:`write_ply`: (points [M, 3] float32, colors [M, 3] uint8)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = data[: end + len(b"end_header\n")]
    count = int(header.split(b"element vertex ")[1].split(b"\n")[0])
    if header != _HEADER.format(count=count).encode("ascii"):
        raise ValueError(f"{path}: only binary little-endian xyz float / rgb uchar vertices are supported")
    vertices = np.frombuffer(data, dtype=_VERTEX, count=count, offset=len(header))
    points = np.stack([vertices[name] for name in "xyz"], axis=1)
    colors = np.stack([vertices[name] for name in ("red", "green", "blue")], axis=1)
    return points, colors
