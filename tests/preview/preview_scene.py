"""A synthetic reconstruction (cameras on a circle around a coloured sphere) and a nerfstudio folder written from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from fast3r_ns.reconstruction import Reconstruction
from fast3r_ns.testing.scene import look_at

NUM_VIEWS = 8
NUM_POINTS = 3000
IMAGE_SIZE = (64, 48)  # (W, H)
WEAK_VIEW = 5  # much lower confidence than the others
UNTRUSTED_VIEW = 2  # pose_ok False
TIMINGS = {"load images": 0.25, "model": 3.5, "poses": 0.75, "point cloud": 0.125}
# nerfstudio's world transform of COLMAP data, (x, y, z) -> (x, z, -y); fast3r_ns.geometry.conventions has it too.
APPLIED_TRANSFORM = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0, 0, 0, 1.0]])
FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV <-> OpenGL camera axes


def make_reconstruction(image_dir: Path, pose_notes: bool = True) -> Reconstruction:
    """Cameras on a circle of radius 3 (view 0 at the world origin's -z side, identity rotation) looking at a
    unit sphere of coloured points; small gradient PNGs written to ``image_dir``."""
    rng = np.random.default_rng(0)
    image_dir.mkdir(parents=True, exist_ok=True)
    angles = np.linspace(0, 2 * np.pi, NUM_VIEWS, endpoint=False)
    centres = 3.0 * np.stack([np.sin(angles), np.zeros(NUM_VIEWS), -np.cos(angles)], axis=1)
    cam_to_world = np.stack([look_at(c, np.zeros(3), up=(0.0, -1.0, 0.0)) for c in centres])
    width, height = IMAGE_SIZE
    paths = []
    for i in range(NUM_VIEWS):
        x = np.linspace(0, 255, width)[None, :, None]
        y = np.linspace(0, 255, height)[:, None, None]
        image = np.concatenate(
            [
                np.broadcast_to(x, (height, width, 1)),
                np.broadcast_to(y, (height, width, 1)),
                np.full((height, width, 1), 30.0 * i),
            ],
            axis=2,
        )
        paths.append(image_dir / f"img_{i:02d}.png")
        Image.fromarray(image.astype(np.uint8)).save(paths[-1])
    normals = rng.normal(size=(NUM_POINTS, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    focal = 60.0 + 2.0 * np.arange(NUM_VIEWS)
    view_confidence = 8.0 + 0.5 * np.arange(NUM_VIEWS)
    view_confidence[WEAK_VIEW] = 1.5
    pose_ok = np.ones(NUM_VIEWS, bool)
    pose_ok[UNTRUSTED_VIEW] = False
    rec = Reconstruction(
        image_paths=paths,
        image_sizes=np.tile([width, height], (NUM_VIEWS, 1)),
        intrinsics=np.stack([focal, focal * 1.01, np.full(NUM_VIEWS, width / 2), np.full(NUM_VIEWS, height / 2)], 1),
        cam_to_world=cam_to_world,
        view_confidence=view_confidence,
        pose_ok=pose_ok,
        points=normals.astype(np.float32),
        colors=((normals * 0.5 + 0.5) * 255).astype(np.uint8),
        point_confidence=(1.0 + 9.0 * rng.random(NUM_POINTS)).astype(np.float32),
        point_image=rng.integers(0, NUM_VIEWS, NUM_POINTS).astype(np.int32),
        point_pixel=(rng.random((NUM_POINTS, 2)) * [width, height]).astype(np.float32),
        timings=dict(TIMINGS),
    )
    if pose_notes:
        rec.pose_notes = ["" if ok else "too few confident points" for ok in pose_ok]
    return rec


def make_confidence_maps(rec: Reconstruction) -> np.ndarray:
    """[N, 24, 32] confidence >= 1 with a left-to-right gradient scaled by the view's confidence."""
    gradient = np.linspace(0.0, 1.0, 32)[None, None, :] * np.ones((1, 24, 1))
    return 1.0 + gradient * np.asarray(rec.view_confidence)[:, None, None]


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray, confidence: np.ndarray | None = None) -> None:
    """Binary little-endian PLY with x, y, z float, red, green, blue uchar (and confidence float)."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if confidence is not None:
        fields.append(("confidence", "<f4"))
    vertices = np.zeros(len(points), dtype=fields)
    for j, axis in enumerate("xyz"):
        vertices[axis] = points[:, j]
    for j, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = colors[:, j]
    if confidence is not None:
        vertices["confidence"] = confidence
    types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}"]
    header += [f"property {types[kind]} {name}" for name, kind in fields] + ["end_header"]
    path.write_bytes(("\n".join(header) + "\n").encode("ascii") + vertices.tobytes())


def write_nerfstudio_folder(out_dir: Path, rec: Reconstruction, ply_confidence: bool = False) -> list[str]:
    """A minimal nerfstudio dataset as ns-process-data writes it (world mapped by APPLIED_TRANSFORM, OpenGL
    camera axes, images renamed frame_00001.png ...); returns the frames' file paths."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, path in enumerate(rec.image_paths):
        file_path = f"images/frame_{i + 1:05d}.png"
        (out_dir / file_path).write_bytes(Path(path).read_bytes())
        fx, fy, cx, cy = rec.intrinsics[i]
        transform = APPLIED_TRANSFORM @ rec.cam_to_world[i] @ FLIP_YZ
        frames.append(
            {
                "file_path": file_path,
                "transform_matrix": transform.tolist(),
                "fl_x": fx,
                "fl_y": fy,
                "cx": cx,
                "cy": cy,
                "w": int(rec.image_sizes[i, 0]),
                "h": int(rec.image_sizes[i, 1]),
            }
        )
    meta = {
        "camera_model": "OPENCV",
        "frames": frames,
        "applied_transform": APPLIED_TRANSFORM[:3].tolist(),
        "ply_file_path": "sparse_pc.ply",
    }
    (out_dir / "transforms.json").write_text(json.dumps(meta, indent=1))
    points = rec.points @ APPLIED_TRANSFORM[:3, :3].T
    write_ply(out_dir / "sparse_pc.ply", points, rec.colors, rec.point_confidence if ply_confidence else None)
    return [frame["file_path"] for frame in frames]
