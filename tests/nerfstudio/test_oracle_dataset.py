"""The whole chain on a synthetic scene with an oracle predictor (exact pointmaps): process() with the real
pipeline writes a dataset that nerfstudio's parsers read back consistently (runs once the pipeline is merged)."""

from __future__ import annotations

import json

import numpy as np
import pycolmap
import pytest
import torch
from rich.console import Console
from synthetic_cameras import project_parsed

from fast3r_ns.process import ProcessConfig, process

pytest.importorskip("fast3r_ns.pipeline", reason="fast3r_ns.pipeline (geometry branch) is not merged yet")
testing = pytest.importorskip("fast3r_ns.testing", reason="fast3r_ns.testing (geometry branch) is not merged yet")


def _process_scene(root, **options):
    from fast3r_ns.io.images import load_images

    scene = testing.make_scene(5, image_size=(160, 120), seed=1)
    paths = scene.write_images(root / "imgs")
    assert paths == sorted(paths)  # process() sorts its inputs: the oracle's view order must agree
    predictor = testing.OraclePredictor(scene, load_images(paths, size=128))
    config = ProcessConfig(data=root / "imgs", output_dir=root / "scene", image_size=128, num_downscales=1, **options)
    result = process(config, console=Console(quiet=True), predictor=predictor)
    return result.output_dir, result.reconstruction, scene


@pytest.fixture(scope="module")
def oracle_scene(tmp_path_factory):
    return _process_scene(tmp_path_factory.mktemp("oracle"))


def test_cameras_are_the_scene_cameras(oracle_scene):
    out, rec, scene = oracle_scene
    assert rec.pose_ok.all() and len(rec.points) > 100
    truth = np.array([camera.intrinsics for camera in scene.cameras])
    np.testing.assert_allclose(rec.intrinsics, truth, rtol=1e-4, atol=1e-3)
    meta = json.loads((out / "transforms.json").read_text())
    assert [frame["fl_x"] for frame in meta["frames"]] == pytest.approx(truth[:, 0], rel=1e-4)  # focal per view


def test_shared_focal_gives_one_camera(tmp_path):
    out, rec, scene = _process_scene(tmp_path, focal_mode="shared")
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["fl_x"] == pytest.approx(scene.cameras[0].intrinsics[0], rel=1e-4)
    assert "fl_x" not in meta["frames"][0]
    assert pycolmap.Reconstruction(str(out / "colmap/sparse/0")).num_cameras() == 1


@pytest.mark.parametrize("parser", ["nerfstudio", "colmap"])
def test_parsed_points_reproject_onto_their_pixels(oracle_scene, parser):
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    out, rec, _ = oracle_scene
    if parser == "nerfstudio":
        config = NerfstudioDataParserConfig(data=out, load_3D_points=True, downscale_factor=1, eval_mode="all")
        outputs = config.setup().get_dataparser_outputs("train")
        owners, pixels = torch.from_numpy(rec.point_image.astype(np.int64)), rec.point_pixel
    else:
        config = ColmapDataParserConfig(
            data=out, load_3D_points=True, downscale_factor=1, eval_mode="all", max_2D_matches_per_3D_point=-1
        )
        outputs = config.setup().get_dataparser_outputs("train")
        # every observation of every point (the COLMAP model holds only the triangulated tracks)
        image_ids = outputs.metadata["points3D_image_ids"]
        row, column = np.nonzero(image_ids.numpy() >= 0)
        owners = image_ids[row, column] - 1
        pixels = outputs.metadata["points3D_points2D_xy"].numpy()[row, column]
    points = outputs.metadata["points3D_xyz"]
    assert len(points) == (len(rec.points) if parser == "nerfstudio" else rec.tracks.num_tracks)
    if parser == "nerfstudio":
        row = np.arange(len(points))
        is_track = np.zeros(len(points), dtype=bool)
        is_track[rec.tracks.point] = True
    else:
        is_track = np.ones(len(row), dtype=bool)
    error = np.zeros(len(row))
    for index in range(rec.num_images):
        mine = (owners == index).numpy()
        assert int(mine.sum()) > 0
        reprojected = project_parsed(outputs.cameras, index, points[row[mine]])
        error[mine] = np.linalg.norm(reprojected - pixels[mine], axis=-1)
    assert error[~is_track].max(initial=0.0) < 5e-3 * 160  # a dense point sits on its own pixel's ray
    assert np.median(error[is_track]) < 0.05 and error[is_track].max() < 2.0  # tracks: triangulated


def test_pycolmap_reads_the_model(oracle_scene):
    out, rec, _ = oracle_scene
    model = pycolmap.Reconstruction(str(out / "colmap/sparse/0"))
    assert model.num_reg_images() == rec.num_images and model.num_points3D() == rec.tracks.num_tracks > 100
    assert min(point.track.length() for point in model.points3D.values()) >= 2
    assert model.compute_mean_reprojection_error() < 0.05  # triangulated tracks of exact pointmaps
