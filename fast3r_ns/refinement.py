"""The refinement orchestrated: tracks (pointmaps, then rounds of optical flow), bundle adjustment, a guard
against unsupported camera moves; and the multi-view tracks of the COLMAP model without ``--refine``.

The pieces: ``geometry.tracks`` and ``geometry.flow`` (correspondences), ``refine_rounds`` (flow predictions from
the current cameras, camera motion), ``refine`` (pycolmap bundle adjustment), ``colmap_tracks``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from .cameras import Cameras, network_intrinsics
from .colmap_tracks import pointmap_model_tracks, to_original
from .geometry.flow import FlowCache
from .geometry.tracks import Tracks, build_tracks, sample_view, subpixel_observations
from .io.images import PreparedImage
from .predictions import Output, first_item

if TYPE_CHECKING:
    from .options import ReconstructOptions, RefineBundleOptions, RefineFlowOptions

Progress = Callable[[str], None]


@dataclass
class Refined:
    """What the refinement (or the COLMAP-model tracks) gives the point cloud and the Reconstruction."""

    tracks: Tracks  # refined track points; pixels in NETWORK coordinates
    original_pixel: np.ndarray  # [O, 2] the observations in original-image pixels
    stats: dict[str, float]
    distortion: np.ndarray | None = None  # [V] refined radial k1 (None when not refined)
    unfixed: dict[int, str] = field(default_factory=dict)  # view -> why the refinement could not fix it
    dense_flows: dict = field(default_factory=dict)  # FlowCache.dense of the flow rounds, for the fused cloud


def refine_cameras(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: Cameras,
    options: ReconstructOptions,
    progress: Progress | None,
) -> Refined:
    """Tracks (flow or pointmaps), bundle adjustment; updates ``cameras`` in place (see ``fast3r_ns.refine``).
    With flow tracks: pointmap tracks first, then rounds of flow predicted from the current cameras + adjustment
    until the cameras stop moving (``RefineOptions.flow``: ``rounds``, ``tolerance_deg``). The None/"auto" values
    of ``options.refine`` are resolved for the number of views first (``RefineOptions.resolved``)."""
    from .refine_rounds import carried_poses, focal_changes, rotation_changes

    options = replace(options, refine=options.refine.resolved(len(images)))
    refine, flow = options.refine, options.refine.flow
    initial_intrinsics, initial_cam_to_world = cameras.intrinsics.copy(), cameras.cam_to_world.copy()
    start = time.perf_counter()
    if refine.tracks not in ("pointmaps", "flow"):
        raise ValueError(f"unknown refine tracks {refine.tracks!r}")
    if progress:
        progress(f"refine: pointmap tracks over {len(images)} views")
    result = _adjust(images, cameras, _pointmap_tracks(predictions, cameras, options), options, None, start)
    initial_error = result.stats["reprojection_err_px_before"]
    if refine.tracks == "pointmaps":
        return _with_motion(result, initial_intrinsics, initial_cam_to_world, cameras, initial_error)
    first_stage = {f"pointmaps_{key}": value for key, value in result.stats.items() if key.endswith("seconds")}
    fallback = cameras.cam_to_world.copy()  # pose of the views flow cannot hold (pointmap stage or relocalised)
    rounds: list[dict[str, float]] = []
    unfixed: dict[int, str] = {}
    flow_views = FlowViews.of(images, predictions, options)
    reverted = 0
    was_held = np.zeros(len(images), dtype=bool)
    relocalised: dict[int, str] = {}  # view -> the matches that placed it
    for index in range(max(1, flow.rounds)):
        start = time.perf_counter()
        if progress:
            progress(f"refine: flow round {index + 1} over {len(images)} views")
        prior_intrinsics, prior_cam_to_world = cameras.intrinsics.copy(), cameras.cam_to_world.copy()
        tracks = _flow_tracks(images, predictions, cameras, options, index > 0 or flow.depth, flow_views)
        multi_view = np.diff(tracks.offsets)[tracks.track] >= 3
        counts = np.bincount(tracks.view[multi_view], minlength=len(images))
        held = counts < flow.min_observations
        if held.all():  # e.g. textureless images: the previous stage is the result
            break
        previous = (result, unfixed)
        unfixed = {
            int(v): f"{counts[v]} flow observations, pose from "
            + (f"{relocalised[v]} matches (PnP)" if v in relocalised else "pointmap tracks")
            for v in np.flatnonzero(held)
        }
        # A newly held view takes its pointmap-stage pose relative to the free views (their frame has moved since);
        # a view held before keeps the pose it was held at.
        newly = held & ~was_held
        cameras.cam_to_world[newly] = carried_poses(fallback, cameras.cam_to_world, ~held)[newly]
        before_adjustment = cameras.cam_to_world.copy()
        result = _adjust(images, cameras, tracks, options, held, start)
        # The free views arrange themselves around a held view's few observations. When that turned the view
        # against them more than any free view turned, its observations do not pin it (the free views swung about
        # it): it follows their frame from its pointmap-stage pose instead.
        moved = rotation_changes(before_adjustment, cameras.cam_to_world)
        swung = held & (moved > np.nanmax(moved[~held], initial=0.0))
        cameras.cam_to_world[swung] = carried_poses(fallback, cameras.cam_to_world, ~held)[swung]
        turned = rotation_changes(prior_cam_to_world, cameras.cam_to_world)
        zoomed = focal_changes(prior_intrinsics, cameras.intrinsics)
        # A view the flow held last round moves for the first time now: its turn says nothing about divergence.
        free_both = ~held & ~was_held
        rounds.append(
            {
                "max_rotation_change_deg": float(np.nanmax(turned)),
                "max_free_rotation_change_deg": float(np.nanmax(turned[free_both])) if free_both.any() else 0.0,
                "max_focal_change": float(zoomed.max()),
                "pairs_reused": float(flow_views.flows.reused),
                "held_views": float(held.sum()),
            }
        )
        if progress:
            stats = result.stats
            progress(
                f"refine: flow round {index + 1}: {int(stats['observations_kept']):,} observations, flow "
                f"{stats['tracks_seconds']:.1f} s, adjustment {stats['setup_seconds'] + stats['solve_seconds']:.1f} s "
                f"({int(stats['solver_iterations'])} iterations, {_solver_name(stats)}), largest turn "
                f"{np.nanmax(turned):.3f} deg, "
                f"{flow_views.flows.reused} pairs kept their flows"
            )
        if index > 0 and rounds[-1]["max_free_rotation_change_deg"] > rounds[-2]["max_rotation_change_deg"]:
            # Views free in both rounds moving more than the round before: diverging (a view drifting on its own
            # predictions); keep the last.
            cameras.intrinsics, cameras.cam_to_world = prior_intrinsics, prior_cam_to_world
            result, unfixed = previous
            reverted = index + 1
            break
        was_held = held
        found: list[int] = []
        if flow.relocalise_radius > 0 and held.any() and index + 1 < max(1, flow.rounds):
            moved = _relocalise(images, predictions, cameras, options, result.tracks, held, flow_views, progress)
            relocalised.update(moved)
            found = list(moved)
            if found:  # a relocalised view falls back to its new pose from now on
                fallback = carried_poses(fallback, cameras.cam_to_world, ~held)
                fallback[found] = cameras.cam_to_world[found]
        if not found and np.nanmax(turned) < flow.tolerance_deg and zoomed.max() < flow.tolerance_focal:
            break
    result.dense_flows = flow_views.flows.dense
    result.unfixed = unfixed | _guard(result, cameras, initial_intrinsics, initial_cam_to_world, flow, set(unfixed))
    result.stats |= first_stage | {
        "flow_rounds": float(len(rounds)),
        "flow_round_reverted": float(reverted),
        "relocalised_views": float(len(relocalised)),
        **{f"round{i + 1}_{key}": value for i, info in enumerate(rounds) for key, value in info.items()},
    }
    return _with_motion(result, initial_intrinsics, initial_cam_to_world, cameras, initial_error)


def _guard(
    result: Refined,
    cameras: Cameras,
    intrinsics: np.ndarray,
    cam_to_world: np.ndarray,
    flow: RefineFlowOptions,
    held: set[int],
) -> dict[int, str]:
    """Views the flow adjustment moved far from the prediction without support (``refine_rounds.unsupported_views``):
    flagged (pose_ok false with a note). Held views rest on the pointmap stage, so only their focal counts. A view
    flagged by the pose recovery (e.g. its local and global pointmaps disagree) whose camera the adjustment
    re-solved on enough consistent observations (``refine_rounds.supported_views``) is trusted again: its note is
    cleared (``cleared_views`` in the stats), so its points enter the cloud."""
    from .refine import reprojection_errors
    from .refine_rounds import focal_changes, rotation_changes, supported_views, unsupported_views, view_support

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
        flow.min_observations,
        flow.guard_deg,
        flow.guard_focal,
    )
    supported = supported_views(observations, reprojection, flow.min_observations)
    cleared = [v for v in range(count) if cameras.notes[v] and supported[v] and v not in held and v not in flagged]
    for view in cleared:
        cameras.notes[view] = ""
    result.stats["cleared_views"] = float(len(cleared))
    for view, why in flagged.items():
        cameras.notes[view] = f"{cameras.notes[view]}; {why}" if cameras.notes[view] else why
    return flagged


def _with_motion(
    result: Refined, intrinsics: np.ndarray, cam_to_world: np.ndarray, cameras: Cameras, initial_error: float
) -> Refined:
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


def _solver_name(stats: dict[str, float]) -> str:
    """Who solved an adjustment (``refine.bundle_adjust``'s stats): "torch", "Ceres" or "torch + Ceres"."""
    torch_solves, solves = stats.get("torch_solves", 0.0), stats.get("solves", 0.0)
    return "torch" if torch_solves == solves > 0 else "Ceres" if torch_solves == 0 else "torch + Ceres"


def _solver_device(solver: str, device: str | None) -> str | None:
    """The torch device of the bundle adjustment, None for Ceres (``RefineBundleOptions.solver``)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    use_torch = solver == "torch" or (solver == "auto" and torch.device(device).type == "cuda")
    return device if use_torch else None


def _adjust(
    images: Sequence[PreparedImage],
    cameras: Cameras,
    tracks: Tracks,
    options: ReconstructOptions,
    held: np.ndarray | None,
    start: float,
) -> Refined:
    """Bundle adjustment of ``cameras`` (in place) on ``tracks``; ``held`` views keep their pose (flow tracks;
    None: pointmap tracks)."""
    from .refine import BundleOptions, bundle_adjust, reprojection_errors

    bundle = options.refine.bundle
    original = _to_original(images, tracks)
    track_seconds = time.perf_counter() - start
    sizes = np.array([image.original_size for image in images])
    pointmap_tracks = held is None
    free_points = bundle.refine_points if bundle.refine_points is not None else not pointmap_tracks
    held = np.zeros(len(images), dtype=bool) if held is None else held
    adaptive_spread = 0.0 if pointmap_tracks else options.refine.flow.filter_spread
    bundle_options = BundleOptions(
        refine_focal=bundle.focal != "fixed",
        refine_principal_point=bundle.refine_principal_point,
        refine_distortion=bundle.refine_distortion,
        refine_points=free_points,
        camera_groups=_camera_groups(sizes, cameras.intrinsics, bundle),
        constant_poses=held,
        max_reprojection_error=bundle.max_reprojection_error,
        max_iterations=bundle.max_iterations,
        num_threads=bundle.num_threads,
        function_tolerance=bundle.function_tolerance,
        device=_solver_device(bundle.solver, options.device),
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
    distortion = result.distortion if bundle.refine_distortion else None
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
    return Refined(kept, original[ok], stats, distortion)


def _flow_tracks(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: Cameras,
    options: ReconstructOptions,
    from_depth: bool = False,
    views: FlowViews | None = None,
) -> Tracks:
    """Tracks of grid pixels and their forward-backward consistent optical flow in the neighbours
    (``geometry.flow``), predicted from the global pointmaps or (``from_depth``) from each view's local depth
    back-projected with its current camera (``refine_rounds.depth_pointmap``). ``views``: the round-independent
    inputs (``FlowViews``), computed here when not given."""
    from .geometry.flow import FlowOptions, flow_tracks

    network = network_intrinsics(images, cameras.intrinsics)
    pointmaps = [first_item(p["pts3d_in_other_view"]) for p in predictions]
    if from_depth:
        placed = _placed_pointmaps(
            predictions, network, cameras.cam_to_world, range(len(predictions)), options.refine.flow.depth_median
        )
        pointmaps = [torch.from_numpy(points) for points in placed]
    flow = options.refine.flow
    views = views or FlowViews.of(images, predictions, options)
    tracks = flow_tracks(
        views.greys,
        pointmaps,
        views.confidences,
        network,
        cameras.cam_to_world,
        options.refine.neighbors,
        FlowOptions(
            preset=flow.preset,
            stride=flow.stride,
            max_pair_matches=flow.max_pair_matches,
            max_observations=flow.max_observations,
            correction_spread=flow.correction_spread,
            max_correction=64.0 if flow.correction_spread else 6.0,
            reuse_px=flow.reuse_px,
        ),
        options.points.conf_percentile,
        options.points.min_confidence,
        views.masks,
        views.flows,
    )
    return tracks.select(np.isfinite(tracks.points).all(-1)[tracks.track])


def _placed_pointmaps(
    predictions: Sequence[Output],
    network: np.ndarray,
    cam_to_world: np.ndarray,
    views: Sequence[int],
    median_window: int,
) -> list[np.ndarray]:
    """[H, W, 3] world points of ``views``: each view's local depth (median-filtered over ``median_window``)
    placed with its current camera (``refine_rounds.depth_pointmap``), NaN where its global pointmap is not
    finite."""
    from .refine_rounds import depth_pointmap

    def placed(view: int) -> np.ndarray:
        local = first_item(predictions[view]["pts3d_local"]).float().cpu().numpy()
        world = first_item(predictions[view]["pts3d_in_other_view"]).float().cpu().numpy()
        return depth_pointmap(local, world, network[view], cam_to_world[view], median_window)

    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:  # numpy releases the GIL here
        return list(pool.map(placed, views))


def _relocalise(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: Cameras,
    options: ReconstructOptions,
    tracks: Tracks,
    held: np.ndarray,
    views: FlowViews,
    progress: Progress | None,
) -> dict[int, str]:
    """Held views whose pose PnP replaced (``geometry.relocalise``), each with the kind of its matches: the
    adjusted points of their free neighbours' observations in ``tracks`` (the round's kept flow tracks) searched
    for in them by patch correlation (else SIFT matches with those neighbours), so that the next flow round
    predicts from the new pose; ``cameras`` updated in place."""
    from .geometry.relocalise import WindowOptions, relocalise_view

    network = network_intrinsics(images, cameras.intrinsics)
    pairs = tracks.pairs
    neighbours = {
        int(v): sorted({int(n) for pair in pairs if v in pair for n in pair if n != v and not held[n]})
        for v in np.flatnonzero(held)
    }
    used = sorted({n for near in neighbours.values() for n in near})
    pointmaps: list[np.ndarray | None] = [None] * len(images)
    for view, points in zip(
        used, _placed_pointmaps(predictions, network, cameras.cam_to_world, used, options.refine.flow.depth_median)
    ):
        points[~views.masks[view]] = np.nan
        pointmaps[view] = points
    track = tracks.track
    observed = {}  # neighbour -> (its observed pixels, their adjusted points)
    for other in used:
        rows = np.flatnonzero(tracks.view == other)
        observed[other] = (tracks.pixel[rows], tracks.points[track[rows]])
    flow = options.refine.flow
    window = WindowOptions(radius=flow.relocalise_radius, features=flow.relocalise_features)
    found = {}
    for view, near in neighbours.items():
        known = [(other, *observed[other]) for other in near]
        if not known:
            continue
        result = relocalise_view(
            view, known, views.greys, pointmaps, network, cameras.cam_to_world, window, views.keypoints
        )
        kind = "SIFT" if result.features else "patch"
        if progress:
            verdict = "moved" if result.cam_to_world is not None else "kept"
            progress(
                f"refine: view {view} held; {kind} matches {result.matches}, PnP inliers {result.inliers} "
                f"(current pose {result.current_inliers}) in {result.cells} cells, turning it {result.turn:.1f} deg: "
                f"{verdict}"
            )
        if result.cam_to_world is not None:
            cameras.cam_to_world[view] = result.cam_to_world
            found[view] = kind
    return found


@dataclass
class FlowViews:
    """What every flow round needs of the views and that does not change between rounds."""

    greys: list[np.ndarray]  # [H, W] uint8 network images
    confidences: list[torch.Tensor]  # [H, W] global confidence
    masks: list[np.ndarray]  # [H, W] bool confidence gates
    flows: FlowCache = field(default_factory=FlowCache)  # flows of earlier rounds
    keypoints: dict = field(default_factory=dict)  # SIFT keypoints of the relocalisation, by view

    @classmethod
    def of(cls, images: Sequence[PreparedImage], predictions: Sequence[Output], options: ReconstructOptions):
        from .geometry.flow import confidence_masks, grey_image

        confidences = [first_item(p["conf"]) for p in predictions]
        points = options.points
        masks = confidence_masks(confidences, points.conf_percentile, points.min_confidence)
        budget = points.fuse_flow_memory_mb * 2**20 if points.fuse is not False else 0
        return cls([grey_image(image.tensor) for image in images], confidences, masks, FlowCache(dense_budget=budget))


def _pointmap_tracks(predictions: Sequence[Output], cameras: Cameras, options: ReconstructOptions) -> Tracks:
    """Tracks of grid pixels whose global points coincide, moved to sub-pixel positions (``geometry.tracks``)."""
    refine, points_options = options.refine, options.points
    global_maps = [first_item(p["pts3d_in_other_view"]) for p in predictions]
    samples = [
        sample_view(
            points, first_item(p["conf"]), refine.samples, points_options.conf_percentile, points_options.min_confidence
        )
        for points, p in zip(global_maps, predictions)
    ]
    tracks = build_tracks(
        samples, cameras.cam_to_world, neighbors=refine.neighbors, max_pair_matches=refine.max_pair_matches
    )
    tracks.pixel = subpixel_observations(tracks, global_maps)
    return tracks.select(np.isfinite(tracks.pixel).all(-1))


def _camera_groups(sizes: np.ndarray, intrinsics: np.ndarray, bundle: RefineBundleOptions) -> np.ndarray:
    """[V] camera of each image in the bundle adjustment (see ``RefineBundleOptions.focal``)."""
    count = len(sizes)
    if bundle.focal != "grouped":
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
            if intrinsics[member, 0] > first * (1.0 + bundle.focal_tolerance):
                next_group, first = next_group + 1, intrinsics[member, 0]
            group[member] = next_group
        next_group += 1
    return group


def _to_original(images: Sequence[PreparedImage], tracks: Tracks) -> np.ndarray:
    """[O, 2] the observations' network pixels in original-image pixels."""
    return to_original(images, tracks.view, tracks.pixel)


def colmap_model_tracks(
    images: Sequence[PreparedImage],
    predictions: Sequence[Output],
    cameras: Cameras,
    options: ReconstructOptions,
    progress: Progress | None,
) -> Refined:
    """Triangulated pointmap tracks of the trusted views for the COLMAP model (``fast3r_ns.colmap_tracks``)."""
    if progress:
        progress(f"tracks for the COLMAP model over {len(images)} views")
    tracks, original = pointmap_model_tracks(
        images,
        [first_item(p["pts3d_in_other_view"]) for p in predictions],
        [first_item(p["conf"]) for p in predictions],
        cameras.intrinsics,
        cameras.cam_to_world,
        np.array([note == "" for note in cameras.notes]),
        samples_per_view=options.points.colmap_track_samples,
        neighbors=options.refine.neighbors,
        max_pair_matches=options.refine.max_pair_matches,
        conf_percentile=options.points.conf_percentile,
        min_confidence=options.points.min_confidence,
        max_error=options.refine.bundle.max_reprojection_error,
    )
    return Refined(tracks, original, stats={})
