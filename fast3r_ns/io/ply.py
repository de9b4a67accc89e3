"""PLY point clouds with numpy: written binary little-endian (xyz float32, rgb uint8), read in any PLY format."""

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


_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def read_ply_vertices(path: str | Path) -> dict[str, np.ndarray]:
    """The vertex properties of a PLY file (ascii or binary), by name: e.g. ``x``, ``red``, ``confidence``.

    Elements before ``vertex`` must have scalar properties only (those after it are not read).
    """
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path} is not a PLY file")
        fmt = ""
        elements: list[tuple[str, int, list[tuple[str, str]]]] = []
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: PLY header has no end_header")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property" and elements:
                if words[1] == "list":
                    elements[-1][2].append((words[4], "list"))
                else:
                    elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        order = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": ""}[fmt]
        for name, count, properties in elements:
            if any(kind == "list" for _, kind in properties):
                raise ValueError(f"{path}: list property in element {name!r} is not supported")
            if fmt == "ascii":
                dtype = np.dtype([(prop, kind) for prop, kind in properties])
                if name == "vertex":
                    lines = [f.readline() for _ in range(count)]
                    table = np.loadtxt(lines, dtype=np.float64, ndmin=2) if count else np.zeros((0, len(dtype)))
                    return {prop: table[:, j].astype(dtype[prop]) for j, (prop, _) in enumerate(properties)}
                for _ in range(count):
                    f.readline()
            else:
                dtype = np.dtype([(prop, order + kind) for prop, kind in properties])
                data = np.frombuffer(f.read(dtype.itemsize * count), dtype=dtype, count=count)
                if name == "vertex":
                    return {prop: data[prop].astype(data[prop].dtype.newbyteorder("=")) for prop, _ in properties}
    raise ValueError(f"{path} has no vertex element")


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Points [M, 3] float32 and colors [M, 3] uint8 of a PLY (ours or another writer's, ascii or binary)."""
    vertices = read_ply_vertices(path)
    missing = [name for name in ("x", "y", "z", "red", "green", "blue") if name not in vertices]
    if missing:
        raise ValueError(f"{path}: the vertices have no {', '.join(missing)}")
    points = np.stack([vertices[name] for name in "xyz"], axis=1).astype(np.float32)
    colors = np.stack([vertices[name] for name in ("red", "green", "blue")], axis=1).astype(np.uint8)
    return points, colors
