"""The coloured point cloud: confidence-filtered, voxel-thinned pointmap points, then the refined track points.

Every point keeps the image it came from and its pixel there (original-image coordinates, conventions), so the
COLMAP model and the report can trace it back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .geometry.points import PointSampler, confidence_mask, sample_colors
from .io.images import PreparedImage, open_rgb
from .predictions import Output, first_item
from .reconstruction import PointTracks

if TYPE_CHECKING:
    from .cameras import Cameras
    from .geometry.fusion import FusedView, FusionOptions
    from .geometry.tracks import Tracks
    from .options import PointOptions, ReconstructOptions

Progress = Callable[[str], None]


@dataclass
class PointCloud:
    points: np.ndarray  # [M, 3] float32 world points
    colors: np.ndarray  # [M, 3] uint8
    confidence: np.ndarray  # [M] float32
    image: np.ndarray  # [M] int32, view of each point
    pixel: np.ndarray  # [M, 2] float32, original-image pixel in that view
    view_confidence: np.ndarray  # [V] median global confidence of each view
    tracks: PointTracks | None = None  # multi-view observations of the appended track points


def build_point_cloud(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: Cameras,
    options: ReconstructOptions,
    device: torch.device,
    progress: Progress | None = None,
    tracks: Tracks | None = None,
    track_pixels: np.ndarray | None = None,
    fused: Sequence[FusedView] | None = None,
) -> PointCloud:
    """Dense points of the pointmaps (or of the ``fused`` depth maps, ``fuse_dense``), then the (refined)
    ``tracks`` points with their observations at ``track_pixels`` (original-image pixels, one row per
    observation); colours from the images."""
    points, conf, view, network_xy, view_confidence = _dense_points(
        images, predictions, cameras, options, device, progress, fused
    )
    point_tracks = None
    if tracks is not None and tracks.num_tracks:
        first = tracks.offsets[:-1]
        members = np.maximum(np.diff(tracks.offsets), 1)
        point_tracks = PointTracks(
            point=np.arange(len(points), len(points) + tracks.num_tracks, dtype=np.int64),
            offsets=tracks.offsets.astype(np.int64),
            image=tracks.view.astype(np.int32),
            pixel=np.asarray(track_pixels, dtype=np.float32),
        )
        points = np.concatenate([points, tracks.points.astype(np.float32)])
        conf = np.concatenate([conf, (np.add.reduceat(tracks.confidence, first) / members).astype(np.float32)])
        view = np.concatenate([view, tracks.view[first]])  # a track point's colour: its first observation
        network_xy = np.concatenate([network_xy, tracks.pixel[first]])
    pixels, colors = _pixels_and_colors(images, view, network_xy, options.points)
    return PointCloud(points, colors, conf, view.astype(np.int32), pixels, view_confidence, point_tracks)


def _dense_points(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: Cameras,
    options: ReconstructOptions,
    device: torch.device,
    progress: Progress | None,
    fused: Sequence[FusedView] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(points, confidence, view, network pixel centre) of the thinned cloud and each view's median confidence."""
    count = len(images)
    points_options = options.points
    per_view_cap = int(math.ceil(4 * points_options.max_points / count))
    sampler = PointSampler(per_view_cap, seed=points_options.seed)
    use_local = points_options.point_source == "local" and options.cameras.focal_mode != "official"
    view_confidence = np.empty(count)
    for view, prediction in enumerate(predictions):
        conf = first_item(prediction["conf"]).reshape(-1).to(device, torch.float32)
        view_confidence[view] = float(conf.nanmedian())
        if points_options.drop_untrusted_views and cameras.notes[view]:
            continue
        if fused is not None:  # already confidence-gated and finite (fuse_dense)
            index = fused[view].index.to(device)
            sampler.add(view, fused[view].points.to(device), conf[index], index)
        else:
            mask = confidence_mask(conf[None], points_options.conf_percentile, points_options.min_confidence)[0]
            if use_local:
                pose = torch.from_numpy(cameras.cam_to_world[view]).to(device)
                local = first_item(prediction["pts3d_local"]).reshape(-1, 3).to(device, torch.float32)
                points = float(cameras.scale[view]) * local @ pose[:3, :3].T.float() + pose[:3, 3].float()
            else:
                points = first_item(prediction["pts3d_in_other_view"]).reshape(-1, 3).to(device, torch.float32)
            mask &= torch.isfinite(points).all(-1)
            index = mask.nonzero()[:, 0]
            sampler.add(view, points[index], conf[index], index)
        if progress and (view + 1) % options.chunk_views == 0:
            progress(f"points: {view + 1}/{count} views")
    points, conf, view_index, pixel_index = sampler.finish(points_options.max_points, device)
    view_np, pixel_np = view_index.numpy().astype(np.int64), pixel_index.numpy().astype(np.int64)
    widths = np.array([image.size[0] for image in images], dtype=np.int64)
    network_xy = np.stack([pixel_np % widths[view_np] + 0.5, pixel_np // widths[view_np] + 0.5], axis=-1)
    return points.numpy(), conf.numpy(), view_np, network_xy, view_confidence


def _pixels_and_colors(
    images: Sequence[PreparedImage], view: np.ndarray, network_xy: np.ndarray, options: PointOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Original-image pixel and RGB of every point (network pixel ``network_xy`` in image ``view``)."""
    count = len(images)
    pixels = np.empty((len(view), 2), dtype=np.float32)
    colors = np.empty((len(view), 3), dtype=np.uint8)
    order = np.argsort(view, kind="stable")
    bounds = np.searchsorted(view[order], np.arange(count + 1))

    def fill(index: int) -> None:
        rows = order[bounds[index] : bounds[index + 1]]
        if not len(rows):
            return
        image = images[index]
        original_xy = image.to_original(network_xy[rows])
        pixels[rows] = original_xy
        if options.colors == "original":
            colors[rows] = sample_colors(np.asarray(open_rgb(image.path)), original_xy)
        else:
            height, width = image.size[1], image.size[0]
            col = np.clip(np.floor(network_xy[rows, 0]).astype(np.int64), 0, width - 1)
            row = np.clip(np.floor(network_xy[rows, 1]).astype(np.int64), 0, height - 1)
            rgb = image.tensor[0].reshape(3, -1)[:, torch.from_numpy(row * width + col)].T
            colors[rows] = ((rgb + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()

    # Decoding the original images dominates for large inputs; PIL releases the GIL while decoding.
    with ThreadPoolExecutor(max_workers=max(1, options.io_workers)) as pool:
        list(pool.map(fill, range(count)))
    return pixels, colors


def fuse_dense(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: Cameras,
    tracks: Tracks,
    options: PointOptions,
    device: torch.device,
    fusion: FusionOptions | None = None,
    flows: dict | None = None,
) -> tuple[list[FusedView], dict[str, float]]:
    """Per-view fused dense points (``geometry.fusion``) after the refinement: each view's LOCAL depth (free of the
    global pointmap's per-view misplacement) on its refined camera, scaled to the world by the refined track points
    it observes, confirmed and averaged across the neighbours the refinement matched. With the refinement's
    ``flows`` (``FlowCache.dense``: flow targets of each view's half grid in its neighbours), the fusion runs on the
    half grids (pixels (2r, 2c)) and their depth is triangulated from the flows where it can be
    (``fusion.triangulated_depths``). Also returns the stats ``fusion_tolerance`` and ``fusion_triangulated``
    (share of the pixels with a triangulated depth)."""
    from .cameras import network_intrinsics
    from .geometry.fusion import FusionOptions, fuse_depths, neighbours_of, triangulated_depths

    network = network_intrinsics(images, cameras.intrinsics)
    observed = _observations_by_view(tracks, len(images))
    depths = []
    for view, prediction in enumerate(predictions):
        local = first_item(prediction["pts3d_local"])[..., 2].to(device, torch.float64)
        conf = first_item(prediction["conf"]).to(device, torch.float32)
        mask = confidence_mask(conf.reshape(1, -1), options.conf_percentile, options.min_confidence)[0]
        mask = mask.reshape(local.shape) & (local > 0)
        if options.drop_untrusted_views and cameras.notes[view]:
            mask[:] = False
        scale = _world_scale(view, local, first_item(prediction["pts3d_in_other_view"]), cameras, observed[view])
        depths.append(torch.where(mask, local * scale, torch.full_like(local, float("nan"))).float())
    neighbours = neighbours_of(tracks.pairs, len(images))
    per_view = int(math.ceil(6 * options.max_points / len(images)))  # the sampler keeps 4x, some fail the check
    fusion = fusion or FusionOptions()
    if not flows:
        fused, tolerance = fuse_depths(depths, network, cameras.cam_to_world, neighbours, fusion, device, per_view)
        return fused, {"fusion_tolerance": tolerance, "fusion_triangulated": 0.0}
    grid = network.astype(np.float64).copy()  # grid pixel (r, c) is the network pixel (2r, 2c)
    grid[:, :2] /= 2.0
    grid[:, 2:] = (grid[:, 2:] + 0.5) / 2.0
    priors = [depth[::2, ::2] for depth in depths]
    depths, share = triangulated_depths(priors, flows, grid, network, cameras.cam_to_world, fusion, device)
    fused, tolerance = fuse_depths(depths, grid, cameras.cam_to_world, neighbours, fusion, device, per_view)
    for view, (item, depth) in enumerate(zip(fused, depths)):
        width, grid_width = images[view].size[0], depth.shape[1]
        item.index = 2 * (item.index // grid_width) * width + 2 * (item.index % grid_width)
    return fused, {"fusion_tolerance": tolerance, "fusion_triangulated": share}


def _observations_by_view(tracks: Tracks, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per view: (track points [n, 3], network pixels [n, 2]) of its observations."""
    order = np.argsort(tracks.view, kind="stable")
    bounds = np.searchsorted(tracks.view[order], np.arange(count + 1))
    points = tracks.points[tracks.track]
    rows = [order[bounds[v] : bounds[v + 1]] for v in range(count)]
    return [(points[r], tracks.pixel[r]) for r in rows]


def _world_scale(
    view: int, local: torch.Tensor, world: torch.Tensor, cameras: Cameras, observed: tuple[np.ndarray, np.ndarray]
) -> float:
    """Local depth -> world depth of one view: the median ratio of the refined track points' depth in the view's
    camera to the local depth at their ``observed`` pixels (>= 16 of them), else of the global points' depth."""
    rotation = torch.as_tensor(cameras.cam_to_world[view, :3, :3], device=local.device, dtype=torch.float64)
    center = torch.as_tensor(cameras.cam_to_world[view, :3, 3], device=local.device, dtype=torch.float64)
    height, width = local.shape
    track_points, track_pixels = observed
    if len(track_points) >= 16:
        points = torch.as_tensor(track_points, device=local.device, dtype=torch.float64)
        pixel = np.floor(track_pixels).astype(np.int64)
        col, row = np.clip(pixel[:, 0], 0, width - 1), np.clip(pixel[:, 1], 0, height - 1)
        theirs = ((points - center) @ rotation)[:, 2]
        mine = local[torch.as_tensor(row), torch.as_tensor(col)]
    else:
        theirs = ((world.reshape(-1, 3).to(local.device, torch.float64) - center) @ rotation)[:, 2]
        mine = local.reshape(-1)
    ratio = theirs / mine
    ratio = ratio[torch.isfinite(ratio) & (ratio > 0)]
    return float(ratio.median()) if len(ratio) else float(cameras.scale[view])
