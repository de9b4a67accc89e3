"""``reconstruct``: images -> predictor -> cameras of the original images and a coloured point cloud.

Conventions (pixels, axes, poses, intrinsics of the original image): ``fast3r_ns.geometry.conventions``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from .cameras import Cameras, recover_cameras
from .chunked import chunked_if_needed
from .geometry.conventions import intrinsics_to_network
from .geometry.tracks import Tracks, build_tracks, sample_view, subpixel_observations
from .io.images import PreparedImage
from .point_cloud import build_point_cloud
from .predictions import Output, Predictor, first_item
from .reconstruction import Reconstruction

Progress = Callable[[str], None]


@dataclass
class ReconstructOptions:
    """How cameras and the point cloud are recovered from the pointmaps."""

    focal_mode: Literal["per-view", "shared", "official"] = "per-view"
    """"per-view": one focal per image from its local pointmap (mixed cameras, zoom); "shared": one focal for all
    images, in original pixels (say so when one camera took every image); "official": the official Fast3R recovery
    (view 0's focal for every view, OpenCV PnP-RANSAC per view; needs OpenCV), for comparison. Default is
    "per-view"."""
    conf_percentile: float = 10.0
    """Drop the lowest X percent confidence pixels of each view from the point cloud. Default is 10.0."""
    min_confidence: float = 1.5
    """Absolute floor on the global confidence (which is >= 1) for points of the cloud. Default is 1.5."""
    max_points: int = 500_000
    """Voxel-thin the cloud to about this many points (a good size to initialise splatfacto). Default is 500_000."""
    device: str | None = None
    """Torch device for the geometry; None picks "cuda" when available, else "cpu". Default is None."""
    solver_points: int = 8192
    """Pixels per view (a regular grid subsample) used to estimate focal and pose. Default is 8192."""
    solver_conf_percentile: float = 10.0
    """Ignore the lowest X percent confidence pixels of each view when estimating cameras. Default is 10.0."""
    pose_iterations: int = 6
    """Reweighting rounds of the robust pose fit. Default is 6."""
    max_residual: float = 0.15
    """A pose is not trusted when the median local-to-global residual exceeds this fraction of the point's
    distance to the camera. Default is 0.15."""
    min_inlier_fraction: float = 0.5
    """A pose is not trusted when fewer than this (confidence-weighted) fraction of points are inliers.
    Default is 0.5."""
    min_pose_points: int = 32
    """A pose is not trusted when fewer usable points remain. Default is 32."""
    focal_range: tuple[float, float] = (0.1, 10.0)
    """Plausible focal lengths as multiples of the original image's long side; outside, the view is not trusted.
    Default is (0.1, 10.0)."""
    refine_poses: bool = False
    """After the local->global fit, refine each pose by robust Gauss-Newton on the reprojection error of the
    global points (a PnP refinement with the estimated focal); makes the cameras agree with the global cloud when
    the two heads disagree. Default is False."""
    point_source: Literal["global", "local"] = "global"
    """Cloud from the global pointmap, or from each local pointmap moved by its estimated pose ("official" mode
    always uses the global one). Default is "global"."""
    drop_untrusted_views: bool = True
    """Leave views whose pose is not trusted out of the point cloud. Default is True."""
    colors: Literal["original", "network"] = "original"
    """Point colours from the original image files, or from the network input (no file reads). Default is
    "original"."""
    io_workers: int = 8
    """Threads reading the original images for the point colours. Default is 8."""
    chunk_views: int = 64
    """Views processed together (bounds memory for long sequences). Default is 64."""
    pnp_iterations: int = 100
    """RANSAC iterations of the "official" mode's PnP (the official demo uses 100). Default is 100."""
    official_principal_point: Literal["official", "centered"] = "official"
    """Principal point of the "official" mode: "official" reproduces the official (W/2, H/2) on the integer pixel
    grid, half a pixel off the image centre in continuous coordinates; "centered" puts it at the original image
    centre (what the other modes assume), to separate that offset from the rest of the official method.
    Default is "official"."""
    seed: int = 0
    """Seed of the point subsampling. Default is 0."""
    refine: bool = False
    """Refine cameras and points by bundle adjustment (pycolmap, ``fast3r_ns.refine``) on multi-view tracks (see
    ``refine_tracks``); the refined track points join the cloud and the COLMAP model keeps their tracks.
    Default is False."""
    refine_tracks: Literal["pointmaps", "flow"] = "flow"
    """Where the refinement's correspondences come from. "pointmaps": pixels whose global 3-D points coincide
    (``geometry.tracks``; they inherit each view's pointmap misplacement); "flow": the cameras are first refined
    on "pointmaps" tracks, then DIS optical flow of each candidate pair started from the pointmaps' prediction,
    kept where forward and backward flows agree (``geometry.flow``; needs OpenCV), with free track points; better
    cameras on both splat scenes, about twice the time. Default is "flow"."""
    refine_large_views: int = 300
    """Scenes with more views than this get the large-scene values of the refinement options left at None/"auto"
    (cheaper per view, so that 1000 views refine in minutes on a CPU; docs/refine.md); smaller scenes get the
    values measured on the splat scenes. Default is 300."""
    refine_flow_preset: Literal["auto", "ultrafast", "fast", "medium"] = "auto"
    """"flow": DIS optical flow preset; "auto": "medium", "fast" above ``refine_large_views``. Default is
    "auto"."""
    refine_flow_stride: int | None = None
    """"flow": grid step of the anchor pixels (network pixels); None: 8, 16 above ``refine_large_views``.
    Default is None."""
    refine_flow_pair_matches: int | None = None
    """"flow": most correspondences kept per directed view pair; None: 1024, 256 above
    ``refine_large_views``. Default is None."""
    refine_flow_min_observations: int = 40
    """"flow": the cameras are first refined on pointmap tracks; a view with fewer flow observations in tracks of
    three or more views keeps that camera's pose in the flow adjustment. Default is 40."""
    refine_focal: Literal["grouped", "per-view", "fixed"] = "grouped"
    """Focal lengths in the bundle adjustment: "grouped" shares one focal among images of the same size whose
    focal estimates agree within ``refine_focal_tolerance`` (one camera; with focal_mode "shared"/"official"
    that is all images), "per-view" refines one per image, "fixed" keeps them. Default is "grouped"."""
    refine_focal_tolerance: float = 0.02
    """"grouped": relative focal difference below which images count as one camera. Default is 0.02."""
    refine_samples: int | None = None
    """"pointmaps" (and the first stage of "flow"): grid samples per view that may become track observations;
    None: 2048, 1024 above ``refine_large_views``. Default is None."""
    refine_neighbors: int = 10
    """Each view is matched with this many nearest views (camera centre and viewed points). Default is 10."""
    refine_pair_matches: int = 256
    """At most this many matches per view pair (the closest in 3-D). Default is 256."""
    refine_principal_point: bool = False
    """Also refine the principal points. Default is False."""
    refine_distortion: bool = False
    """Also refine one radial distortion coefficient k1 per camera (COLMAP's SIMPLE_RADIAL in the adjustment;
    written as OpenCV k1 to transforms.json and the COLMAP model). For lenses with visible distortion; the dense
    cloud stays undistorted (the pointmaps are). Default is False."""
    refine_points: bool | None = None
    """Let the track points move in the bundle adjustment (classic bundle adjustment). Off, they stay at the
    pointmaps' 3-D positions and only the cameras move, which keeps the pointmaps' drift-free global shape but also
    their local errors. None: free with "flow" tracks up to ``refine_large_views`` views, constant above it and with
    "pointmaps" tracks (free points let long sequences bend: on the synthetic 300-degree arcs, 4x larger rotation
    errors with pointmap tracks, 8-10x with flow tracks at 400 and 1000 views; docs/refine.md). Default is None."""
    refine_max_error: float = 4.0
    """Observations reprojecting farther than this (original-image pixels) are dropped between the rounds of the
    bundle adjustment. Default is 4.0."""
    refine_iterations: int | None = None
    """Ceres iterations per bundle-adjustment round (two rounds); None: 50, 25 above
    ``refine_large_views``. Default is None."""
    refine_threads: int = -1
    """Threads of the bundle adjustment; -1 uses every core. Default is -1."""
    max_views_per_pass: int | None = None
    """Most views in one predictor call; more are predicted in overlapping passes that share anchor views and are
    merged by robust similarity fits (``fast3r_ns.chunked``). None: all views in one pass unless the predictor says
    they do not fit (``Fast3RPredictor`` estimates it from the free GPU memory; never on the CPU). Default is
    None."""
    anchor_views: int = 8
    """Views shared by every pass when chunked (view 0 and views spread over the sequence; at most a quarter of a
    pass). Default is 8."""


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
    if len(images) != len(predictions) or not images:
        raise ValueError(f"{len(images)} images but {len(predictions)} predictions")
    for index, (image, prediction) in enumerate(zip(images, predictions)):
        width, height = image.size
        if tuple(prediction["pts3d_in_other_view"].shape[-3:-1]) != (height, width):
            raise ValueError(f"prediction {index} does not have the {width}x{height} grid of its image")
    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    timings = {}

    start = time.perf_counter()
    cameras = recover_cameras(images, predictions, options, device, progress)
    timings["cameras"] = time.perf_counter() - start

    refined: _Refined | None = None
    if options.refine:
        start = time.perf_counter()
        refined = _refine(images, predictions, cameras, options, progress)
        timings["refine"] = time.perf_counter() - start

    start = time.perf_counter()
    tracks = (refined.tracks, refined.original_pixel) if refined is not None else (None, None)
    cloud = build_point_cloud(images, predictions, cameras, options, device, progress, *tracks)
    timings["points"] = time.perf_counter() - start

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
        shared_intrinsics=options.focal_mode in ("shared", "official"),
        timings=timings,
        pose_notes=cameras.notes,
        focal_mode=options.focal_mode,
        tracks=cloud.tracks,
        distortion=None if refined is None else refined.distortion,
        refine_stats=refined.stats if refined is not None else {},
        confidence_maps=[first_item(p["conf"])[::4, ::4].float().cpu().numpy() for p in predictions],
    )


