"""transforms.json content: nerfstudio's camera/world convention, shared vs per-frame intrinsics, extra keys."""

from __future__ import annotations

import json

import numpy as np
from synthetic_cameras import make_reconstruction

from fast3r_ns.io.transforms import nerfstudio_cam_to_world, nerfstudio_points, transforms_dict, write_transforms

APPLIED = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]]


def colmap_to_json_matrix(cam_to_world: np.ndarray) -> np.ndarray:
    """The steps of nerfstudio's colmap_to_json, written out as it does them."""
    c2w = cam_to_world.copy()
    c2w[0:3, 1:3] *= -1
    c2w = c2w[np.array([0, 2, 1, 3]), :]
    c2w[2, :] *= -1
    return c2w


def test_shared_camera_at_top_level():
    rec = make_reconstruction()
    names = [f"images/frame_{i + 1:05d}.png" for i in range(rec.num_images)]
    out = transforms_dict(rec, names, original_paths=["a.png", "b.png", "c.png", "d.png"])
    fx, fy, cx, cy = rec.intrinsics[0]
    assert out["camera_model"] == "OPENCV"
    assert (out["w"], out["h"], out["fl_x"], out["fl_y"], out["cx"], out["cy"]) == (64, 48, fx, fy, cx, cy)
    assert out["k1"] == out["k2"] == out["p1"] == out["p2"] == 0.0
    assert out["applied_transform"] == APPLIED
    assert out["ply_file_path"] == "sparse_pc.ply"
    assert [f["file_path"] for f in out["frames"]] == names
    assert [f["original_file_path"] for f in out["frames"]] == ["a.png", "b.png", "c.png", "d.png"]
    assert [f["colmap_im_id"] for f in out["frames"]] == [1, 2, 3, 4]
    for frame, c2w in zip(out["frames"], rec.cam_to_world):
        assert "fl_x" not in frame and "pose_ok" not in frame
        np.testing.assert_allclose(frame["transform_matrix"], colmap_to_json_matrix(c2w), atol=1e-12)


def test_per_frame_intrinsics_and_flagged_pose():
    rec = make_reconstruction(sizes=[(64, 48), (48, 64), (80, 48)], shared=False)
    rec.pose_ok[1] = False
    out = transforms_dict(rec, ["images/a.png", "images/b.png", "images/c.png"])
    assert "fl_x" not in out and "w" not in out
    for frame, (width, height), (fx, fy, cx, cy) in zip(out["frames"], rec.image_sizes, rec.intrinsics):
        assert (frame["w"], frame["h"], frame["fl_x"], frame["fl_y"], frame["cx"], frame["cy"]) == (
            width,
            height,
            fx,
            fy,
            cx,
            cy,
        )
        assert frame["camera_model"] == "OPENCV"
    assert [f.get("pose_ok", True) for f in out["frames"]] == [True, False, True]


def test_points_project_through_opengl_cameras():
    """In nerfstudio's frame (OpenGL cameras, rotated world) every point lands on its original pixel."""
    rec = make_reconstruction()
    matrices = nerfstudio_cam_to_world(rec.cam_to_world)
    points = nerfstudio_points(rec.points).astype(np.float64)
    for index in range(rec.num_images):
        mine = rec.point_image == index
        world_to_cam = np.linalg.inv(matrices[index])
        cam = points[mine] @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        fx, fy, cx, cy = rec.intrinsics[index]
        assert np.all(cam[:, 2] < 0)  # OpenGL cameras look down -z
        pixels = np.stack([fx * cam[:, 0] / -cam[:, 2] + cx, fy * -cam[:, 1] / -cam[:, 2] + cy], axis=1)
        np.testing.assert_allclose(pixels, rec.point_pixel[mine], atol=2e-3)


def test_write_is_utf8_json(tmp_path):
    rec = make_reconstruction()
    out = transforms_dict(rec, [f"images/f{i}.png" for i in range(4)], original_paths=["été 1.png"] * 4)
    path = write_transforms(tmp_path / "transforms.json", out)
    assert json.loads(path.read_text(encoding="utf-8")) == out
