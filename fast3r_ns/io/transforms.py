"""Reconstruction -> nerfstudio's transforms.json, following ``colmap_to_json`` of nerfstudio 1.1.5.

nerfstudio's convention: camera axes OpenGL (x right, y up, z back) and the world rotated by
``APPLIED_TRANSFORM`` ((x, y, z) -> (x, z, -y)), recorded in the file; the PLY gets the same rotation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry.conventions import APPLIED_TRANSFORM, opencv_to_opengl
from ..reconstruction import Reconstruction


def nerfstudio_cam_to_world(cam_to_world: np.ndarray) -> np.ndarray:
    """[N, 4, 4] OpenCV camera-to-world -> nerfstudio's transform_matrix (OpenGL axes, rotated world)."""
    world = np.eye(4)
    world[:3] = APPLIED_TRANSFORM
    return world @ opencv_to_opengl(cam_to_world)


def nerfstudio_points(points: np.ndarray) -> np.ndarray:
    """[M, 3] world points -> the rotated world of transforms.json (float32, as the PLY stores them)."""
    return (np.asarray(points, dtype=np.float64) @ APPLIED_TRANSFORM[:, :3].T).astype(np.float32)


def shares_one_camera(reconstruction: Reconstruction) -> bool:
    """True when every image has the same size and intrinsics, so one camera describes them all."""
    sizes, intrinsics = reconstruction.image_sizes, reconstruction.intrinsics
    distortion = reconstruction.distortion
    same_k1 = distortion is None or bool(np.all(distortion == distortion[:1]))
    return bool(np.all(sizes == sizes[:1]) and np.all(intrinsics == intrinsics[:1])) and same_k1


def camera_params(width: int, height: int, intrinsics: np.ndarray, k1: float = 0.0) -> dict[str, Any]:
    """nerfstudio's per-camera keys: OPENCV with zero distortion (or radial ``k1``), as colmap_to_json writes."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return {
        "w": int(width),
        "h": int(height),
        "fl_x": fx,
        "fl_y": fy,
        "cx": cx,
        "cy": cy,
        "k1": float(k1),
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "camera_model": "OPENCV",
    }


def transforms_dict(
    reconstruction: Reconstruction,
    file_paths: list[str],
    ply_file_path: str = "sparse_pc.ply",
    original_paths: list[str] | None = None,
) -> dict[str, Any]:
    """The content of transforms.json.

    file_paths: per image, relative to the output folder (``images/frame_00001.jpg``); original_paths: the
    source files, recorded per frame as ``original_file_path``. Intrinsics go at the top level when one camera
    fits all images, in each frame otherwise; ``camera_model`` and ``ply_file_path`` are always at the top level.
    """
    if len(file_paths) != reconstruction.num_images:
        raise ValueError(f"{len(file_paths)} file paths for {reconstruction.num_images} images")
    shared = shares_one_camera(reconstruction)
    # camera_model stays at the top level with per-frame intrinsics too: OpenSplat's reader requires it there.
    out: dict[str, Any] = {"camera_model": "OPENCV"}
    if shared:
        out.update(camera_params(*reconstruction.image_sizes[0], reconstruction.intrinsics[0], _k1(reconstruction, 0)))
    matrices = nerfstudio_cam_to_world(reconstruction.cam_to_world)
    frames = []
    for index, file_path in enumerate(file_paths):
        frame: dict[str, Any] = {
            "file_path": file_path,
            "transform_matrix": matrices[index].tolist(),
            "colmap_im_id": index + 1,
        }
        if original_paths is not None:
            frame["original_file_path"] = original_paths[index]
        if not bool(reconstruction.pose_ok[index]):
            frame["pose_ok"] = False
        if not shared:
            frame.update(
                camera_params(
                    *reconstruction.image_sizes[index], reconstruction.intrinsics[index], _k1(reconstruction, index)
                )
            )
        frames.append(frame)
    out["frames"] = frames
    out["applied_transform"] = APPLIED_TRANSFORM.tolist()
    out["ply_file_path"] = ply_file_path
    return out


def _k1(reconstruction: Reconstruction, index: int) -> float:
    return 0.0 if reconstruction.distortion is None else float(reconstruction.distortion[index])


def write_transforms(path: str | Path, content: dict[str, Any]) -> Path:
    """Write transforms.json (UTF-8, indented like nerfstudio's)."""
    path = Path(path)
    path.write_text(json.dumps(content, indent=4, ensure_ascii=False), encoding="utf-8")
    return path