@dataclass
class _Refined:
    tracks: Tracks  # refined track points; pixels in NETWORK coordinates
    original_pixel: np.ndarray  # [O, 2] the observations in original-image pixels
    stats: dict[str, float]
    distortion: np.ndarray | None = None  # [V] refined radial k1 (None when not refined)


def _refine(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: Cameras,
    options: ReconstructOptions,
    progress: Progress | None,
) -> _Refined:
    """Tracks (flow or pointmaps), bundle adjustment; updates ``cameras`` in place (see ``fast3r_ns.refine``)."""
    from .refine import BundleOptions, bundle_adjust, reprojection_errors

    options = resolve_refine_options(options, len(images))
    start = time.perf_counter()
    first_stage: dict[str, float] = {}
    if options.refine_tracks == "flow":
        # Pointmap tracks first: flow predictions from better cameras, and a fallback pose for weak views.
        pointmap_result = _refine(images, predictions, cameras, replace(options, refine_tracks="pointmaps"), progress)
        first_stage = pointmap_result.stats
        start = time.perf_counter()
    if progress:
        progress(f"refine: {options.refine_tracks} tracks over {len(images)} views")
    held = np.zeros(len(images), dtype=bool)
    if options.refine_tracks == "flow":
        tracks = _flow_tracks(images, predictions, cameras, options)
        multi_view = np.diff(tracks.offsets)[tracks.track] >= 3
        counts = np.bincount(tracks.view[multi_view], minlength=len(images))
        held = counts < options.refine_flow_min_observations
        if held.all():  # e.g. textureless images: the pointmap stage is the result
            return pointmap_result
    elif options.refine_tracks == "pointmaps":
        tracks = _pointmap_tracks(predictions, cameras, options)
    else:
        raise ValueError(f"unknown refine_tracks {options.refine_tracks!r}")
    original = _to_original(images, tracks)
    track_seconds = time.perf_counter() - start
    if progress:
        progress(f"refine: bundle adjustment of {tracks.num_tracks} tracks ({len(tracks.view)} observations)")
    sizes = np.array([image.original_size for image in images])
    free_points = options.refine_points if options.refine_points is not None else options.refine_tracks != "pointmaps"
    bundle_options = BundleOptions(
        refine_focal=options.refine_focal != "fixed",
        refine_principal_point=options.refine_principal_point,
        refine_distortion=options.refine_distortion,
        refine_points=free_points,
        camera_groups=_camera_groups(sizes, cameras.intrinsics, options),
        constant_poses=held,
        max_reprojection_error=options.refine_max_error,
        max_iterations=options.refine_iterations,
        num_threads=options.refine_threads,
    )
    points = tracks.points[tracks.track]
    before = reprojection_errors(cameras.intrinsics, cameras.cam_to_world, points, tracks.view, original)
    result = bundle_adjust(
        sizes,
        cameras.intrinsics,
        cameras.cam_to_world,
        tracks.points,
        tracks.offsets,
        tracks.view,
        original,
        bundle_options,
    )
    cameras.intrinsics, cameras.cam_to_world = result.intrinsics, result.cam_to_world
    tracks.points = result.points
    ok = result.observation_ok & np.isfinite(result.points).all(-1)[tracks.track]
    distortion = result.distortion if options.refine_distortion else None
    after = reprojection_errors(
        result.intrinsics,
        result.cam_to_world,
        result.points[tracks.track][ok],
        tracks.view[ok],
        original[ok],
        distortion,
    )
    kept = tracks.select(ok)
    stats = {
        "tracks_seconds": track_seconds,
        **result.stats,
        "candidate_pairs": float(len(tracks.pairs)),
        "tracks": float(tracks.num_tracks),
        "observations": float(len(tracks.view)),
        "reprojection_err_px_before": float(np.median(before)),
        "reprojection_err_px_after": float(np.median(after)) if len(after) else float("nan"),
        "mean_track_length": float(np.diff(tracks.offsets).mean()) if tracks.num_tracks else 0.0,
        "held_views": float(held.sum()),
        **{f"pointmaps_{key}": value for key, value in first_stage.items() if key.endswith("seconds")},
    }
    return _Refined(kept, original[ok], stats, distortion)


