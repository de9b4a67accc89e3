"""``reconstruct``: images -> predictor -> cameras of the original images and a coloured point cloud.

Conventions (pixels, axes, poses, intrinsics of the original image): ``fast3r_ns.geometry.conventions``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch

from .chunked import chunked_if_needed
from .geometry.conventions import OFFICIAL_PIXEL_OFFSET, intrinsics_to_network, intrinsics_to_original
from .geometry.focal import estimate_focal, focal_official
from .geometry.points import PointSampler, confidence_mask, sample_colors
from .geometry.pose import pnp_official, refine_reprojection, solve_poses
from .geometry.tracks import Tracks, build_tracks, sample_view, subpixel_observations
from .io.images import PreparedImage, open_rgb
from .predictor import Output, Predictor
from .reconstruction import PointTracks, Reconstruction

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
    refine_flow_rounds: int | None = None
    """"flow": most rounds of flow + bundle adjustment; each round after the first predicts the flow from the
    cameras of the previous one. None: 3, 1 above ``refine_large_views`` (not measured there yet). Default is
    None."""
    refine_flow_tolerance_deg: float = 0.02
    """"flow": the rounds stop when in the last one no camera turned more than this (degrees, after removing a
    common rotation) and no focal changed more than ``refine_flow_tolerance_focal``. Default is 0.02."""
    refine_flow_tolerance_focal: float = 0.001
    """"flow": relative focal change below which the rounds may stop (see above). Default is 0.001."""
    refine_guard_deg: float = 1.0
    """"flow": a view the refinement turned more than this (degrees) from the prediction on few (below
    ``refine_flow_min_observations``) or inconsistent flow observations is flagged (pose_ok false, with a note, and
    in ``Reconstruction.refine_unfixed``). Default is 1.0."""
    refine_guard_focal: float = 0.25
    """"flow": a view whose focal the refinement changed by more than this (relative) is flagged the same way.
    Default is 0.25."""
    refine_flow_filter_spread: float | None = None
    """"flow": after the first solve of each adjustment, observations reprojecting farther than this many times the
    median reprojection error (at least 0.2 px, at most ``refine_max_error``) are dropped and the robust loss
    scale follows (``BundleOptions.adaptive_spread``; 0: the fixed ``refine_max_error`` only). None: 5, 0 above
    ``refine_large_views``. Default is None."""
    refine_flow_gate_spread: float | None = None
    """"flow": adaptive correction gate of the flow matches (``FlowOptions.correction_spread``; 0: the fixed
    ``FlowOptions.max_correction`` of 6 network px of the large-scene measurements). None: 3, 0 above
    ``refine_large_views``. Default is None."""
    refine_flow_depth: bool | None = None
    """"flow": the first round, too, predicts the flow from each view's local depth and its camera instead of its
    global pointmap. None: True, False above ``refine_large_views``. Default is None."""
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

    predictions: one dict per image with keys ``fast3r_ns.predictor.PREDICTION_KEYS`` (batch size 1 is used).
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
    if options.focal_mode == "official":
        cameras = _cameras_official(images, predictions, options, progress)
    elif options.focal_mode in ("per-view", "shared"):
        cameras = _cameras_robust(images, predictions, options, device, progress)
    else:
        raise ValueError(f"unknown focal_mode {options.focal_mode!r}")
    _check_focal(images, cameras, options)
    timings["cameras"] = time.perf_counter() - start

    refined: _Refined | None = None
    if options.refine:
        start = time.perf_counter()
        refined = _refine(images, predictions, cameras, options, progress)
        timings["refine"] = time.perf_counter() - start

    start = time.perf_counter()
    points = _point_cloud(images, predictions, cameras, options, device, progress, refined)
    timings["points"] = time.perf_counter() - start

    return Reconstruction(
        image_paths=[image.path for image in images],
        image_sizes=np.array([image.original_size for image in images], dtype=np.int64),
        intrinsics=cameras.intrinsics,
        cam_to_world=cameras.cam_to_world,
        view_confidence=points["view_confidence"],
        pose_ok=np.array([note == "" for note in cameras.notes]),
        points=points["points"],
        colors=points["colors"],
        point_confidence=points["confidence"],
        point_image=points["image"],
        point_pixel=points["pixel"],
        shared_intrinsics=options.focal_mode in ("shared", "official"),
        timings=timings,
        pose_notes=cameras.notes,
        focal_mode=options.focal_mode,
        tracks=points["tracks"],
        distortion=None if refined is None else refined.distortion,
        refine_stats=refined.stats if refined is not None else {},
        refine_unfixed=refined.unfixed if refined is not None else {},
    )


@dataclass
class _Cameras:
    intrinsics: np.ndarray  # [V, 4] original-image (fx, fy, cx, cy)
    cam_to_world: np.ndarray  # [V, 4, 4]
    scale: np.ndarray  # [V] local -> world scale (NaN when unknown)
    notes: list[str]  # [V]


def _first(tensor: torch.Tensor) -> torch.Tensor:
    """Batch item 0 of a [B, ...] prediction."""
    return tensor[0]


def _original_center(image: PreparedImage) -> np.ndarray:
    return np.array(image.original_size, dtype=np.float64) / 2.0


def _cameras_robust(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    options: ReconstructOptions,
    device: torch.device,
    progress: Progress | None,
) -> _Cameras:
    """Per-view (or shared) robust focal from the local pointmaps, pose by robust local->global similarity."""
    count = len(images)
    samples = [_solver_sample(image, prediction, options) for image, prediction in zip(images, predictions)]
    focal = np.empty(count)
    if options.focal_mode == "shared":
        per_view = max(64, min(options.solver_points, 2_000_000 // count))  # bounded pool for many views
        steps = [max(1, math.ceil(len(s["rays"]) / per_view)) for s in samples]
        rays, offsets, weights = _stack(
            [s["rays"][::step] for s, step in zip(samples, steps)],
            [s["offsets"][::step] for s, step in zip(samples, steps)],
            [s["focal_weights"][::step] for s, step in zip(samples, steps)],
            device,
        )
        focal[:] = float(estimate_focal(rays, offsets, weights, shared=True)[0])
    cam_to_world = np.empty((count, 4, 4))
    scale = np.empty(count)
    notes: list[str] = []
    for begin in range(0, count, options.chunk_views):
        chunk = samples[begin : begin + options.chunk_views]
        if options.focal_mode == "per-view":
            rays, offsets, weights = _stack(
                [s["rays"] for s in chunk], [s["offsets"] for s in chunk], [s["focal_weights"] for s in chunk], device
            )
            focal[begin : begin + len(chunk)] = estimate_focal(rays, offsets, weights).cpu().numpy()
        local, world, weights = _stack(
            [s["local"] for s in chunk], [s["world"] for s in chunk], [s["pose_weights"] for s in chunk], device
        )
        poses = solve_poses(
            local,
            world,
            weights,
            iterations=options.pose_iterations,
            min_points=options.min_pose_points,
            max_residual=options.max_residual,
            min_inlier_fraction=options.min_inlier_fraction,
        )
        if options.refine_poses:
            offsets, _, global_weights = _stack(
                [s["offsets"] for s in chunk],
                [s["offsets"] for s in chunk],
                [s["global_weights"] for s in chunk],
                device,
            )
            chunk_focal = torch.from_numpy(focal[begin : begin + len(chunk)]).to(device)
            refined = refine_reprojection(poses.cam_to_world, world, offsets, chunk_focal, global_weights)
            finite = torch.isfinite(refined).all(-1).all(-1)[:, None, None]
            poses.cam_to_world = torch.where(finite, refined, poses.cam_to_world)
        cam_to_world[begin : begin + len(chunk)] = poses.cam_to_world.cpu().numpy()
        scale[begin : begin + len(chunk)] = poses.scale.cpu().numpy()
        notes.extend(poses.notes)
        if progress:
            progress(f"cameras: {begin + len(chunk)}/{count} views")
    centers = np.stack([_original_center(image) for image in images])
    intrinsics = np.stack([focal, focal, centers[:, 0], centers[:, 1]], axis=1)
    return _Cameras(intrinsics, cam_to_world, scale, notes)


def _solver_sample(image: PreparedImage, prediction: Output, options: ReconstructOptions) -> dict[str, torch.Tensor]:
    """A regular grid subsample of one view's confident pixels, with what the focal and pose solvers need."""
    width, height = image.size
    stride = max(1, int(math.floor(math.sqrt(width * height / max(1, options.solver_points)))))
    rows = torch.arange(stride // 2, height, stride)
    cols = torch.arange(stride // 2, width, stride)
    local = _first(prediction["pts3d_local"])[rows][:, cols].reshape(-1, 3).float().cpu()
    world = _first(prediction["pts3d_in_other_view"])[rows][:, cols].reshape(-1, 3).float().cpu()
    conf = _first(prediction["conf"])[rows][:, cols].reshape(-1).float().cpu()
    conf_local = _first(prediction["conf_local"])[rows][:, cols].reshape(-1).float().cpu()
    keep = confidence_mask(conf[None], options.solver_conf_percentile, 1.0)[0]
    keep &= confidence_mask(conf_local[None], options.solver_conf_percentile, 1.0)[0]
    grid_y, grid_x = torch.meshgrid(rows.double() + 0.5, cols.double() + 0.5, indexing="ij")
    network_xy = torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)[keep]
    original_xy = torch.from_numpy(image.to_original(network_xy.numpy()))
    local, world, conf, conf_local = local[keep], world[keep], conf[keep], conf_local[keep]
    log_conf, log_conf_local = conf.log().clamp_min(0), conf_local.log().clamp_min(0)
    return {
        "rays": local[:, :2] / local[:, 2:3],
        "offsets": original_xy - torch.from_numpy(_original_center(image)),
        "focal_weights": log_conf_local * (local[:, 2] > 0),
        "local": local,
        "world": world,
        "pose_weights": log_conf * log_conf_local,
        "global_weights": log_conf,
    }


def _stack(
    first: list[torch.Tensor], second: list[torch.Tensor], weights: list[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad per-view [N_v, D] arrays to [V, N, D] (zero weight on padding) on ``device``."""
    length = max(1, max(len(w) for w in weights))
    out_first = torch.zeros(len(first), length, first[0].shape[-1], dtype=first[0].dtype)
    out_second = torch.zeros(len(second), length, second[0].shape[-1], dtype=second[0].dtype)
    out_weights = torch.zeros(len(weights), length, dtype=torch.float32)
    for v, (a, b, w) in enumerate(zip(first, second, weights)):
        out_first[v, : len(a)], out_second[v, : len(b)], out_weights[v, : len(w)] = a, b, w
    return out_first.to(device), out_second.to(device), out_weights.to(device)


def _cameras_official(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    options: ReconstructOptions,
    progress: Progress | None,
) -> _Cameras:
    """Official recovery: view 0's focal (network pixels of view 0) for every view, PnP-RANSAC per view."""

    def principal_point(image: PreparedImage) -> tuple[float, float] | None:
        """None (official (W/2, H/2)) or the original image centre in integer network-pixel coordinates."""
        if options.official_principal_point == "official":
            return None
        camera = np.array([1.0, 1.0, *_original_center(image)])  # (fx, fy, cx, cy); the focal is unused here
        network = intrinsics_to_network(camera, image.scale_to_original, image.crop_offset)
        return (network[2] - OFFICIAL_PIXEL_OFFSET, network[3] - OFFICIAL_PIXEL_OFFSET)

    focal = focal_official(
        _first(predictions[0]["pts3d_in_other_view"]).float().cpu(),
        _first(predictions[0]["conf"]).float().cpu(),
        principal_point=principal_point(images[0]),
    )
    count = len(images)
    intrinsics = np.empty((count, 4))
    cam_to_world = np.empty((count, 4, 4))
    notes = []
    for view, (image, prediction) in enumerate(zip(images, predictions)):
        width, height = image.size
        center = principal_point(image) or (width / 2, height / 2)
        network = np.array([focal, focal, center[0] + OFFICIAL_PIXEL_OFFSET, center[1] + OFFICIAL_PIXEL_OFFSET])
        intrinsics[view] = intrinsics_to_original(network, image.scale_to_original, image.crop_offset)
        pose, _ = pnp_official(
            _first(prediction["pts3d_in_other_view"]).float().cpu().numpy(),
            _first(prediction["conf"]).float().cpu().numpy(),
            focal,
            iterations=options.pnp_iterations,
            principal_point=principal_point(image),
        )
        if pose is None:
            cam_to_world[view] = np.eye(4)
            notes.append("PnP failed; the pose is a placeholder (identity)")
        else:
            cam_to_world[view] = pose
            notes.append("")
        if progress and (view + 1) % options.chunk_views == 0:
            progress(f"cameras: {view + 1}/{count} views")
    return _Cameras(intrinsics, cam_to_world, np.full(count, np.nan), notes)


def _check_focal(images: Sequence[PreparedImage], cameras: _Cameras, options: ReconstructOptions) -> None:
    """Mark views whose focal is non-finite or implausible and clamp it into ``focal_range`` (in place), so every
    written camera stays usable (a NaN becomes the official 60-degree fallback)."""
    low, high = options.focal_range
    for view, image in enumerate(images):
        long_side = max(image.original_size)
        focal = cameras.intrinsics[view, 0] / long_side
        if not np.isfinite(focal) or not low <= focal <= high:
            clamped = float(np.clip(focal, low, high)) if np.isfinite(focal) else 0.5 / np.tan(np.radians(30))
            note = f"implausible focal ({cameras.intrinsics[view, 0]:.4g} px, written as {clamped * long_side:.4g})"
            cameras.notes[view] = f"{cameras.notes[view]}; {note}" if cameras.notes[view] else note
            cameras.intrinsics[view, :2] = clamped * long_side


@dataclass
class _Refined:
    tracks: Tracks  # refined track points; pixels in NETWORK coordinates
    original_pixel: np.ndarray  # [O, 2] the observations in original-image pixels
    stats: dict[str, float]
    distortion: np.ndarray | None = None  # [V] refined radial k1 (None when not refined)
    unfixed: dict[int, str] = field(default_factory=dict)  # view -> why the refinement could not fix it


def _refine(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: _Cameras,
    options: ReconstructOptions,
    progress: Progress | None,
) -> _Refined:
    """Tracks (flow or pointmaps), bundle adjustment; updates ``cameras`` in place (see ``fast3r_ns.refine``).
    With flow tracks: pointmap tracks first, then rounds of flow predicted from the current cameras + adjustment
    until the cameras stop moving (``refine_flow_rounds``, ``refine_flow_tolerance_deg``)."""
    from .refine_rounds import focal_changes, rotation_changes

    options = resolve_refine_options(options, len(images))
    initial_intrinsics, initial_cam_to_world = cameras.intrinsics.copy(), cameras.cam_to_world.copy()
    start = time.perf_counter()
    if options.refine_tracks not in ("pointmaps", "flow"):
        raise ValueError(f"unknown refine_tracks {options.refine_tracks!r}")
    if progress:
        progress(f"refine: pointmap tracks over {len(images)} views")
    result = _adjust(images, cameras, _pointmap_tracks(predictions, cameras, options), options, None, start)
    initial_error = result.stats["reprojection_err_px_before"]
    if options.refine_tracks == "pointmaps":
        return _with_motion(result, initial_intrinsics, initial_cam_to_world, cameras, initial_error)
    first_stage = {f"pointmaps_{key}": value for key, value in result.stats.items() if key.endswith("seconds")}
    fallback = cameras.cam_to_world.copy()  # pose of the views flow cannot hold (pointmap stage)
    rounds: list[dict[str, float]] = []
    unfixed: dict[int, str] = {}
    reverted = 0
    for index in range(max(1, options.refine_flow_rounds)):
        start = time.perf_counter()
        if progress:
            progress(f"refine: flow round {index + 1} over {len(images)} views")
        prior_intrinsics, prior_cam_to_world = cameras.intrinsics.copy(), cameras.cam_to_world.copy()
        tracks = _flow_tracks(images, predictions, cameras, options, from_depth=index > 0 or options.refine_flow_depth)
        multi_view = np.diff(tracks.offsets)[tracks.track] >= 3
        counts = np.bincount(tracks.view[multi_view], minlength=len(images))
        held = counts < options.refine_flow_min_observations
        if held.all():  # e.g. textureless images: the previous stage is the result
            break
        previous = (result, unfixed)
        unfixed = {int(v): f"{counts[v]} flow observations, pose from pointmap tracks" for v in np.flatnonzero(held)}
        cameras.cam_to_world[held] = fallback[held]
        result = _adjust(images, cameras, tracks, options, held, start)
        turned = rotation_changes(prior_cam_to_world, cameras.cam_to_world)
        zoomed = focal_changes(prior_intrinsics, cameras.intrinsics)
        rounds.append({"max_rotation_change_deg": float(np.nanmax(turned)), "max_focal_change": float(zoomed.max())})
        if index > 0 and np.nanmax(turned) > rounds[-2]["max_rotation_change_deg"]:
            # Moving more than the round before: diverging (a view drifting on its own predictions); keep the last.
            cameras.intrinsics, cameras.cam_to_world = prior_intrinsics, prior_cam_to_world
            result, unfixed = previous
            reverted = index + 1
            break
        if np.nanmax(turned) < options.refine_flow_tolerance_deg and zoomed.max() < options.refine_flow_tolerance_focal:
            break
    result.unfixed = unfixed | _guard(result, cameras, initial_intrinsics, initial_cam_to_world, options, set(unfixed))
    result.stats |= first_stage | {
        "flow_rounds": float(len(rounds)),
        "flow_round_reverted": float(reverted),
        **{f"round{i + 1}_{key}": value for i, info in enumerate(rounds) for key, value in info.items()},
    }
    return _with_motion(result, initial_intrinsics, initial_cam_to_world, cameras, initial_error)


def _guard(
    result: _Refined,
    cameras: _Cameras,
    intrinsics: np.ndarray,
    cam_to_world: np.ndarray,
    options: ReconstructOptions,
    held: set[int],
) -> dict[int, str]:
    """Views the flow adjustment moved far from the prediction without support (``refine_rounds.unsupported_views``):
    flagged (pose_ok false with a note). Held views rest on the pointmap stage, so only their focal counts."""
    from .refine import reprojection_errors
    from .refine_rounds import focal_changes, rotation_changes, unsupported_views, view_support

    tracks = result.tracks
    errors = reprojection_errors(
        cameras.intrinsics,
        cameras.cam_to_world,
        tracks.points[tracks.track],
        tracks.view,
        result.original_pixel,
        result.distortion,
    )
    count = len(cameras.cam_to_world)
    observations, reprojection = view_support(tracks.view, np.diff(tracks.offsets)[tracks.track], errors, count)
    turned = rotation_changes(cam_to_world, cameras.cam_to_world)
    turned[list(held)] = 0.0
    flagged = unsupported_views(
        turned,
        focal_changes(intrinsics, cameras.intrinsics),
        observations,
        reprojection,
        options.refine_flow_min_observations,
        options.refine_guard_deg,
        options.refine_guard_focal,
    )
    for view, why in flagged.items():
        cameras.notes[view] = f"{cameras.notes[view]}; {why}" if cameras.notes[view] else why
    return flagged


def _with_motion(
    result: _Refined, intrinsics: np.ndarray, cam_to_world: np.ndarray, cameras: _Cameras, initial_error: float
) -> _Refined:
    """``result`` with how far the refinement moved the cameras from (intrinsics, cam_to_world) in its stats."""
    from .refine_rounds import focal_changes, rotation_changes

    turned = rotation_changes(cam_to_world, cameras.cam_to_world)
    zoomed = focal_changes(intrinsics, cameras.intrinsics)
    result.stats |= {
        "rotation_change_deg_median": float(np.nanmedian(turned)),
        "rotation_change_deg_max": float(np.nanmax(turned)),
        "focal_change_median": float(np.median(zoomed)),
        "focal_change_max": float(zoomed.max()),
        "reprojection_err_px_initial": initial_error,
        "unfixed_views": float(len(result.unfixed)),
    }
    return result


def _adjust(
    images: Sequence[PreparedImage],
    cameras: _Cameras,
    tracks: Tracks,
    options: ReconstructOptions,
    held: np.ndarray | None,
    start: float,
) -> _Refined:
    """Bundle adjustment of ``cameras`` (in place) on ``tracks``; ``held`` views keep their pose."""
    from .refine import BundleOptions, bundle_adjust, reprojection_errors

    original = _to_original(images, tracks)
    track_seconds = time.perf_counter() - start
    sizes = np.array([image.original_size for image in images])
    pointmap_tracks = held is None
    free_points = options.refine_points if options.refine_points is not None else not pointmap_tracks
    held = np.zeros(len(images), dtype=bool) if held is None else held
    adaptive_spread = 0.0 if pointmap_tracks else options.refine_flow_filter_spread
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
        **({"adaptive_spread": adaptive_spread, "rounds": 3} if adaptive_spread > 0 else {}),
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
    # Issue #17 (flow rounds from local depth, adaptive gates): measured up to 300 views; larger scenes keep the
    # one-round method of the 1000-view measurements until measured.
    "refine_flow_rounds": (3, 1),
    "refine_flow_depth": (True, False),
    "refine_flow_filter_spread": (5.0, 0.0),
    "refine_flow_gate_spread": (3.0, 0.0),
}


def resolve_refine_options(options: ReconstructOptions, views: int) -> ReconstructOptions:
    """``options`` with the None/"auto" refinement options replaced by their values for ``views`` views."""
    large = views > options.refine_large_views
    values = {key: pair[large] for key, pair in REFINE_AUTO_VALUES.items() if getattr(options, key) in (None, "auto")}
    return replace(options, **values)


def _flow_tracks(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: _Cameras,
    options: ReconstructOptions,
    from_depth: bool = False,
) -> Tracks:
    """Tracks of grid pixels and their forward-backward consistent optical flow in the neighbours
    (``geometry.flow``), predicted from the global pointmaps or (``from_depth``) from each view's local depth
    back-projected with its current camera (``refine_rounds.depth_pointmap``)."""
    from .geometry.flow import FlowOptions, flow_tracks, grey_image
    from .refine_rounds import depth_pointmap

    network = np.stack(
        [
            intrinsics_to_network(camera, image.scale_to_original, image.crop_offset)
            for camera, image in zip(cameras.intrinsics, images)
        ]
    )
    pointmaps = [_first(p["pts3d_in_other_view"]) for p in predictions]
    if from_depth:
        pointmaps = [
            torch.from_numpy(
                depth_pointmap(
                    _first(p["pts3d_local"]).float().cpu().numpy(),
                    world.float().cpu().numpy(),
                    intrinsics,
                    cam_to_world,
                )
            )
            for p, world, intrinsics, cam_to_world in zip(predictions, pointmaps, network, cameras.cam_to_world)
        ]
    tracks = flow_tracks(
        [grey_image(image.tensor) for image in images],
        pointmaps,
        [_first(p["conf"]) for p in predictions],
        network,
        cameras.cam_to_world,
        options.refine_neighbors,
        FlowOptions(
            preset=options.refine_flow_preset,
            stride=options.refine_flow_stride,
            max_pair_matches=options.refine_flow_pair_matches,
            correction_spread=options.refine_flow_gate_spread,
            max_correction=64.0 if options.refine_flow_gate_spread else 6.0,
        ),
        options.conf_percentile,
        options.min_confidence,
    )
    return tracks.select(np.isfinite(tracks.points).all(-1)[tracks.track])


def _pointmap_tracks(predictions: Sequence[Output], cameras: _Cameras, options: ReconstructOptions) -> Tracks:
    """Tracks of grid pixels whose global points coincide, moved to sub-pixel positions (``geometry.tracks``)."""
    global_maps = [_first(p["pts3d_in_other_view"]) for p in predictions]
    samples = [
        sample_view(points, _first(p["conf"]), options.refine_samples, options.conf_percentile, options.min_confidence)
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


def _point_cloud(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: _Cameras,
    options: ReconstructOptions,
    device: torch.device,
    progress: Progress | None,
    refined: _Refined | None = None,
) -> dict:
    """Confidence-filtered, voxel-thinned world points with their image, original pixel and original colour, then
    the refined track points (if any); also the median global confidence of each view."""
    count = len(images)
    per_view_cap = int(math.ceil(4 * options.max_points / count))
    sampler = PointSampler(per_view_cap, seed=options.seed)
    use_local = options.point_source == "local" and options.focal_mode != "official"
    view_confidence = np.empty(count)
    for view, prediction in enumerate(predictions):
        conf = _first(prediction["conf"]).reshape(-1).to(device, torch.float32)
        view_confidence[view] = float(conf.nanmedian())
        if options.drop_untrusted_views and cameras.notes[view]:
            continue
        mask = confidence_mask(conf[None], options.conf_percentile, options.min_confidence)[0]
        if use_local:
            pose = torch.from_numpy(cameras.cam_to_world[view]).to(device)
            local = _first(prediction["pts3d_local"]).reshape(-1, 3).to(device, torch.float32)
            points = float(cameras.scale[view]) * local @ pose[:3, :3].T.float() + pose[:3, 3].float()
        else:
            points = _first(prediction["pts3d_in_other_view"]).reshape(-1, 3).to(device, torch.float32)
        mask &= torch.isfinite(points).all(-1)
        index = mask.nonzero()[:, 0]
        sampler.add(view, points[index], conf[index], index)
        if progress and (view + 1) % options.chunk_views == 0:
            progress(f"points: {view + 1}/{count} views")
    points, conf, view_index, pixel_index = sampler.finish(options.max_points, device)
    view_np, pixel_np = view_index.numpy().astype(np.int64), pixel_index.numpy().astype(np.int64)
    widths = np.array([image.size[0] for image in images], dtype=np.int64)
    # Network pixel centres (conventions) of every point; refined track points follow, at their first observation.
    network_xy = np.stack([pixel_np % widths[view_np] + 0.5, pixel_np // widths[view_np] + 0.5], axis=-1)
    points_np, conf_np = points.numpy(), conf.numpy()
    dense = len(points_np)
    tracks = None
    if refined is not None and refined.tracks.num_tracks:
        kept = refined.tracks
        first = kept.offsets[:-1]
        members = np.maximum(np.diff(kept.offsets), 1)
        points_np = np.concatenate([points_np, kept.points.astype(np.float32)])
        conf_np = np.concatenate([conf_np, (np.add.reduceat(kept.confidence, first) / members).astype(np.float32)])
        view_np = np.concatenate([view_np, kept.view[first]])
        network_xy = np.concatenate([network_xy, kept.pixel[first]])
        tracks = PointTracks(
            point=np.arange(dense, dense + kept.num_tracks, dtype=np.int64),
            offsets=kept.offsets.astype(np.int64),
            image=kept.view.astype(np.int32),
            pixel=refined.original_pixel.astype(np.float32),
        )
    pixels = np.empty((len(points_np), 2), dtype=np.float32)
    colors = np.empty((len(points_np), 3), dtype=np.uint8)
    order = np.argsort(view_np, kind="stable")
    bounds = np.searchsorted(view_np[order], np.arange(count + 1))

    def fill(view: int) -> None:
        rows = order[bounds[view] : bounds[view + 1]]
        if not len(rows):
            return
        image = images[view]
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
    return {
        "points": points_np,
        "colors": colors,
        "confidence": conf_np,
        "image": view_np.astype(np.int32),
        "pixel": pixels,
        "view_confidence": view_confidence,
        "tracks": tracks,
    }
