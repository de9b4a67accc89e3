"""``reconstruct``: images -> predictor -> cameras of the original images and a coloured point cloud.

Conventions (pixels, axes, poses, intrinsics of the original image): ``fast3r_ns.geometry.conventions``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .cameras import recover_cameras
from .chunked import chunked_if_needed
from .io.images import PreparedImage
from .point_cloud import build_point_cloud, fuse_dense
from .predictions import Output, Predictor, first_item
from .reconstruction import Reconstruction
from .refinement import Refined, colmap_model_tracks, refine_cameras

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
    colmap_tracks: bool = True
    """Without ``refine``: multi-view tracks for the COLMAP model (``fast3r_ns.colmap_tracks``: pixels of
    neighbouring views whose predicted points agree, triangulated with the recovered cameras); their points join
    the cloud. Off, the COLMAP model holds cameras and images but no points. Default is True."""
    fuse_points: bool | None = None
    """After ``refine``: the dense cloud from each view's local depth on its refined camera, kept where
    neighbouring views confirm it and averaged with them (``point_cloud.fuse_dense``, ``geometry.fusion``) instead
    of the global pointmaps, whose per-view misplacement the refined cameras no longer share. None: on with
    ``refine``. Default is None."""
    colmap_track_samples: int = 1024
    """``colmap_tracks``: grid samples per view that may become track observations (300 at 1000 views took as long
    and kept 30x fewer points: the sub-pixel step cannot bridge the wider grid). Default is 1024."""


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

    refined: Refined | None = None
    if options.refine:
        start = time.perf_counter()
        refined = refine_cameras(images, predictions, cameras, options, progress)
        timings["refine"] = time.perf_counter() - start
    elif options.colmap_tracks:
        start = time.perf_counter()
        refined = colmap_model_tracks(images, predictions, cameras, options, progress)
        timings["tracks"] = time.perf_counter() - start

    fused = None
    if options.refine and options.fuse_points is not False and refined is not None and refined.tracks.num_tracks:
        start = time.perf_counter()
        if progress:
            progress("points: fusing the depth maps with the refined cameras")
        fused, tolerance = fuse_dense(images, predictions, cameras, refined.tracks, options, device)
        refined.stats["fusion_tolerance"] = tolerance
        timings["fuse"] = time.perf_counter() - start

    start = time.perf_counter()
    tracks = (refined.tracks, refined.original_pixel) if refined is not None else (None, None)
    cloud = build_point_cloud(images, predictions, cameras, options, device, progress, *tracks, fused)
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
        refine_unfixed=refined.unfixed if refined is not None else {},
    )
