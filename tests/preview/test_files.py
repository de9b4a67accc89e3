"""The viewer reads an output folder: cameras in OpenCV axes, the PLY (ascii or binary), confidence, preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from preview_scene import (
    APPLIED_TRANSFORM,
    NUM_POINTS,
    NUM_VIEWS,
    UNTRUSTED_VIEW,
    WEAK_VIEW,
    make_confidence_maps,
    make_reconstruction,
    write_nerfstudio_folder,
    write_ply,
)

from fast3r_ns.io.ply import read_ply_vertices
from fast3r_ns.preview.files import PREVIEW_DIR, PreviewView, match_views
from fast3r_ns.preview.report import write_report
from fast3r_ns.preview.viewer import load_scene


def test_read_ply_binary_and_ascii(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(5, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (5, 3)).astype(np.uint8)
    confidence = rng.random(5).astype(np.float32)
    write_ply(tmp_path / "b.ply", points, colors, confidence)
    vertices = read_ply_vertices(tmp_path / "b.ply")
    np.testing.assert_array_equal(np.stack([vertices[k] for k in "xyz"], 1), points)
    np.testing.assert_array_equal(np.stack([vertices[k] for k in ("red", "green", "blue")], 1), colors)
    np.testing.assert_array_equal(vertices["confidence"], confidence)

    # nerfstudio's create_ply_from_colmap writes ascii
    lines = ["ply", "format ascii 1.0", "element vertex 5"]
    lines += [f"property float {k}" for k in "xyz"] + [f"property uint8 {k}" for k in ("red", "green", "blue")]
    lines += ["end_header"] + [" ".join(map(str, [*p.tolist(), *c.tolist()])) for p, c in zip(points, colors)]
    (tmp_path / "a.ply").write_text("\n".join(lines) + "\n")
    vertices = read_ply_vertices(tmp_path / "a.ply")
    np.testing.assert_allclose(np.stack([vertices[k] for k in "xyz"], 1), points, rtol=1e-6)
    assert vertices["red"].dtype == np.uint8 and vertices["red"].tolist() == colors[:, 0].tolist()


@pytest.mark.parametrize("confidence_in", ["ply", "preview", "none"])
def test_load_scene(tmp_path: Path, confidence_in: str) -> None:
    rec = make_reconstruction(tmp_path / "input")
    out = tmp_path / "out"
    write_nerfstudio_folder(out, rec, ply_confidence=confidence_in == "ply")
    if confidence_in != "none":
        write_report(out, rec, make_confidence_maps(rec), command="test")  # frame paths unknown: matched by number
    scene = load_scene(out)

    assert len(scene.cameras) == NUM_VIEWS and scene.points.shape == (NUM_POINTS, 3)
    expected = np.einsum("ij,njk->nik", APPLIED_TRANSFORM, rec.cam_to_world)  # OpenCV axes, nerfstudio world
    np.testing.assert_allclose([c.cam_to_world for c in scene.cameras], expected, atol=1e-9)
    np.testing.assert_allclose(scene.points, rec.points @ APPLIED_TRANSFORM[:3, :3].T, atol=1e-6)
    np.testing.assert_array_equal(scene.colors, rec.colors)
    np.testing.assert_allclose(scene.up, [0.0, 0.0, 1.0], atol=1e-9)  # world -y mapped to +z
    assert scene.cameras[3].fx == rec.intrinsics[3, 0] and scene.cameras[3].width == rec.image_sizes[3, 0]
    if confidence_in == "none":
        assert scene.confidence is None and scene.views == [None] * NUM_VIEWS
        assert scene.status == ["unknown"] * NUM_VIEWS
    else:
        np.testing.assert_array_equal(scene.confidence, rec.point_confidence)
        assert [v.index for v in scene.views] == list(range(NUM_VIEWS))
        assert scene.status[UNTRUSTED_VIEW] == "untrusted" and scene.status[WEAK_VIEW] == "weak"
        assert scene.status.count("ok") == NUM_VIEWS - 2
        assert all(v.confidence_map is not None for v in scene.views)


def test_load_scene_subsamples_and_ignores_mismatched_confidence(tmp_path: Path) -> None:
    rec = make_reconstruction(tmp_path / "input")
    out = tmp_path / "out"
    write_nerfstudio_folder(out, rec)
    write_report(out, rec, command="test")
    np.save(out / PREVIEW_DIR / "points_confidence.npy", np.ones(NUM_POINTS - 1, np.float32))
    scene = load_scene(out, max_points=500)
    assert scene.points.shape == (500, 3) and scene.num_points_total == NUM_POINTS
    assert scene.confidence is None


def test_match_views() -> None:
    def view(index: int, name: str, frame_path: str = "") -> PreviewView:
        return PreviewView(index, name, frame_path, 1.0, True, "", 1.0, 1.0, None)

    views = [view(0, "a.jpg", "images/frame_00001.jpg"), view(1, "b.jpg"), view(2, "c.jpg")]
    paths = ["images/frame_00001.jpg", "images/c.jpg", "images/frame_00002.png", "images/zzz.png"]
    assert [v.index if v else None for v in match_views(paths, views)] == [0, 2, 1, None]
    assert match_views(["x/p.png", "x/q.png", "x/r.png"], views) == views  # same count, nothing matched
    originals = ["/data/c.jpg", "/data/b.jpg", None]
    assert match_views(["images/frame_00001.png", "x/q.png", "x/r.png"], views, originals) == views[::-1][:2] + [None]
