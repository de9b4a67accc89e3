"""``write_dataset``: a library user's Reconstruction -> the dataset folder, read back by nerfstudio's parser."""

from __future__ import annotations

import json

import numpy as np
import pycolmap
import pytest
from PIL import Image
from synthetic_cameras import make_reconstruction, project_parsed, write_images

from fast3r_ns.dataset import COLMAP_DIR, PLY_NAME, write_dataset


def test_write_dataset_from_a_reconstruction(tmp_path) -> None:
    paths = write_images(tmp_path / "photos", [(64, 48)] * 3, suffix=".jpg") + write_images(
        tmp_path / "more", [(80, 60)], suffix=".png"
    )
    rec = make_reconstruction([(64, 48)] * 3 + [(80, 60)], shared=False, image_paths=paths)
    out = tmp_path / "scene"
    out.mkdir()
    write_dataset(rec, out, num_downscales=1)

    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["frame_00001.jpg", "frame_00002.jpg", "frame_00003.jpg", "frame_00004.png"]
    assert Image.open(out / "images_2" / "frame_00004.png").size == (40, 30)
    meta = json.loads((out / "transforms.json").read_text())
    assert [f["file_path"] for f in meta["frames"]] == [f"images/{n}" for n in names]
    assert meta["ply_file_path"] == PLY_NAME and (out / PLY_NAME).is_file()
    model = pycolmap.Reconstruction(str(out / COLMAP_DIR))
    assert sorted(image.name for image in model.images.values()) == names

    pytest.importorskip("nerfstudio")
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parsed = (
        NerfstudioDataParserConfig(data=out, load_3D_points=True, downscale_factor=1, eval_mode="all")
        .setup()
        .get_dataparser_outputs("train")
    )
    points = parsed.metadata["points3D_xyz"]
    mine = rec.point_image == 3
    projected = project_parsed(parsed.cameras, 3, points[np.flatnonzero(mine)])
    np.testing.assert_allclose(projected, rec.point_pixel[mine], atol=2e-3)


def test_write_dataset_refuses_a_wrong_image_count(tmp_path) -> None:
    rec = make_reconstruction([(64, 48)] * 2)
    from fast3r_ns.dataset import dataset_images

    with pytest.raises(ValueError, match="1 images for a reconstruction of 2"):
        write_dataset(rec, tmp_path, dataset_images(rec.image_paths[:1]))
