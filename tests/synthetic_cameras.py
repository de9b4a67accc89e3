"""Hand-made reconstructions for tests: pinhole cameras on an arc looking at points whose pixels are exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fast3r_ns.reconstruction import PointTracks, Reconstruction
from fast3r_ns.testing.scene import look_at


def project(points: np.ndarray, cam_to_world: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """World points [M, 3] -> continuous pixels [M, 2] through an OpenCV camera (fx, fy, cx, cy)."""
    world_to_cam = np.linalg.inv(cam_to_world)
    cam = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    fx, fy, cx, cy = intrinsics
    return np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], axis=1)


def project_parsed(cameras, index: int, points) -> np.ndarray:
    """Pixels [M, 2] of world points (torch [M, 3]) through camera ``index`` of a nerfstudio ``Cameras``
    (OpenGL axes: x right, y up, looking down -z; camera_to_worlds [N, 3, 4])."""
    c2w = cameras.camera_to_worlds[index].double().numpy()
    cam = (points.double().numpy() - c2w[:, 3]) @ c2w[:, :3]
    fx, fy, cx, cy = (float(v[index]) for v in (cameras.fx, cameras.fy, cameras.cx, cameras.cy))
    return np.stack([fx * cam[:, 0] / -cam[:, 2] + cx, fy * -cam[:, 1] / -cam[:, 2] + cy], axis=1)


def make_reconstruction(
    sizes: list[tuple[int, int]] | None = None,
    shared: bool = True,
    points_per_image: int = 40,
    image_paths: list[Path] | None = None,
    seed: int = 0,
) -> Reconstruction:
    """Cameras on a half circle (radius 4, slightly above) looking at the origin; each image sees its own points.

    sizes: (W, H) per image (default four 64x48 images); shared: one set of intrinsics when sizes agree.
    Points are back-projected from random pixels at depths 3-5, so their pixels are exact.
    """
    rng = np.random.default_rng(seed)
    sizes = sizes or [(64, 48)] * 4
    num = len(sizes)
    cam_to_world, intrinsics = [], []
    for index, (width, height) in enumerate(sizes):
        angle = np.pi * index / max(num - 1, 1) - np.pi / 2
        center = np.array([4 * np.sin(angle), -1.0, -4 * np.cos(angle)])
        cam_to_world.append(look_at(center, np.array([0.0, 0.2, 0.0]), up=(0.0, -1.0, 0.0)))
        focal = 0.9 * max(width, height) * (1.0 if shared else 1.0 + 0.05 * index)
        intrinsics.append([focal, focal * (1.0 if shared else 1.01), width / 2 + 1.5, height / 2 - 0.75])
    cam_to_world, intrinsics = np.array(cam_to_world), np.array(intrinsics)

    points, pixels, owners = [], [], []
    for index, (width, height) in enumerate(sizes):
        xy = rng.uniform([0, 0], [width, height], size=(points_per_image, 2))
        depth = rng.uniform(3.0, 5.0, size=points_per_image)
        fx, fy, cx, cy = intrinsics[index]
        cam = np.stack([(xy[:, 0] - cx) / fx * depth, (xy[:, 1] - cy) / fy * depth, depth], axis=1)
        points.append(cam @ cam_to_world[index, :3, :3].T + cam_to_world[index, :3, 3])
        pixels.append(xy)
        owners.append(np.full(points_per_image, index))
    count = num * points_per_image
    rec = Reconstruction(
        image_paths=image_paths or [Path(f"view_{i}.png") for i in range(num)],
        image_sizes=np.array(sizes, dtype=np.int64),
        intrinsics=intrinsics,
        cam_to_world=cam_to_world,
        view_confidence=np.linspace(5.0, 3.0, num),
        pose_ok=np.ones(num, dtype=bool),
        points=np.concatenate(points).astype(np.float32),
        colors=rng.integers(0, 256, size=(count, 3), dtype=np.uint8),
        point_confidence=rng.uniform(1.0, 10.0, size=count).astype(np.float32),
        point_image=np.concatenate(owners).astype(np.int32),
        point_pixel=np.concatenate(pixels).astype(np.float32),
        shared_intrinsics=shared,
        timings={"inference": 0.01, "poses": 0.01},
    )
    rec.tracks = visible_tracks(rec)
    return rec


def visible_tracks(rec: Reconstruction) -> PointTracks:
    """Tracks of the points seen by two or more images: each image where the point projects inside the image, in
    front of the camera, at its exact pixel (the point's own image at its own pixel, first)."""
    rows, images, pixels = [], [], []
    for index in range(rec.num_images):
        xy = project(rec.points.astype(np.float64), rec.cam_to_world[index], rec.intrinsics[index])
        depth = (rec.points - rec.cam_to_world[index, :3, 3]) @ rec.cam_to_world[index, :3, 2]
        width, height = rec.image_sizes[index]
        inside = (depth > 0) & (xy >= 0).all(1) & (xy[:, 0] < width) & (xy[:, 1] < height)
        inside &= rec.point_image != index
        own = rec.point_image == index
        for chosen, pixel in ((own, rec.point_pixel), (inside, xy)):
            rows.append(np.flatnonzero(chosen))
            images.append(np.full(int(chosen.sum()), index))
            pixels.append(pixel[chosen])
    row, image, pixel = np.concatenate(rows), np.concatenate(images), np.concatenate(pixels)
    own_first = image != rec.point_image[row]
    order = np.lexsort((own_first, row))
    row, image, pixel = row[order], image[order], pixel[order]
    length = np.bincount(row, minlength=len(rec.points))
    keep = (length >= 2)[row]
    point = np.flatnonzero(length >= 2)
    return PointTracks(
        point=point.astype(np.int64),
        offsets=np.concatenate([[0], np.cumsum(length[point])]).astype(np.int64),
        image=image[keep].astype(np.int32),
        pixel=pixel[keep].astype(np.float32),
    )


def fake_reconstruct(images, predictor, options=None, progress=None) -> Reconstruction:
    """Stands in for ``fast3r_ns.pipeline.reconstruct``: a synthetic reconstruction sized like the real images."""
    if progress is not None:
        progress("synthetic reconstruction")
    sizes = [tuple(image.original_size) for image in images]
    shared = len(set(sizes)) == 1
    return make_reconstruction(sizes, shared=shared, image_paths=[image.path for image in images])


def write_images(folder: Path, sizes: list[tuple[int, int]], suffix: str = ".png", mode: str = "RGB") -> list[Path]:
    """Textured test images (a smooth gradient plus noise) of the given sizes; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(sizes))
    paths = []
    for index, (width, height) in enumerate(sizes):
        x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
        base = np.stack([x, y, (x + y) / 2], axis=-1) * 200 + rng.uniform(0, 55, size=(height, width, 3))
        image = Image.fromarray(base.astype(np.uint8)).convert(mode)
        path = folder / f"img_{index:02d}{suffix}"
        image.save(path)
        paths.append(path)
    return paths
