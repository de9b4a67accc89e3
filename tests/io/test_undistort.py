"""``fast3r-ns undistort``: COLMAP's undistorter turns an OPENCV (k1) model into a PINHOLE copy for 3DGS."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest
from synthetic_cameras import make_reconstruction, project, write_images

from fast3r_ns.cli import entrypoint
from fast3r_ns.errors import InputError
from fast3r_ns.io.colmap import write_colmap_model
from fast3r_ns.io.undistort import undistort_dataset

K1 = -0.08


def _distorted_dataset(root):
    """A dataset whose cameras have radial k1 and whose observations are the distorted projections."""
    rec = make_reconstruction([(96, 72)] * 4)
    rec.distortion = np.full(rec.num_images, K1)
    tracks = rec.tracks
    points = rec.points[np.repeat(tracks.point, np.diff(tracks.offsets))].astype(np.float64)
    for index in range(rec.num_images):
        rows = tracks.image == index
        pinhole = project(points[rows], rec.cam_to_world[index], rec.intrinsics[index])
        fx, fy, cx, cy = rec.intrinsics[index]
        normalized = (pinhole - [cx, cy]) / [fx, fy]
        distorted = normalized * (1 + K1 * np.square(normalized).sum(1, keepdims=True))
        tracks.pixel[rows] = distorted * [fx, fy] + [cx, cy]
    names = [p.name for p in write_images(root / "images", [(96, 72)] * 4)]
    write_colmap_model(root / "colmap/sparse/0", rec, names)
    return rec, names


def test_undistorted_copy_has_pinhole_cameras_and_consistent_tracks(tmp_path):
    rec, names = _distorted_dataset(tmp_path)
    source = pycolmap.Reconstruction(str(tmp_path / "colmap/sparse/0"))
    assert source.cameras[1].model.name == "OPENCV" and source.compute_mean_reprojection_error() < 1e-3

    entrypoint(["undistort", str(tmp_path)])
    out = tmp_path / "undistorted"
    model = pycolmap.Reconstruction(str(out / "sparse/0"))
    assert {camera.model.name for camera in model.cameras.values()} == {"PINHOLE"}
    assert sorted(image.name for image in model.images.values()) == names
    assert all((out / "images" / name).is_file() for name in names)
    assert model.num_points3D() == rec.tracks.num_tracks
    # The observations moved with the images: the PINHOLE cameras reproject the same points onto them.
    assert model.compute_mean_reprojection_error() < 0.05


def test_undistort_refuses_a_folder_without_a_model_and_an_existing_output(tmp_path):
    with pytest.raises(InputError, match="not a fast3r-ns dataset"):
        undistort_dataset(tmp_path)
    _distorted_dataset(tmp_path)
    (tmp_path / "undistorted").mkdir()
    with pytest.raises(InputError, match="already exists"):
        undistort_dataset(tmp_path)
