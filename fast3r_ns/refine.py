"""Bundle adjustment with pycolmap on multi-view tracks (``geometry.tracks``, ``geometry.flow``).

Cameras, points and observations go into a ``pycolmap.Reconstruction`` (one camera per image, or one per group of
images sharing a focal), pycolmap's Ceres bundle adjustment (or ``bundle_torch`` on a torch device, the same cost)
refines poses, focal lengths (optionally principal points and one radial distortion coefficient) and points under a
robust loss, observations with a large reprojection error are removed and the problem is solved again. The result
is moved back onto the input's world frame (the similarity that maps the refined track points onto their initial
positions), so the pointmaps' dense cloud stays valid.
Conventions: ``fast3r_ns.geometry.conventions`` (original-image pixels, OpenCV axes, camera-to-world poses).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .geometry.align import umeyama


@dataclass
class BundleOptions:
    """What the bundle adjustment refines and how hard it tries."""

    refine_focal: bool = True
    """Refine the focal lengths. Default is True."""
    refine_principal_point: bool = False
    """Refine the principal points (weakly constrained without many views per camera). Default is False."""
    refine_distortion: bool = False
    """Add and refine one radial distortion coefficient per camera (SIMPLE_RADIAL). Default is False."""
    camera_groups: np.ndarray | None = None
    """[V] int: images with the same group share one camera (one focal; all zeros: one camera for all); None: one
    camera per image. Default is None."""
    constant_poses: np.ndarray | None = None
    """[V] bool: images whose pose stays as given (the others' gauge then follows them). Default is None."""
    refine_points: bool = False
    """Let the track points move too (classic bundle adjustment). Off, they stay at the pointmaps' 3-D positions and
    only the cameras move: the pointmaps' metric shape then pins down what reprojections alone leave weak (a
    common focal / rotation drift along narrow sequences). Default is False."""
    loss_scale: float = 2.0
    """Scale (pixels) of the Cauchy loss on reprojection residuals. Default is 2.0."""
    max_reprojection_error: float = 4.0
    """Observations reprojecting farther than this many pixels are dropped between rounds. Default is 4.0."""
    rounds: int = 2
    """Solve, filter outliers, solve again ... this many times. Default is 2."""
    adaptive_spread: float = 0.0
    """After the first round, observations reprojecting farther than this many times the median reprojection error
    (at least ``min_reprojection_error``, at most ``max_reprojection_error``) are dropped and the loss scale
    follows that threshold: the gate follows the measured spread of the matches rather than a constant (0: only
    ``max_reprojection_error`` and ``loss_scale``). Default is 0.0."""
    min_reprojection_error: float = 0.2
    """Smallest adaptive threshold (pixels). Default is 0.2."""
    max_iterations: int = 50
    """Ceres iterations per round. Default is 50."""
    function_tolerance: float = 0.0
    """The solves after the first (after removing outliers, started near the optimum) stop when an iteration lowers
    the cost by less than this fraction; 0 (COLMAP's setting, also the first solve's) runs to ``max_iterations`` or
    the gradient tolerance. Default is 0.0."""
    num_threads: int = -1
    """Ceres threads; -1 uses every core. Default is -1."""
    device: str | None = None
    """Solve on this torch device with ``bundle_torch`` (Levenberg-Marquardt, Schur complement) instead of
    pycolmap's Ceres; only without distortion and principal points (the other options are honoured; pycolmap
    still holds the model and removes the outliers). Out of device memory, Ceres solves instead (``reports`` say
    which solved). None: Ceres. Default is None."""


@dataclass
class BundleResult:
    """Refined cameras and track points, in the input's world frame."""

    intrinsics: np.ndarray  # [V, 4] (fx, fy, cx, cy) original pixels
    distortion: np.ndarray  # [V] k1 of SIMPLE_RADIAL (0 where not refined)
    cam_to_world: np.ndarray  # [V, 4, 4]
    points: np.ndarray  # [T, 3] refined track points (NaN where the whole track was rejected)
    observation_ok: np.ndarray  # [O] bool, observations kept after outlier rejection
    stats: dict[str, float] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)  # Ceres' brief report of each round


def _camera_groups(options: BundleOptions, count: int) -> np.ndarray:
    """[V] camera index (0-based, consecutive) of each image."""
    if options.camera_groups is not None:
        return np.unique(np.asarray(options.camera_groups), return_inverse=True)[1].reshape(-1)
    return np.arange(count)


