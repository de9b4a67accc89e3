"""COLMAP model writer: pycolmap and nerfstudio's own binary reader read back cameras, poses and tracks."""

from __future__ import annotations

from dataclasses import replace

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
    tracks = rec.tracks
    assert model.num_points3D() == tracks.num_tracks  # only the points seen by >= 2 images
    for image_id, image in model.images.items():
        index = image_id - 1
        assert image.name == names[index]
        camera = model.cameras[image.camera_id]
        assert camera.model.name == "PINHOLE"
        assert (camera.width, camera.height) == tuple(rec.image_sizes[index])
        np.testing.assert_allclose(camera.params, rec.intrinsics[index], rtol=1e-12)
        np.testing.assert_allclose(image.cam_from_world().matrix(), rec.world_to_cam[index, :3], atol=1e-9)
        assert image.num_points3D == np.sum(tracks.image == index)

    by_xyz = {tuple(np.round(rec.points[row], 5)): t for t, row in enumerate(tracks.point)}
    seen = set()
    for point_id, point in model.points3D.items():
        t = by_xyz[tuple(np.round(point.xyz.astype(np.float32), 5))]
        seen.add(t)
        row = tracks.point[t]
        np.testing.assert_allclose(point.xyz, rec.points[row], atol=1e-6)
        np.testing.assert_array_equal(point.color, rec.colors[row])
        expected = slice(tracks.offsets[t], tracks.offsets[t + 1])
        assert [e.image_id - 1 for e in point.track.elements] == tracks.image[expected].tolist()
        for element, pixel in zip(point.track.elements, tracks.pixel[expected]):
            point2d = model.images[element.image_id].points2D[element.point2D_idx]
            assert point2d.point3D_id == point_id
            np.testing.assert_allclose(point2d.xy, pixel, atol=1e-4)
            camera = rec.cam_to_world[element.image_id - 1], rec.intrinsics[element.image_id - 1]
            np.testing.assert_allclose(project(point.xyz[None], *camera)[0], point2d.xy, atol=1e-3)
        assert point.error < 1e-3
    assert len(seen) == tracks.num_tracks


def test_single_view_points_stay_out_of_the_model(tmp_path):
    rec = make_reconstruction()
    tracks = rec.tracks
    # Track 0 loses all but its first observation: it is no longer a valid COLMAP point.
    keep = np.ones(len(tracks.image), dtype=bool)
    keep[tracks.offsets[0] + 1 : tracks.offsets[1]] = False
    lengths = np.diff(tracks.offsets) - np.r_[np.diff(tracks.offsets)[0] - 1, np.zeros(tracks.num_tracks - 1, int)]
    rec.tracks = replace(
        tracks, offsets=np.r_[0, np.cumsum(lengths)], image=tracks.image[keep], pixel=tracks.pixel[keep]
    )
    model = pycolmap.Reconstruction(str(write_colmap_model(tmp_path / "a", rec, [f"{i}.png" for i in range(4)])))
    assert model.num_points3D() == tracks.num_tracks - 1
    assert min(p.track.length() for p in model.points3D.values()) >= 2
    assert sum(p.track.length() for p in model.points3D.values()) == int(keep.sum()) - 1

    rec.tracks = None  # e.g. --no-colmap-tracks: cameras and images, no points
    model = pycolmap.Reconstruction(str(write_colmap_model(tmp_path / "b", rec, [f"{i}.png" for i in range(4)])))
    assert model.num_reg_images() == 4 and model.num_points3D() == 0


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
        assert len(image.point3D_ids) == np.sum(rec.tracks.image == image_id - 1)
