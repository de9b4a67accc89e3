"""COLMAP model writer: pycolmap and nerfstudio's own binary reader read back cameras, poses and tracks."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest
from synthetic_cameras import make_reconstruction, project

from fast3r_ns.io.colmap import write_colmap_model


@pytest.mark.parametrize("shared", [True, False])
def test_pycolmap_round_trip(tmp_path, shared):
    sizes = [(64, 48)] * 4 if shared else [(64, 48), (48, 64), (64, 48)]
    rec = make_reconstruction(sizes=sizes, shared=shared)
    names = [f"frame_{i + 1:05d}.png" for i in range(rec.num_images)]
    folder = write_colmap_model(tmp_path / "sparse" / "0", rec, names)
    assert {"cameras.bin", "images.bin", "points3D.bin"} <= {p.name for p in folder.iterdir()}

    model = pycolmap.Reconstruction(str(folder))
    assert model.num_cameras() == (1 if shared else rec.num_images)
    assert model.num_reg_images() == rec.num_images
    assert model.num_points3D() == len(rec.points)
    for image_id, image in model.images.items():
        index = image_id - 1
        assert image.name == names[index]
        camera = model.cameras[image.camera_id]
        assert camera.model.name == "PINHOLE"
        assert (camera.width, camera.height) == tuple(rec.image_sizes[index])
        np.testing.assert_allclose(camera.params, rec.intrinsics[index], rtol=1e-12)
        np.testing.assert_allclose(image.cam_from_world().matrix(), rec.world_to_cam[index, :3], atol=1e-9)

    seen = np.zeros(len(rec.points), dtype=bool)
    for point_id, point in model.points3D.items():
        (element,) = point.track.elements
        index = element.image_id - 1
        xy = np.asarray(model.images[element.image_id].points2D[element.point2D_idx].xy)
        match = np.flatnonzero((rec.point_image == index) & np.all(np.abs(rec.point_pixel - xy) < 1e-4, axis=1))
        assert len(match) == 1
        row = match[0]
        seen[row] = True
        np.testing.assert_allclose(point.xyz, rec.points[row], atol=1e-6)
        np.testing.assert_array_equal(point.color, rec.colors[row])
        np.testing.assert_allclose(
            project(point.xyz[None], rec.cam_to_world[index], rec.intrinsics[index])[0], xy, atol=1e-3
        )
        assert point.error < 1e-3
        assert model.images[element.image_id].points2D[element.point2D_idx].point3D_id == point_id
    assert seen.all()


def test_nerfstudio_reader_reads_it(tmp_path):
    from nerfstudio.data.utils.colmap_parsing_utils import qvec2rotmat, read_cameras_binary, read_images_binary

    rec = make_reconstruction()
    folder = write_colmap_model(tmp_path, rec, [f"frame_{i + 1:05d}.png" for i in range(4)])
    cameras = read_cameras_binary(folder / "cameras.bin")
    images = read_images_binary(folder / "images.bin")
    assert list(cameras) == [1] and cameras[1].model == "PINHOLE"
    for image_id, image in images.items():
        np.testing.assert_allclose(qvec2rotmat(image.qvec), rec.world_to_cam[image_id - 1, :3, :3], atol=1e-9)
        np.testing.assert_allclose(image.tvec, rec.world_to_cam[image_id - 1, :3, 3], atol=1e-9)
        assert len(image.point3D_ids) == np.sum(rec.point_image == image_id - 1)
