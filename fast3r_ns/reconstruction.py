"""The result of a reconstruction: cameras of the original images and a coloured point cloud."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class PointTracks:
    """Multi-view observations of some points of a ``Reconstruction`` (the tracks of ``--refine``).

    Track t is point ``point[t]`` of the reconstruction, seen at rows ``offsets[t]:offsets[t + 1]``.
    """

    point: np.ndarray  # [T] int64, row of the point in Reconstruction.points
    offsets: np.ndarray  # [T + 1] int64
    image: np.ndarray  # [O] int32, image of each observation
    pixel: np.ndarray  # [O, 2] float32, (x, y) continuous coordinates in that original image

    @property
    def num_tracks(self) -> int:
        return len(self.point)


@dataclass
class Reconstruction:
    """Per-image cameras (original resolution, OpenCV axes) and a point cloud in the same world frame.

    Conventions are defined once in ``fast3r_ns.geometry.conventions``: camera axes x right, y down, z forward;
    pixel coordinates continuous with (0, 0) at the top-left corner of the image (COLMAP's convention);
    world frame = camera frame of image 0 up to the scale the network predicts.
    """

    image_paths: list[Path]
    image_sizes: np.ndarray  # [N, 2] int, (width, height) of the original images
    intrinsics: np.ndarray  # [N, 4] float64, (fx, fy, cx, cy) in original pixels
    cam_to_world: np.ndarray  # [N, 4, 4] float64, OpenCV camera axes
    view_confidence: np.ndarray  # [N] float, a per-view confidence summary (median global confidence)
    pose_ok: np.ndarray  # [N] bool, False where the pose could not be trusted (reported, never hidden)
    points: np.ndarray  # [M, 3] float32, world coordinates
    colors: np.ndarray  # [M, 3] uint8, RGB sampled from the original images
    point_confidence: np.ndarray  # [M] float32
    point_image: np.ndarray  # [M] int32, index of the image each point came from
    point_pixel: np.ndarray  # [M, 2] float32, (x, y) continuous coordinates in that original image
    shared_intrinsics: bool = False  # True when one camera was estimated for all images
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    pose_notes: list[str] = field(default_factory=list)  # [N] why a pose is not trusted ("" where pose_ok)
    focal_mode: str = ""  # how the intrinsics were estimated ("per-view", "shared" or "official")
    tracks: PointTracks | None = None  # multi-view observations of the refined points (None without --refine)
    distortion: np.ndarray | None = None  # [N] float64, radial k1 (OpenCV model) where refined, None = pinhole
    refine_stats: dict[str, float] = field(default_factory=dict)  # what the refinement did (empty without it)
    refine_unfixed: dict[int, str] = field(default_factory=dict)  # view -> why the refinement could not fix it
    chunk_report: list[dict] = field(default_factory=list)  # per pass when chunked (fast3r_ns.chunked.ChunkFit)

    @property
    def num_images(self) -> int:
        return len(self.image_paths)

    @property
    def world_to_cam(self) -> np.ndarray:
        """[N, 4, 4] inverse of ``cam_to_world``."""
        return np.linalg.inv(self.cam_to_world)
