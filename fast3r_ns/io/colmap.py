"""Reconstruction -> a COLMAP sparse model (cameras, images, points3D .bin) written with pycolmap.

The 3D points are those of ``reconstruction.tracks`` seen by at least two images (tracks of ``--refine``, or the
pointmap tracks of ``fast3r_ns.colmap_tracks``), with all their observations (Point2Ds of those images); the
single-view points of the dense cloud are left out, since COLMAP's bundle adjuster requires two observations per
point (they stay in sparse_pc.ply). Cameras are PINHOLE (OPENCV with k1 where distortion was refined); one camera when
all images share size and intrinsics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..reconstruction import Reconstruction
from .transforms import shares_one_camera


def build_colmap_model(reconstruction: Reconstruction, image_names: list[str]):  # -> pycolmap.Reconstruction
    """A pycolmap.Reconstruction of the cameras and points; image_names are relative to the image folder."""
    import pycolmap

    if len(image_names) != reconstruction.num_images:
        raise ValueError(f"{len(image_names)} image names for {reconstruction.num_images} images")
    model = pycolmap.Reconstruction()
    shared = shares_one_camera(reconstruction)
    for index in range(1 if shared else reconstruction.num_images):
        width, height = (int(v) for v in reconstruction.image_sizes[index])
        fx, fy, cx, cy = (float(v) for v in reconstruction.intrinsics[index])
        if reconstruction.distortion is None:
            camera = pycolmap.Camera.create_from_model_name(index + 1, "PINHOLE", fx, width, height)
            camera.params = [fx, fy, cx, cy]
        else:
            camera = pycolmap.Camera.create_from_model_name(index + 1, "OPENCV", fx, width, height)
            camera.params = [fx, fy, cx, cy, float(reconstruction.distortion[index]), 0.0, 0.0, 0.0]
        model.add_camera_with_trivial_rig(camera)

    # Observations: the tracks of ``reconstruction.tracks`` that have >= 2 (COLMAP needs no less); sorted by image
    # to number each image's Point2Ds. The other points (one view each) stay in the PLY only.
    written, obs_point, obs_image, obs_pixel = multi_view_observations(reconstruction)
    order = np.lexsort((obs_point, obs_image))
    starts = np.searchsorted(obs_image[order], np.arange(reconstruction.num_images + 1))
    point2d_index = np.empty(len(order), dtype=np.int64)
    world_to_cam = reconstruction.world_to_cam
    for index, name in enumerate(image_names):
        rows = order[starts[index] : starts[index + 1]]
        point2d_index[rows] = np.arange(len(rows))
        keypoints = obs_pixel[rows].reshape(-1, 2)
        image = pycolmap.Image(name=name, keypoints=keypoints, camera_id=1 if shared else index + 1, image_id=index + 1)
        model.add_image_with_trivial_frame(image, pycolmap.Rigid3d(world_to_cam[index, :3, :4]))

    points = np.asarray(reconstruction.points, dtype=np.float64)[written]
    colors = np.asarray(reconstruction.colors, dtype=np.uint8)[written]
    by_point = np.argsort(obs_point, kind="stable")
    bounds = np.searchsorted(obs_point[by_point], np.arange(len(written) + 1)).tolist()
    image_ids, point2d = (obs_image[by_point] + 1).tolist(), point2d_index[by_point].tolist()
    for row in range(len(written)):
        track = pycolmap.Track()
        for k in range(bounds[row], bounds[row + 1]):
            track.add_element(image_ids[k], point2d[k])
        model.add_point3D(points[row], track, colors[row])
    model.update_point_3d_errors()
    return model


def multi_view_observations(reconstruction: Reconstruction) -> tuple[np.ndarray, ...]:
    """The points of the COLMAP model and their observations: rows of ``reconstruction.points`` [P] whose track
    has >= 2 observations, and per observation its point (0..P-1) [O], image [O] and original pixel [O, 2]."""
    tracks = reconstruction.tracks
    if tracks is None or not tracks.num_tracks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2))
    lengths = np.diff(tracks.offsets)
    multi = lengths >= 2
    rows = np.repeat(multi, lengths)
    obs_point = np.repeat(np.cumsum(multi) - 1, lengths)[rows]
    obs_image = np.asarray(tracks.image, dtype=np.int64)[rows]
    obs_pixel = np.asarray(tracks.pixel, dtype=np.float64).reshape(-1, 2)[rows]
    return np.asarray(tracks.point, dtype=np.int64)[multi], obs_point, obs_image, obs_pixel


def write_colmap_model(folder: str | Path, reconstruction: Reconstruction, image_names: list[str]) -> Path:
    """Write cameras.bin, images.bin, points3D.bin (and pycolmap's rigs.bin, frames.bin) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_colmap_model(reconstruction, image_names).write(str(folder))
    return folder