# Values of the None/"auto" refinement options: (up to ``refine_large_views`` views, above).
REFINE_AUTO_VALUES = {
    "refine_points": (None, False),
    "refine_flow_preset": ("medium", "fast"),
    "refine_flow_stride": (8, 16),
    "refine_flow_pair_matches": (1024, 256),
    "refine_samples": (2048, 1024),
    "refine_iterations": (50, 25),
}


def resolve_refine_options(options: ReconstructOptions, views: int) -> ReconstructOptions:
    """``options`` with the None/"auto" refinement options replaced by their values for ``views`` views."""
    large = views > options.refine_large_views
    values = {key: pair[large] for key, pair in REFINE_AUTO_VALUES.items() if getattr(options, key) in (None, "auto")}
    return replace(options, **values)


def _flow_tracks(
    images: Sequence[PreparedImage], predictions: Sequence[Output], cameras: Cameras, options: ReconstructOptions
) -> Tracks:
    """Tracks of grid pixels and their forward-backward consistent optical flow in the neighbours
    (``geometry.flow``)."""
    from .geometry.flow import FlowOptions, flow_tracks, grey_image

    network = np.stack(
        [
            intrinsics_to_network(camera, image.scale_to_original, image.crop_offset)
            for camera, image in zip(cameras.intrinsics, images)
        ]
    )
    tracks = flow_tracks(
        [grey_image(image.tensor) for image in images],
        [first_item(p["pts3d_in_other_view"]) for p in predictions],
        [first_item(p["conf"]) for p in predictions],
        network,
        cameras.cam_to_world,
        options.refine_neighbors,
        FlowOptions(
            preset=options.refine_flow_preset,
            stride=options.refine_flow_stride,
            max_pair_matches=options.refine_flow_pair_matches,
        ),
        options.conf_percentile,
        options.min_confidence,
    )
    return tracks.select(np.isfinite(tracks.points).all(-1)[tracks.track])


