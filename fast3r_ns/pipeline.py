"""``reconstruct``: images -> predictor -> cameras of the original images and a coloured point cloud.

The options (``ReconstructOptions``, re-exported here) live in ``fast3r_ns.options``.

Conventions (pixels, axes, poses, intrinsics of the original image): ``fast3r_ns.geometry.conventions``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import numpy as np
import torch

from .cameras import Cameras, recover_cameras
from .chunked import chunked_if_needed
from .geometry.fusion import FusedView
from .io.images import PreparedImage
from .options import ReconstructOptions
from .point_cloud import build_point_cloud, fuse_dense
from .predictions import Output, Predictor, first_item
from .reconstruction import Reconstruction
from .refinement import Refined, colmap_model_tracks, refine_cameras

Progress = Callable[[str], None]
T = TypeVar("T")

__all__ = ["ReconstructOptions", "reconstruct", "reconstruct_from_predictions"]


def reconstruct(
    images: list[PreparedImage],
    predictor: Predictor,
    options: ReconstructOptions | None = None,
    progress: Progress | None = None,
) -> Reconstruction:
    """Run ``predictor`` on the prepared images (batch 1) and recover cameras and a point cloud."""
    options = options or ReconstructOptions()
    start = time.perf_counter()
    if progress:
        progress(f"predicting pointmaps of {len(images)} images")
    views = [image.tensor for image in images]
    predictor = chunked_if_needed(predictor, views, options.max_views_per_pass, options.anchor_views, progress)
    predictions = predictor(views)
    predict_seconds = time.perf_counter() - start
    result = reconstruct_from_predictions(images, predictions, options, progress)
    result.timings = {"predict": predict_seconds, **result.timings}
    result.chunk_report = [fit.as_dict() for fit in getattr(predictor, "chunk_report", None) or []]
    return result


def reconstruct_from_predictions(
    images: list[PreparedImage],
    predictions: list[Output],
    options: ReconstructOptions | None = None,
    progress: Progress | None = None,
) -> Reconstruction:
    """Cameras (intrinsics of the original images, camera-to-world poses) and a point cloud from predictions.

    predictions: one dict per image with keys ``fast3r_ns.predictions.PREDICTION_KEYS`` (batch size 1 is used).
    """
    options = options or ReconstructOptions()
    _check_grids(images, predictions)
    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    timings: dict[str, float] = {}
    step = partial(_timed, timings)

    cameras = step("cameras", recover_cameras, images, predictions, options, device, progress)
    refined: Refined | None = None
    if options.refine.enabled:
        refined = step("refine", refine_cameras, images, predictions, cameras, options, progress)
    elif options.points.colmap_tracks:
        refined = step("tracks", colmap_model_tracks, images, predictions, cameras, options, progress)
    fused = None
    if options.refine.enabled and options.points.fuse is not False and refined and refined.tracks.num_tracks:
        fused = step("fuse", _fused, images, predictions, cameras, refined, options, device, progress)
    tracks = (refined.tracks, refined.original_pixel) if refined is not None else (None, None)
    cloud = step("points", build_point_cloud, images, predictions, cameras, options, device, progress, *tracks, fused)
    return _reconstruction(images, predictions, options, cameras, refined, cloud, timings)


def _timed(timings: dict[str, float], name: str, stage: Callable[..., T], *args) -> T:
    start = time.perf_counter()
    result = stage(*args)
    timings[name] = time.perf_counter() - start
    return result


def _check_grids(images: list[PreparedImage], predictions: list[Output]) -> None:
    if len(images) != len(predictions) or not images:
        raise ValueError(f"{len(images)} images but {len(predictions)} predictions")
    for index, (image, prediction) in enumerate(zip(images, predictions)):
        width, height = image.size
        if tuple(prediction["pts3d_in_other_view"].shape[-3:-1]) != (height, width):
            raise ValueError(f"prediction {index} does not have the {width}x{height} grid of its image")


def _fused(images, predictions, cameras: Cameras, refined: Refined, options, device, progress) -> list[FusedView]:
    if progress:
        progress("points: fusing the depth maps with the refined cameras")
    flows, refined.dense_flows = refined.dense_flows, {}  # freed after the fusion
    fused, stats = fuse_dense(images, predictions, cameras, refined.tracks, options.points, device, None, flows)
    refined.stats |= stats
    return fused


def _reconstruction(images, predictions, options, cameras: Cameras, refined: Refined | None, cloud, timings):
    return Reconstruction(
        image_paths=[image.path for image in images],
        image_sizes=np.array([image.original_size for image in images], dtype=np.int64),
        intrinsics=cameras.intrinsics,
        cam_to_world=cameras.cam_to_world,
        view_confidence=cloud.view_confidence,
        pose_ok=np.array([note == "" for note in cameras.notes]),
        points=cloud.points,
        colors=cloud.colors,
        point_confidence=cloud.confidence,
        point_image=cloud.image,
        point_pixel=cloud.pixel,
        shared_intrinsics=options.cameras.focal_mode in ("shared", "official"),
        timings=timings,
        pose_notes=cameras.notes,
        focal_mode=options.cameras.focal_mode,
        tracks=cloud.tracks,
        distortion=None if refined is None else refined.distortion,
        refine_stats=refined.stats if refined is not None else {},
        confidence_maps=[first_item(p["conf"])[::4, ::4].float().cpu().numpy() for p in predictions],
        refine_unfixed=refined.unfixed if refined is not None else {},
    )
