"""A dataset written by ``process`` (synthetic cameras standing in for Fast3R) is read correctly by nerfstudio.

Both of nerfstudio's parsers must parse it, the parsed points must project onto the pixels they came from,
and nerfstudio's own colmap_to_json on our COLMAP model must give the cameras of our transforms.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from synthetic_cameras import fake_reconstruct, project_parsed, write_images

from fast3r_ns.io.ply import read_ply
from fast3r_ns.process import ProcessConfig, process

pytest.importorskip("nerfstudio")


def _process(root: Path, sizes: list[tuple[int, int]], **options) -> tuple[Path, object]:
    captured = {}

    def reconstruct(*args, **kwargs):
        captured["rec"] = fake_reconstruct(*args, **kwargs)
        return captured["rec"]

    write_images(root / "input photos", sizes)
    config = ProcessConfig(data=root / "input photos", output_dir=root / "scene", image_size=64, **options)
    process(config, console=Console(quiet=True), predictor=object(), reconstruct_fn=reconstruct)
    return root / "scene", captured["rec"]


@pytest.fixture(scope="module")
def shared_scene(tmp_path_factory):
    return _process(tmp_path_factory.mktemp("shared"), [(96, 72)] * 4, num_downscales=2)


@pytest.fixture(scope="module")
def mixed_scene(tmp_path_factory):
    return _process(tmp_path_factory.mktemp("mixed"), [(96, 72), (72, 96), (80, 64)], num_downscales=1)


def test_layout(shared_scene):
    out, rec = shared_scene
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".fast3r_ns",
        "colmap",
        "fast3r_preview",
        "fast3r_report.html",
        "fast3r_report.png",
        "images",
        "images_2",
        "images_4",
        "init.ply",
        "sparse",
        "sparse_pc.ply",
        "transforms.json",
    ]
    assert not list(out.parent.glob("scene.tmp-*")) and not (out.parent / "scene.lock").exists()
    frames = [f"frame_{i:05d}.png" for i in range(1, 5)]
    for folder, size in (("images", (96, 72)), ("images_2", (48, 36)), ("images_4", (24, 18))):
        assert sorted(p.name for p in (out / folder).iterdir()) == frames
        assert all(Image.open(out / folder / f).size == size for f in frames)
    assert {p.name for p in (out / "colmap/sparse/0").iterdir()} >= {"cameras.bin", "images.bin", "points3D.bin"}
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["ply_file_path"] == "sparse_pc.ply"
    assert [f["original_file_path"] for f in meta["frames"]] == [f"img_{i:02d}.png" for i in range(4)]
    assert len(read_ply(out / "sparse_pc.ply")[0]) == len(rec.points)


@pytest.mark.parametrize("scene", ["shared_scene", "mixed_scene"])
def test_nerfstudio_dataparser(scene, request):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    out, rec = request.getfixturevalue(scene)
    config = NerfstudioDataParserConfig(data=out, load_3D_points=True, downscale_factor=1, eval_mode="all")
    outputs = config.setup().get_dataparser_outputs("train")
    assert [Path(f).name for f in outputs.image_filenames] == [
        f"frame_{i:05d}.png" for i in range(1, rec.num_images + 1)
    ]
    assert all(Path(f).is_file() for f in outputs.image_filenames)
    cameras = outputs.cameras
    np.testing.assert_array_equal(cameras.width.squeeze(-1).numpy(), rec.image_sizes[:, 0])
    np.testing.assert_array_equal(cameras.height.squeeze(-1).numpy(), rec.image_sizes[:, 1])
    points = outputs.metadata["points3D_xyz"]
    assert len(points) == len(rec.points)
    np.testing.assert_array_equal(outputs.metadata["points3D_rgb"].numpy(), rec.colors)
    for index in range(rec.num_images):
        mine = torch.from_numpy(rec.point_image == index)
        np.testing.assert_allclose(
            project_parsed(cameras, index, points[mine]), rec.point_pixel[mine.numpy()], atol=2e-3
        )


def test_nerfstudio_dataparser_downscaled(shared_scene):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    out, _ = shared_scene
    outputs = NerfstudioDataParserConfig(data=out, downscale_factor=2, eval_mode="all").setup().get_dataparser_outputs()
    assert all(Path(f).parent.name == "images_2" and Path(f).is_file() for f in outputs.image_filenames)
    assert int(outputs.cameras.width[0]) == 48 and int(outputs.cameras.height[0]) == 36


@pytest.mark.parametrize("scene", ["shared_scene", "mixed_scene"])
def test_colmap_dataparser(scene, request):
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig

    out, rec = request.getfixturevalue(scene)
    config = ColmapDataParserConfig(
        data=out, load_3D_points=True, downscale_factor=1, eval_mode="all", max_2D_matches_per_3D_point=-1
    )
    outputs = config.setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == rec.num_images
    points = outputs.metadata["points3D_xyz"]
    image_ids = outputs.metadata["points3D_image_ids"]  # [P, longest track], -1 padded
    pixels = outputs.metadata["points3D_points2D_xy"].numpy()
    tracks = rec.tracks
    assert len(points) == tracks.num_tracks  # the COLMAP model keeps the points seen by >= 2 images
    assert int((image_ids >= 0).sum(1).min()) >= 2
    for index in range(rec.num_images):
        mine = image_ids == index + 1  # every observation in image index
        point_of = np.nonzero(mine.numpy())[0]
        assert int(mine.sum()) == int(np.sum(tracks.image == index))
        np.testing.assert_allclose(
            project_parsed(outputs.cameras, index, points[point_of]), pixels[mine.numpy()], atol=2e-3
        )
        expected = tracks.pixel[tracks.image == index]
        assert {tuple(np.round(p, 3)) for p in pixels[mine.numpy()]} == {tuple(np.round(p, 3)) for p in expected}


@pytest.mark.parametrize("scene", ["shared_scene", "mixed_scene"])
def test_colmap_to_json_agrees(scene, request, tmp_path):
    from nerfstudio.process_data.colmap_utils import colmap_to_json

    out, rec = request.getfixturevalue(scene)
    colmap_to_json(out / "colmap/sparse/0", tmp_path)
    theirs = json.loads((tmp_path / "transforms.json").read_text())
    ours = json.loads((out / "transforms.json").read_text())
    camera_keys = ("w", "h", "fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1", "p2", "camera_model")
    # Ours keeps camera_model at the top level also with per-frame cameras (OpenSplat requires it there), where
    # nerfstudio 1.1.5's colmap_to_json writes it per frame only.
    assert ours["camera_model"] == "OPENCV" and theirs.get("camera_model", "OPENCV") == "OPENCV"
    top_keys = [k for k in camera_keys if k != "camera_model"]
    assert {k: theirs.get(k) for k in top_keys} == {k: ours.get(k) for k in top_keys}
    assert theirs["applied_transform"] == ours["applied_transform"]
    assert len(theirs["frames"]) == len(ours["frames"])
    for their, our in zip(theirs["frames"], ours["frames"]):
        assert their["file_path"] == our["file_path"]
        assert their["colmap_im_id"] == our["colmap_im_id"]
        assert {k: their.get(k) for k in camera_keys} == {k: our.get(k) for k in camera_keys}
        np.testing.assert_allclose(their["transform_matrix"], our["transform_matrix"], atol=1e-9)
    # colmap_to_json's cloud holds the COLMAP model's points: ours that are seen by >= 2 images.
    their_points = np.asarray(__import__("open3d").io.read_point_cloud(str(tmp_path / "sparse_pc.ply")).points)
    our_points = read_ply(out / "sparse_pc.ply")[0][rec.tracks.point]
    np.testing.assert_allclose(their_points, our_points, atol=1e-5)