def _pointmap_tracks(predictions: Sequence[Output], cameras: Cameras, options: ReconstructOptions) -> Tracks:
    """Tracks of grid pixels whose global points coincide, moved to sub-pixel positions (``geometry.tracks``)."""
    global_maps = [first_item(p["pts3d_in_other_view"]) for p in predictions]
    samples = [
        sample_view(
            points, first_item(p["conf"]), options.refine_samples, options.conf_percentile, options.min_confidence
        )
        for points, p in zip(global_maps, predictions)
    ]
    tracks = build_tracks(
        samples, cameras.cam_to_world, neighbors=options.refine_neighbors, max_pair_matches=options.refine_pair_matches
    )
    tracks.pixel = subpixel_observations(tracks, global_maps)
    return tracks.select(np.isfinite(tracks.pixel).all(-1))


def _camera_groups(sizes: np.ndarray, intrinsics: np.ndarray, options: ReconstructOptions) -> np.ndarray:
    """[V] camera of each image in the bundle adjustment (see ``refine_focal``)."""
    count = len(sizes)
    if options.refine_focal != "grouped":
        return np.arange(count)
    # Same size, focal within the tolerance of the group's smallest: sorted, a new group starts at each gap.
    group = np.empty(count, dtype=np.int64)
    next_group = 0
    _, size_index = np.unique(sizes, axis=0, return_inverse=True)
    for size in np.unique(size_index):
        members = np.flatnonzero(size_index.reshape(-1) == size)
        members = members[np.argsort(intrinsics[members, 0], kind="stable")]
        first = intrinsics[members[0], 0]
        for member in members:
            if intrinsics[member, 0] > first * (1.0 + options.refine_focal_tolerance):
                next_group, first = next_group + 1, intrinsics[member, 0]
            group[member] = next_group
        next_group += 1
    return group


def _to_original(images: Sequence[PreparedImage], tracks: Tracks) -> np.ndarray:
    """[O, 2] the observations' network pixels in original-image pixels."""
    out = np.empty_like(tracks.pixel)
    order = np.argsort(tracks.view, kind="stable")
    bounds = np.searchsorted(tracks.view[order], np.arange(len(images) + 1))
    for view, image in enumerate(images):
        rows = order[bounds[view] : bounds[view + 1]]
        if len(rows):
            out[rows] = image.to_original(tracks.pixel[rows])
    return out
