"""The real commands end to end with the tiny random-weight Fast3R: ``ns-process-data fast3r`` and
``fast3r-ns process`` on PNG images, then nerfstudio's parser and pycolmap read the result."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pycolmap
import pytest
from PIL import Image
from synthetic_cameras import write_images

from fast3r_ns.io.ply import read_ply

pytest.importorskip("fast3r_ns.pipeline", reason="fast3r_ns.pipeline (geometry branch) is not merged yet")


def check_dataset(output, num_images: int, size: tuple[int, int]) -> None:
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    names = [f"frame_{i:05d}.png" for i in range(1, num_images + 1)]
    assert sorted(p.name for p in (output / "images").iterdir()) == names
    assert Image.open(output / "images_2" / names[0]).size == (size[0] // 2, size[1] // 2)
    meta = json.loads((output / "transforms.json").read_text())
    assert len(meta["frames"]) == num_images and meta["ply_file_path"] == "sparse_pc.ply"
    for frame in meta["frames"]:
        matrix = np.asarray(frame["transform_matrix"])
        assert matrix.shape == (4, 4) and np.all(np.isfinite(matrix))
        np.testing.assert_allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-5)
    points, _ = read_ply(output / "sparse_pc.ply")
    assert np.all(np.isfinite(points))  # random weights: the pipeline may trust no pose and keep no points

    config = NerfstudioDataParserConfig(data=output, load_3D_points=True, downscale_factor=1, eval_mode="all")
    outputs = config.setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == num_images
    assert len(outputs.metadata.get("points3D_xyz", [])) == len(points)  # nerfstudio drops an empty cloud

    model = pycolmap.Reconstruction(str(output / "colmap/sparse/0"))
    assert model.num_reg_images() == num_images and model.num_points3D() <= len(points)
    assert all(len(p.track.elements) >= 2 for p in model.points3D.values())  # COLMAP's rule


def test_ns_process_data_fast3r(tmp_path, tiny_model_dir, ns_process_data):
    write_images(tmp_path / "my photos", [(96, 72)] * 4)
    args = ["fast3r", "--data", str(tmp_path / "my photos"), "--output-dir", str(tmp_path / "scene")]
    args += ["--model", str(tiny_model_dir), "--image-size", "64", "--num-downscales", "1", "--max-points", "2000"]
    result = subprocess.run(
        [*ns_process_data, *args], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "All DONE" in text and "Used 4 images" in text and "points to sparse_pc.ply" in text
    check_dataset(tmp_path / "scene", 4, (96, 72))


def test_fast3r_ns_process(tmp_path, tiny_model_dir, capsys):
    from fast3r_ns.cli import entrypoint

    write_images(tmp_path / "imgs", [(96, 72)] * 3)
    args = ["process", "--data", str(tmp_path / "imgs"), "--output-dir", str(tmp_path / "scene")]
    entrypoint([*args, "--model", str(tiny_model_dir), "--image-size", "64", "--num-downscales", "1"])
    assert "All DONE" in capsys.readouterr().out
    check_dataset(tmp_path / "scene", 3, (96, 72))
