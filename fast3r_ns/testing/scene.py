"""Synthetic scenes with exact ground truth: textured spheres in a box room, pinhole cameras, ray casting.

Conventions as in ``fast3r_ns.geometry.conventions`` (OpenCV camera axes, continuous pixel coordinates,
camera-to-world poses). World "up" is +z.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..geometry.conventions import pixel_centers


@dataclass
class Camera:
    """A pinhole camera of the scene (original image resolution)."""

    width: int
    height: int
    intrinsics: np.ndarray  # [4] (fx, fy, cx, cy), continuous pixel coordinates
    cam_to_world: np.ndarray  # [4, 4] OpenCV axes

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the usual name of the matrix
        fx, fy, cx, cy = self.intrinsics
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@dataclass
class Scene:
    """Spheres inside an axis-aligned box room, every ray from inside the room hits something.

    Colours are a procedural texture of the 3-D hit point (checker + stripes, one base colour per object), so
    rendered images have texture for appearance-based consumers, and colours at 3-D points are known exactly.
    """

    sphere_centers: np.ndarray  # [S, 3]
    sphere_radii: np.ndarray  # [S]
    room_min: np.ndarray  # [3]
    room_max: np.ndarray  # [3]
    cameras: list[Camera] = field(default_factory=list)
    base_colors: np.ndarray | None = None  # [S + 6, 3] float in [0, 1]; spheres then the 6 walls

    def __post_init__(self) -> None:
        if self.base_colors is None:
            rng = np.random.default_rng(1234)
            self.base_colors = rng.uniform(0.25, 1.0, size=(len(self.sphere_radii) + 6, 3))

    @property
    def size(self) -> float:
        """Scene extent (the room diagonal), the unit of relative translation errors."""
        return float(np.linalg.norm(self.room_max - self.room_min))

    def cast(self, origin: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ray casting. origin [3] (inside the room), directions [N, 3] (any length) -> (t [N], object id [N]).

        Hit point = origin + t * direction (t in units of the given direction vectors).
        """
        d = np.asarray(directions, dtype=np.float64)
        o = np.asarray(origin, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(d > 0, self.room_max, self.room_min)  # [N, 3]
            t_axis = (bound - o) / d
        t_axis = np.where(np.isfinite(t_axis) & (t_axis > 0), t_axis, np.inf)
        axis = np.argmin(t_axis, axis=1)
        t = t_axis[np.arange(len(d)), axis]
        obj = len(self.sphere_radii) + 2 * axis + (d[np.arange(len(d)), axis] > 0)
        dd = np.einsum("nk,nk->n", d, d)
        for s, (center, radius) in enumerate(zip(self.sphere_centers, self.sphere_radii)):
            oc = o - center
            b = d @ oc  # [N]
            disc = b * b - dd * (oc @ oc - radius * radius)
            hit = disc > 0
            t_s = np.full(len(d), np.inf)
            t_s[hit] = (-b[hit] - np.sqrt(disc[hit])) / dd[hit]
            closer = (t_s > 1e-9) & (t_s < t)
            t = np.where(closer, t_s, t)
            obj = np.where(closer, s, obj)
        return t, obj

    def texture(self, points: np.ndarray, obj: np.ndarray) -> np.ndarray:
        """Colours [N, 3] float in [0, 1] of world points [N, 3] on objects ``obj`` [N]."""
        cells = np.floor(points * 2.0).astype(np.int64).sum(axis=1) % 2
        stripes = 0.5 + 0.5 * np.sin(7.0 * points[:, 0] + 5.0 * points[:, 1] + 3.0 * points[:, 2])
        shade = 0.45 + 0.35 * cells + 0.2 * stripes
        return np.clip(self.base_colors[obj] * shade[:, None], 0.0, 1.0)

    def cast_pixels(self, view: int, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cast the rays of camera ``view`` through continuous ORIGINAL-image coordinates xy [..., 2].

        Returns (points in that camera's frame [..., 3] (z = depth), world points [..., 3], object id [...]).
        """
        camera = self.cameras[view]
        fx, fy, cx, cy = camera.intrinsics
        flat = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        rays_cam = np.stack([(flat[:, 0] - cx) / fx, (flat[:, 1] - cy) / fy, np.ones(len(flat))], axis=1)
        rotation, center = camera.cam_to_world[:3, :3], camera.cam_to_world[:3, 3]
        t, obj = self.cast(center, rays_cam @ rotation.T)
        points_cam = rays_cam * t[:, None]
        points_world = points_cam @ rotation.T + center
        shape = np.shape(xy)[:-1]
        return points_cam.reshape(*shape, 3), points_world.reshape(*shape, 3), obj.reshape(shape)

    def render(self, view: int) -> dict[str, np.ndarray]:
        """Exact rendering at the pixel centres: depth [H, W], rgb [H, W, 3] uint8, points (camera frame)."""
        camera = self.cameras[view]
        points_cam, points_world, obj = self.cast_pixels(view, pixel_centers(camera.height, camera.width))
        colors = self.texture(points_world.reshape(-1, 3), obj.reshape(-1)).reshape(camera.height, camera.width, 3)
        return {
            "depth": points_cam[..., 2],
            "rgb": np.round(colors * 255.0).astype(np.uint8),
            "points_cam": points_cam,
            "points_world": points_world,
        }

    def write_images(self, directory: str | Path, prefix: str = "view") -> list[Path]:
        """Render every camera and write PNG files ``{prefix}{i:04d}.png``; returns their paths in view order."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for view in range(len(self.cameras)):
            path = directory / f"{prefix}{view:04d}.png"
            Image.fromarray(self.render(view)["rgb"]).save(path, compress_level=1)
            paths.append(path)
        return paths

    def cam_to_world_in_view0(self) -> np.ndarray:
        """[V, 4, 4] ground-truth poses expressed in camera 0's frame (the frame Fast3R's global head uses)."""
        world_to_cam0 = np.linalg.inv(self.cameras[0].cam_to_world)
        return np.stack([world_to_cam0 @ c.cam_to_world for c in self.cameras])


def look_at(center: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """[4, 4] camera-to-world (OpenCV axes) of a camera at ``center`` looking at ``target`` (world ``up``)."""
    forward = np.asarray(target, dtype=np.float64) - center
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = center
    return pose


def make_scene(
    num_views: int = 6,
    image_size: tuple[int, int] | list[tuple[int, int]] = (160, 120),
    focal_factors: float | list[float] = 1.0,
    arc_degrees: float = 90.0,
    principal_point_offset: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
) -> Scene:
    """A room (10 x 10 x 6) with four spheres; cameras on an arc at radius ~3.8 around the centre.

    image_size: (W, H) for all views or one per view. focal_factors: focal = factor * 0.9 * max(W, H) (about a
    58 degree horizontal field of view for 1.0), one value or one per view (mixed cameras / zoom).
    principal_point_offset: (dx, dy) of the principal point from the image centre, in pixels.
    Cameras look at the spheres' centre with a small random jitter (seeded).
    """
    rng = np.random.default_rng(seed)
    sizes = [image_size] * num_views if isinstance(image_size[0], int) else list(image_size)
    factors = [focal_factors] * num_views if np.isscalar(focal_factors) else list(focal_factors)
    if len(sizes) != num_views or len(factors) != num_views:
        raise ValueError("one image size and one focal factor per view (or a single value for all)")
    scene = Scene(
        sphere_centers=np.array([[0.0, 0.0, 0.0], [1.2, 0.9, -0.3], [-1.0, 1.1, 0.4], [0.3, -1.3, -0.2]]),
        sphere_radii=np.array([0.8, 0.45, 0.55, 0.5]),
        room_min=np.array([-5.0, -5.0, -2.0]),
        room_max=np.array([5.0, 5.0, 4.0]),
    )
    angles = np.deg2rad(np.linspace(-arc_degrees / 2, arc_degrees / 2, num_views)) - np.pi / 2
    for view, ((width, height), factor) in enumerate(zip(sizes, factors)):
        radius = 3.8 + rng.uniform(-0.3, 0.3)
        center = np.array([radius * np.cos(angles[view]), radius * np.sin(angles[view]), 1.0 + rng.uniform(-0.3, 0.3)])
        target = rng.normal(0.0, 0.2, size=3)
        focal = factor * 0.9 * max(width, height)
        intrinsics = np.array(
            [focal, focal, width / 2 + principal_point_offset[0], height / 2 + principal_point_offset[1]]
        )
        scene.cameras.append(Camera(width, height, intrinsics, look_at(center, target)))
    return scene