def reprojection_errors(
    intrinsics: np.ndarray,  # [V, 4]
    cam_to_world: np.ndarray,  # [V, 4, 4]
    points: np.ndarray,  # [O, 3] the 3-D point of each observation
    view: np.ndarray,  # [O] int
    pixel: np.ndarray,  # [O, 2] original-image pixels
    distortion: np.ndarray | None = None,  # [V] k1
) -> np.ndarray:
    """[O] pixel distance between each observation and the projection of its point (inf behind the camera)."""
    world_to_cam = np.linalg.inv(cam_to_world)[view]
    cam = np.einsum("oij,oj->oi", world_to_cam[:, :3, :3], points) + world_to_cam[:, :3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = cam[:, :2] / cam[:, 2:3]
    if distortion is not None:
        radius2 = np.square(normalized).sum(-1, keepdims=True)
        normalized = normalized * (1.0 + distortion[view][:, None] * radius2)
    fx, fy, cx, cy = intrinsics[view].T
    projected = np.stack([fx * normalized[:, 0] + cx, fy * normalized[:, 1] + cy], axis=-1)
    error = np.linalg.norm(projected - pixel, axis=-1)
    return np.where(cam[:, 2] > 0, error, np.inf)


def _observed_rows(model, image_rows: list[np.ndarray]) -> np.ndarray:
    """[O] bool: the input observations (rows; ``image_rows[i]`` are image i's, in keypoint order) that still see
    a 3-D point in the ``pycolmap.Reconstruction`` (image ids i + 1)."""
    kept = np.zeros(sum(len(rows) for rows in image_rows), dtype=bool)
    for index, rows in enumerate(image_rows):
        kept[rows[np.asarray(model.image(index + 1).get_observation_point2D_idxs(), dtype=np.int64)]] = True
    return kept


def _track_points(model, point_ids: np.ndarray) -> np.ndarray:
    """[T, 3] xyz of each track's point in the ``pycolmap.Reconstruction`` (NaN where it was deleted)."""
    xyz = np.full((len(point_ids), 3), np.nan)
    for track_index, point_id in enumerate(point_ids.tolist()):
        if model.exists_point3D(point_id):
            xyz[track_index] = model.point3D(point_id).xyz
    return xyz


def _model_cameras(model, count: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Images 1..count of the reconstruction (one camera model for all): [V, 4] intrinsics (f, f, cx, cy), [V] k1
    (None without distortion) and [V, 4, 4] world-to-camera."""
    params = np.array([np.asarray(model.camera(model.image(i + 1).camera_id).params) for i in range(count)])
    world_to_cam = np.tile(np.eye(4), (count, 1, 1))
    for index in range(count):
        world_to_cam[index, :3, :4] = model.image(index + 1).cam_from_world().matrix()
    intrinsics = np.stack([params[:, 0], params[:, 0], params[:, 1], params[:, 2]], axis=-1)
    return intrinsics, (params[:, 3].copy() if params.shape[1] > 3 else None), world_to_cam


def _median_reprojection_error(
    model,
    image_rows: list[np.ndarray],
    view: np.ndarray,  # [O] image index of each input observation
    pixel: np.ndarray,  # [O, 2]
    track_of_row: np.ndarray,  # [O] track index of each observation
    point_ids: np.ndarray,  # [T] point id of each track
) -> float:
    """Median reprojection error (pixels) over every observation still in a ``pycolmap.Reconstruction``."""
    kept = _observed_rows(model, image_rows)
    if not kept.any():
        return float("inf")
    intrinsics, distortion, world_to_cam = _model_cameras(model, len(image_rows))
    points = _track_points(model, point_ids)[track_of_row[kept]]
    cam_to_world = np.linalg.inv(world_to_cam)
    return float(np.median(reprojection_errors(intrinsics, cam_to_world, points, view[kept], pixel[kept], distortion)))


def bundle_adjust(
    image_sizes: np.ndarray,  # [V, 2] (width, height)
    intrinsics: np.ndarray,  # [V, 4]
    cam_to_world: np.ndarray,  # [V, 4, 4]
    points: np.ndarray,  # [T, 3] initial track points
    offsets: np.ndarray,  # [T + 1] observations of track t are rows offsets[t]:offsets[t + 1]
    view: np.ndarray,  # [O] int
    pixel: np.ndarray,  # [O, 2] original-image pixels
    options: BundleOptions | None = None,
) -> BundleResult:
    """Refine cameras and points with pycolmap's bundle adjustment (see the module docstring)."""
    import pycolmap

    options = options or BundleOptions()
    start = time.perf_counter()
    count = len(cam_to_world)
    model = pycolmap.Reconstruction()
    model_name = "SIMPLE_RADIAL" if options.refine_distortion else "SIMPLE_PINHOLE"
    group = _camera_groups(options, count)  # [V] camera index of each image
    for index in range(int(group.max()) + 1):
        members = np.flatnonzero(group == index)
        width, height = (int(v) for v in image_sizes[members[0]])
        focal = float(np.median(intrinsics[members, :2]))
        cx, cy = (float(v) for v in intrinsics[members[0], 2:])
        camera = pycolmap.Camera.create_from_model_name(index + 1, model_name, focal, width, height)
        camera.params = [focal, cx, cy] + ([0.0] if options.refine_distortion else [])
        model.add_camera_with_trivial_rig(camera)

    order = np.argsort(view, kind="stable")
    bounds = np.searchsorted(view[order], np.arange(count + 1))
    point2d_index = np.empty(len(view), dtype=np.int64)
    world_to_cam = np.linalg.inv(cam_to_world)
    image_rows = [order[bounds[index] : bounds[index + 1]] for index in range(count)]  # keypoint k: row rows[k]
    track_of_row = np.repeat(np.arange(len(points)), np.diff(offsets))
    for index in range(count):
        rows = image_rows[index]
        point2d_index[rows] = np.arange(len(rows))
        image = pycolmap.Image(
            name=f"{index}",
            keypoints=np.ascontiguousarray(pixel[rows], dtype=np.float64).reshape(-1, 2),
            camera_id=int(group[index]) + 1,
            image_id=index + 1,
        )
        model.add_image_with_trivial_frame(image, pycolmap.Rigid3d(world_to_cam[index, :3, :4]))
    point_ids = np.empty(len(points), dtype=np.int64)
    image_ids, p2d = (view + 1).tolist(), point2d_index.tolist()
    for track_index, xyz in enumerate(np.asarray(points, dtype=np.float64)):
        track = pycolmap.Track()
        for row in range(offsets[track_index], offsets[track_index + 1]):
            track.add_element(image_ids[row], p2d[row])
        point_ids[track_index] = model.add_point3D(xyz, track)
    setup_seconds = time.perf_counter() - start

    ba_options = pycolmap.BundleAdjustmentOptions()
    ba_options.refine_focal_length = options.refine_focal
    ba_options.refine_principal_point = options.refine_principal_point
    ba_options.refine_extra_params = options.refine_distortion
    ba_options.print_summary = False
    ba_options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    ba_options.ceres.loss_function_scale = options.loss_scale
    ba_options.ceres.solver_options.max_num_iterations = options.max_iterations
    ba_options.ceres.solver_options.num_threads = options.num_threads
    observations = pycolmap.ObservationManager(model)
    on_device = options.device is not None and not (options.refine_distortion or options.refine_principal_point)
    rows_of = (view, pixel, track_of_row)
    filtered = 0
    reports: list[str] = []
    threshold = options.max_reprojection_error
    thresholds: list[float] = []
    for _ in range(options.rounds):
        config = pycolmap.BundleAdjustmentConfig()
        for index in range(count):
            config.add_image(index + 1)
            if options.constant_poses is not None and options.constant_poses[index]:
                config.set_constant_rig_from_world_pose(model.image(index + 1).frame_id)
        if options.refine_points:
            config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
        else:
            for point_id in model.point3D_ids():
                config.add_constant_point(point_id)
        report = None
        if on_device:
            try:
                report = _solve_on_device(model, options, ba_options, image_rows, rows_of, point_ids, group)
            except torch.OutOfMemoryError:  # the model is written only after a solve: Ceres takes over unchanged
                on_device = False
                torch.cuda.empty_cache()
        if report is None:
            report = pycolmap.create_default_bundle_adjuster(ba_options, config, model).solve().brief_report()
        reports.append(report)
        ba_options.ceres.solver_options.function_tolerance = options.function_tolerance  # the re-solves
        if options.adaptive_spread > 0:
            spread = options.adaptive_spread * _median_reprojection_error(
                model, image_rows, view, pixel, track_of_row, point_ids
            )
            threshold = float(np.clip(spread, options.min_reprojection_error, options.max_reprojection_error))
            ba_options.ceres.loss_function_scale = min(options.loss_scale, threshold)
        thresholds.append(threshold)
        # Outliers leave after every round (after the last one too, so they are not in the result).
        filtered += observations.filter_points3D_with_large_reprojection_error(threshold, set(model.point3D_ids()))
        filtered += observations.filter_observations_with_negative_depth()
    solve_seconds = time.perf_counter() - start - setup_seconds

    refined_intrinsics, distortion, refined_world_to_cam = _model_cameras(model, count)
    distortion = distortion if options.refine_distortion else np.zeros(count)
    refined_points = _track_points(model, point_ids)
    observation_ok = _observed_rows(model, image_rows)

    # Back onto the input's world frame: the similarity taking the refined track points to the initial ones.
    kept = np.isfinite(refined_points).all(-1)
    refined_cam_to_world = np.linalg.inv(refined_world_to_cam)
    if kept.sum() >= 3:
        scale, rotation, translation = (
            t.numpy() for t in umeyama(torch.from_numpy(refined_points[kept]), torch.from_numpy(points[kept]))
        )
        refined_points = float(scale) * refined_points @ rotation.T + translation
        moved = np.einsum("ij,vjk->vik", rotation, refined_cam_to_world[:, :3, :3])
        refined_cam_to_world[:, :3, 3] = float(scale) * refined_cam_to_world[:, :3, 3] @ rotation.T + translation
        refined_cam_to_world[:, :3, :3] = moved
    stats = {
        "setup_seconds": setup_seconds,
        "solve_seconds": solve_seconds,
        "filtered_observations": float(filtered),
        "tracks_kept": float(kept.sum()),
        "observations_kept": float(observation_ok.sum()),
        "filter_threshold_px": thresholds[-1] if thresholds else float("nan"),
        "solver_iterations": float(sum(_iterations(report) for report in reports)),
        "torch_solves": float(sum(report.startswith("Torch") for report in reports)),
        "solves": float(len(reports)),
    }
    return BundleResult(
        refined_intrinsics, distortion, refined_cam_to_world, refined_points, observation_ok, stats, reports
    )


def _solve_on_device(
    model,
    options: BundleOptions,
    ba_options,
    image_rows: list[np.ndarray],
    rows_of: tuple[np.ndarray, np.ndarray, np.ndarray],  # [O] view, [O, 2] pixel, [O] track of each input row
    point_ids: np.ndarray,  # [T] point id of each track
    group: np.ndarray,  # [V] camera index of each image
) -> str:
    """One solve of the observations still in ``model`` with ``bundle_torch`` on ``options.device``; the result
    is written back into ``model``. Returns the solver's brief report."""
    import pycolmap

    from . import bundle_torch

    count = len(image_rows)
    device = torch.device(options.device)
    view, pixel, track_of_row = rows_of
    rows = np.flatnonzero(_observed_rows(model, image_rows))
    xyz = _track_points(model, point_ids)
    live = np.flatnonzero(np.isfinite(xyz).all(-1))
    renumber = np.full(len(point_ids), -1, dtype=np.int64)
    renumber[live] = np.arange(len(live))
    intrinsics, _, world_to_cam = _model_cameras(model, count)
    first_member = np.array([np.flatnonzero(group == index)[0] for index in range(int(group.max()) + 1)])
    constant = np.zeros(count, dtype=bool) if options.constant_poses is None else np.asarray(options.constant_poses)

    def tensor(array, dtype=torch.float64):
        return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

    problem = bundle_torch.Problem(
        world_to_cam=tensor(world_to_cam[:, :3, :4]),
        focal=tensor(intrinsics[first_member, 0]),
        principal=tensor(intrinsics[:, 2:]),
        group=tensor(group, torch.int64),
        points=tensor(xyz[live]),
        view=tensor(view[rows], torch.int64),
        track=tensor(renumber[track_of_row[rows]], torch.int64),
        pixel=tensor(pixel[rows]),
        constant_pose=tensor(constant, torch.bool),
        refine_focal=options.refine_focal,
        refine_points=options.refine_points,
    )
    solver = ba_options.ceres.solver_options
    solution = bundle_torch.solve(
        problem,
        ba_options.ceres.loss_function_scale,
        solver.max_num_iterations,
        solver.function_tolerance,
        solver.parameter_tolerance,
        solver.gradient_tolerance,
    )
    focal, poses = solution.focal.cpu().numpy(), solution.world_to_cam.cpu().numpy()
    for index in range(len(first_member)):
        camera = model.camera(index + 1)
        camera.params = [float(focal[index])] + list(camera.params[1:])
    for index in np.flatnonzero(~constant):
        model.frame(model.image(int(index) + 1).frame_id).rig_from_world = pycolmap.Rigid3d(poses[index])
    if options.refine_points:
        for point_id, point in zip(point_ids[live].tolist(), solution.points.cpu().numpy()):
            model.point3D(point_id).xyz = point
    return solution.brief_report()


def _iterations(report: str) -> int:
    """Iterations of one Ceres brief report ("Ceres Solver Report: Iterations: 12, ..."), 0 when not found."""
    found = re.search(r"Iterations: (\d+)", report)
    return int(found.group(1)) if found else 0
