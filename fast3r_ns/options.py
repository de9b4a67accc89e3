"""The options of ``reconstruct``, nested by concern and checked on construction.

``ReconstructOptions`` holds ``cameras`` (``CameraOptions``: focal and pose recovery), ``points``
(``PointOptions``: the point cloud and the COLMAP model's tracks), ``refine`` (``RefineOptions``: the bundle
adjustment, off unless ``enabled``, with its ``flow`` rounds and its ``bundle`` adjustment) and the run-wide fields
(device, chunking, passes). Every dataclass raises ``ValueError`` naming the field on a value out of range.
``fast3r_ns.process.reconstruct_options`` is the one place the command-line flags map onto these. Imports nothing
heavy (no torch), so that the command line's ``--help`` stays light.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Literal, get_args

FocalMode = Literal["per-view", "shared", "official"]
PrincipalPoint = Literal["official", "centered"]
PointSource = Literal["global", "local"]
Colors = Literal["original", "network"]
TrackSource = Literal["pointmaps", "flow"]
FlowPreset = Literal["auto", "ultrafast", "fast", "medium"]
BundleFocal = Literal["grouped", "per-view", "fixed"]
BundleSolver = Literal["auto", "ceres", "torch"]


@dataclass
class CameraOptions:
    """How the cameras (focal lengths, poses) are recovered from the pointmaps (``fast3r_ns.cameras``)."""

    focal_mode: FocalMode = "per-view"
    """"per-view": one focal per image from its local pointmap (mixed cameras, zoom); "shared": one focal for all
    images, in original pixels (say so when one camera took every image); "official": the official Fast3R recovery
    (view 0's focal for every view, OpenCV PnP-RANSAC per view; needs OpenCV), for comparison. Default is
    "per-view"."""
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
    pnp_iterations: int = 100
    """RANSAC iterations of the "official" mode's PnP (the official demo uses 100). Default is 100."""
    official_principal_point: PrincipalPoint = "official"
    """Principal point of the "official" mode: "official" reproduces the official (W/2, H/2) on the integer pixel
    grid, half a pixel off the image centre in continuous coordinates; "centered" puts it at the original image
    centre (what the other modes assume), to separate that offset from the rest of the official method.
    Default is "official"."""

    def __post_init__(self) -> None:
        _one_of(self, "focal_mode", FocalMode)
        _one_of(self, "official_principal_point", PrincipalPoint)
        _at_least(self, 1, "solver_points", "min_pose_points", "pnp_iterations")
        _at_least(self, 0, "pose_iterations")
        _percentile(self, "solver_conf_percentile")
        _positive(self, "max_residual")
        _between(self, "min_inlier_fraction", 0.0, 1.0)
        low_high = self.focal_range
        if not (len(low_high) == 2 and all(_number(v) for v in low_high) and 0 < low_high[0] < low_high[1]):
            _fail(self, "focal_range", "must be (low, high) with 0 < low < high")


@dataclass
class PointOptions:
    """Which pixels make the point cloud and how (``fast3r_ns.point_cloud``), and the COLMAP model's tracks
    without the refinement (``fast3r_ns.colmap_tracks``). The confidence gates apply to the tracks too."""

    conf_percentile: float = 10.0
    """Drop the lowest X percent confidence pixels of each view from the point cloud. Default is 10.0."""
    min_confidence: float = 1.5
    """Absolute floor on the global confidence (which is >= 1) for points of the cloud. Default is 1.5."""
    max_points: int = 500_000
    """Voxel-thin the cloud to about this many points (a good size to initialise splatfacto). Default is 500_000."""
    point_source: PointSource = "global"
    """Cloud from the global pointmap, or from each local pointmap moved by its estimated pose ("official" mode
    always uses the global one). Default is "global"."""
    drop_untrusted_views: bool = True
    """Leave views whose pose is not trusted out of the point cloud. Default is True."""
    colors: Colors = "original"
    """Point colours from the original image files, or from the network input (no file reads). Default is
    "original"."""
    io_workers: int = 8
    """Threads reading the original images for the point colours. Default is 8."""
    seed: int = 0
    """Seed of the point subsampling. Default is 0."""
    colmap_tracks: bool = True
    """Without the refinement: multi-view tracks for the COLMAP model (``fast3r_ns.colmap_tracks``: pixels of
    neighbouring views whose predicted points agree, triangulated with the recovered cameras; neighbours, matches
    per pair and the error gate from ``RefineOptions``); their points join the cloud. Off, the COLMAP model holds
    cameras and images but no points. Default is True."""
    colmap_track_samples: int = 1024
    """``colmap_tracks``: grid samples per view that may become track observations (300 at 1000 views took as long
    and kept 30x fewer points: the sub-pixel step cannot bridge the wider grid). Default is 1024."""
    fuse: bool | None = None
    """After the refinement: the dense cloud from each view's local depth on its refined camera, kept where
    neighbouring views confirm it and averaged with them (``point_cloud.fuse_dense``, ``geometry.fusion``) instead
    of the global pointmaps, whose per-view misplacement the refined cameras no longer share. None: on with
    ``refine.enabled``. Default is None."""
    fuse_flow_memory_mb: int = 1024
    """``fuse``: memory for the flows of the refinement's rounds that the fused cloud triangulates (each view's
    depth from its flow matches and the refined cameras, ``geometry.fusion.triangulated_depths``; 0.8 MB per view
    pair at 512x384; pairs beyond it keep the local depth). 0: fuse the local depth maps only. Default is 1024."""

    def __post_init__(self) -> None:
        _percentile(self, "conf_percentile")
        if not (_number(self.min_confidence) and math.isfinite(self.min_confidence)):
            _fail(self, "min_confidence", "must be a finite number (confidence is >= 1)")
        _at_least(self, 1, "max_points", "io_workers", "colmap_track_samples")
        _at_least(self, 0, "fuse_flow_memory_mb")
        _one_of(self, "point_source", PointSource)
        _one_of(self, "colors", Colors)
        if self.fuse not in (None, True, False):
            _fail(self, "fuse", "must be True, False or None")


@dataclass
class RefineFlowOptions:
    """The flow stage of the refinement (``tracks="flow"``): rounds of optical flow started from the pointmaps
    (``geometry.flow``) + bundle adjustment, and the guard against unsupported camera moves. ``preset``,
    ``stride``, ``max_pair_matches`` and ``correction_spread`` are those of ``geometry.flow.FlowOptions``.
    None/"auto": a value by scene size (``REFINE_AUTO_VALUES``, ``RefineOptions.resolved``)."""

    preset: FlowPreset = "auto"
    """DIS optical flow preset; "auto": "medium", "fast" above ``RefineOptions.large_views``. Default is "auto"."""
    stride: int | None = None
    """Grid step of the anchor pixels (network pixels); None: 8, 16 above ``RefineOptions.large_views``.
    Default is None."""
    max_pair_matches: int | None = None
    """Most correspondences kept per directed view pair; None: 1024, 256 above ``RefineOptions.large_views``.
    Default is None."""
    max_observations: int | None = None
    """Budget of flow correspondences over all pairs (``FlowOptions.max_observations``: the per-pair cap shrinks
    so that the adjustment's size stays bounded as views grow, at least 64); 0: no budget. None: 150_000, none
    above ``RefineOptions.large_views`` (256 per pair there). Measured with ``bench_refine.py --set``
    (``refine_cpu.jsonl``): 100 views of 512x384, 300k -> 150k: 401k -> 233k observations, rotation max / median
    0.034 / 0.014 -> 0.035 / 0.014 deg; 200 views: 470k -> 266k observations (64 a pair), 0.032 / 0.012 -> 0.022
    / 0.013 deg, each adjustment 22 -> 12 s on 2 cores. Default is None."""
    correction_spread: float | None = None
    """Adaptive correction gate of the flow matches (``FlowOptions.correction_spread``, with a 64 network px cap;
    0: the fixed ``FlowOptions.max_correction`` of 6 network px of the large-scene measurements). None: 3, 0 above
    ``RefineOptions.large_views``. Default is None."""
    min_observations: int = 40
    """The cameras are first refined on pointmap tracks; a view with fewer flow observations in tracks of three or
    more views keeps that camera's pose in the flow adjustment. Default is 40."""
    rounds: int | None = None
    """Most rounds of flow + bundle adjustment; each round after the first predicts the flow from the cameras of
    the previous one. None: 4, 1 above ``RefineOptions.large_views`` (not measured there yet). Default is None."""
    tolerance_deg: float = 0.02
    """The rounds stop when in the last one no camera turned more than this (degrees, after removing a common
    rotation) and no focal changed more than ``tolerance_focal``. Default is 0.02."""
    tolerance_focal: float = 0.001
    """Relative focal change below which the rounds may stop (see above). Default is 0.001."""
    depth: bool | None = None
    """The first round, too, predicts the flow from each view's local depth and its camera instead of its global
    pointmap. None: True, False above ``RefineOptions.large_views``. Default is None."""
    depth_median: int = 1
    """Side (odd, network pixels) of the median filter on each view's local depth before it predicts the flow
    (``refine_rounds.depth_pointmap``); 1: none. 5 (``splat_poses_cpu.jsonl``, "session 14 A/B"): mixed, room
    worse at 1x and 2 deg, room_natural 2 deg seed 11 5.7 -> 1.2 deg max; no splat gain. Default is 1."""
    filter_spread: float | None = None
    """After the first solve of each flow adjustment, observations reprojecting farther than this many times the
    median reprojection error (at least 0.2 px, at most ``RefineBundleOptions.max_reprojection_error``) are dropped
    and the robust loss scale follows (``BundleOptions.adaptive_spread``; 0: the fixed
    ``max_reprojection_error`` only). None: 5, 0 above ``RefineOptions.large_views``. Default is None."""
    reuse_px: float = 2.0
    """A view pair keeps its flows of an earlier round while its predicted flow moved at most this many network
    pixels since (``FlowOptions.reuse_px``; 0: always recompute). 0.5 -> 2 (``splat_poses_cpu.jsonl``, "session 7
    A/B", room and room_natural at 1x and 6x, seeds 11 and 23): rotation max the same or lower in all 8 cases, each
    7-18 % faster; 200 views on 2 cores 102 -> 82 s, rotation 0.022 / 0.013 -> 0.024 / 0.014 deg. Default is 2.0."""
    relocalise_radius: int = 48
    """Between rounds, a held view is relocalised: its free neighbours' anchors are searched for in it by patch
    correlation within this many network pixels of the predicted flow and its pose solved by PnP-RANSAC on them
    (``geometry.relocalise``), so that the next round predicts its flow from that pose; 0: off. Default is 48."""
    relocalise_features: int = 2000
    """Where the patch search finds no acceptable pose, SIFT matches (at most this many keypoints per image) with
    the free neighbours take its place (``WindowOptions.features``); 0: off. Room_natural at 2 deg, oracle seed 11:
    view 15, a close-up its neighbours see at about twice the distance, 5.1 -> 0.7 deg (docs/refine.md).
    Default is 2000."""
    guard_deg: float = 1.0
    """A view the refinement turned more than this (degrees) from the prediction on few (below
    ``min_observations``) or inconsistent flow observations is flagged (pose_ok false, with a note, and in
    ``Reconstruction.refine_unfixed``). Default is 1.0."""
    guard_focal: float = 0.25
    """A view whose focal the refinement changed by more than this (relative) is flagged the same way.
    Default is 0.25."""

    def __post_init__(self) -> None:
        _one_of(self, "preset", FlowPreset)
        _at_least(self, 1, "stride", "max_pair_matches", "rounds", optional=True)
        _at_least(self, 0, "correction_spread", "filter_spread", "max_observations", optional=True)
        _at_least(self, 0, "relocalise_radius", "relocalise_features")
        _at_least(
            self,
            0,
            "min_observations",
            "tolerance_deg",
            "tolerance_focal",
            "reuse_px",
            "guard_deg",
            "guard_focal",
        )
        if self.depth not in (None, True, False):
            _fail(self, "depth", "must be True, False or None")
        if not isinstance(self.depth_median, int) or self.depth_median < 1 or self.depth_median % 2 == 0:
            _fail(self, "depth_median", "must be an odd whole number >= 1")


@dataclass
class RefineBundleOptions:
    """The bundle adjustment of the refinement (pycolmap, ``fast3r_ns.refine``). The fields named like those of
    ``refine.BundleOptions`` mean the same; None: a value by scene size (``REFINE_AUTO_VALUES``)."""

    focal: BundleFocal = "grouped"
    """Focal lengths in the bundle adjustment: "grouped" shares one focal among images of the same size whose
    focal estimates agree within ``focal_tolerance`` (one camera; with focal_mode "shared"/"official" that is all
    images), "per-view" refines one per image, "fixed" keeps them. Default is "grouped"."""
    focal_tolerance: float = 0.02
    """"grouped": relative focal difference below which images count as one camera. Default is 0.02."""
    refine_principal_point: bool = False
    """Also refine the principal points. Default is False."""
    refine_distortion: bool = False
    """Also refine one radial distortion coefficient k1 per camera (COLMAP's SIMPLE_RADIAL in the adjustment;
    written as OpenCV k1 to transforms.json and the COLMAP model). For lenses with visible distortion; the dense
    cloud stays undistorted (the pointmaps are). Default is False."""
    refine_points: bool | None = None
    """Let the track points move in the bundle adjustment (classic bundle adjustment). Off, they stay at the
    pointmaps' 3-D positions and only the cameras move, which keeps the pointmaps' drift-free global shape but also
    their local errors. None: free with "flow" tracks up to ``RefineOptions.large_views`` views, constant above it
    and with "pointmaps" tracks (free points let long sequences bend: on the synthetic 300-degree arcs, 4x larger
    rotation errors with pointmap tracks, 8-10x with flow tracks at 400 and 1000 views; docs/refine.md). Default
    is None."""
    max_reprojection_error: float = 4.0
    """Observations reprojecting farther than this (original-image pixels) are dropped between the rounds of the
    bundle adjustment (and the COLMAP model's tracks without the refinement). Default is 4.0."""
    max_iterations: int | None = None
    """Ceres iterations per bundle-adjustment round (two rounds); None: 50, 25 above ``RefineOptions.large_views``.
    Default is None."""
    num_threads: int = -1
    """Threads of the bundle adjustment; -1 uses every core. Default is -1."""
    function_tolerance: float | None = None
    """The solves after the first of each adjustment (after removing outliers, started near the optimum) stop when
    an iteration lowers the cost by less than this fraction; 0 (COLMAP's setting) runs to ``max_iterations`` or the
    gradient tolerance. None: 1e-6, 0 above ``RefineOptions.large_views`` (measured with ``max_observations``, see
    there: 129 -> 31 Ceres iterations). Default is None."""
    solver: BundleSolver = "auto"
    """Who solves the bundle adjustment: "ceres" (pycolmap, on the CPU), "torch" (``fast3r_ns.bundle_torch``, the
    same cost and trust-region rules on the run's ``device``; not with distortion or principal points, which stay
    with Ceres), "auto": torch on a CUDA device, else Ceres. Default is "auto"."""

    def __post_init__(self) -> None:
        _one_of(self, "focal", BundleFocal)
        _one_of(self, "solver", BundleSolver)
        _at_least(self, 0, "function_tolerance", optional=True)
        _at_least(self, 0, "focal_tolerance")
        _positive(self, "max_reprojection_error")
        _at_least(self, 1, "max_iterations", optional=True)
        if self.refine_points not in (None, True, False):
            _fail(self, "refine_points", "must be True, False or None")
        if not (isinstance(self.num_threads, int) and (self.num_threads == -1 or self.num_threads >= 1)):
            _fail(self, "num_threads", "must be -1 (every core) or at least 1")


@dataclass
class RefineOptions:
    """The refinement of cameras and points by bundle adjustment on multi-view tracks (``fast3r_ns.refinement``),
    on when ``enabled``. ``neighbors``, ``max_pair_matches`` and ``bundle.max_reprojection_error`` also shape the
    COLMAP model's tracks when it is off (``PointOptions.colmap_tracks``)."""

    enabled: bool = False
    """Refine cameras and points (pycolmap, ``fast3r_ns.refine``) on multi-view tracks (see ``tracks``); the
    refined track points join the cloud and the COLMAP model keeps their tracks. Default is False."""
    tracks: TrackSource = "flow"
    """Where the refinement's correspondences come from. "pointmaps": pixels whose global 3-D points coincide
    (``geometry.tracks``; they inherit each view's pointmap misplacement); "flow": the cameras are first refined
    on "pointmaps" tracks, then DIS optical flow of each candidate pair started from the pointmaps' prediction,
    kept where forward and backward flows agree (``geometry.flow``; needs OpenCV), with free track points; better
    cameras on both splat scenes, about twice the time. Default is "flow"."""
    large_views: int = 300
    """Scenes with more views than this get the large-scene values of the options left at None/"auto" (cheaper per
    view, so that 1000 views refine in minutes on a CPU; docs/refine.md); smaller scenes get the values measured on
    the splat scenes (``REFINE_AUTO_VALUES``). Default is 300."""
    samples: int | None = None
    """"pointmaps" (and the first stage of "flow"): grid samples per view that may become track observations;
    None: 2048, 1024 above ``large_views``. Default is None."""
    neighbors: int = 10
    """Each view is matched with this many nearest views (camera centre and viewed points). Default is 10."""
    max_pair_matches: int = 256
    """Pointmap tracks: at most this many matches per view pair (the closest in 3-D). Default is 256."""
    flow: RefineFlowOptions = field(default_factory=RefineFlowOptions)
    """The flow rounds (``tracks="flow"``)."""
    bundle: RefineBundleOptions = field(default_factory=RefineBundleOptions)
    """The bundle adjustment."""

    def __post_init__(self) -> None:
        _one_of(self, "tracks", TrackSource)
        _at_least(self, 0, "large_views")
        _at_least(self, 1, "samples", optional=True)
        _at_least(self, 1, "neighbors", "max_pair_matches")
        _instance(self, "flow", RefineFlowOptions)
        _instance(self, "bundle", RefineBundleOptions)

    def resolved(self, views: int) -> RefineOptions:
        """These options with every None/"auto" value of ``REFINE_AUTO_VALUES`` set for a scene of ``views``
        views (``bundle.refine_points`` may stay None: free points with flow tracks, constant with pointmap
        ones)."""
        large = views > self.large_views
        values = {path: pair[large] for path, pair in REFINE_AUTO_VALUES.items() if _get(self, path) in (None, "auto")}
        return with_values(self, values)


# Values of the None/"auto" refinement options (paths in RefineOptions): (up to ``large_views`` views, above).
REFINE_AUTO_VALUES: dict[str, tuple[Any, Any]] = {
    "bundle.refine_points": (None, False),
    "flow.preset": ("medium", "fast"),
    "flow.stride": (8, 16),
    "flow.max_pair_matches": (1024, 256),
    "samples": (2048, 1024),
    "bundle.max_iterations": (50, 25),
    # Issue #17 (flow rounds from local depth, adaptive gates): measured up to 300 views; larger scenes keep the
    # one-round method of the 1000-view measurements until measured.
    "flow.rounds": (4, 1),
    "flow.depth": (True, False),
    "flow.filter_spread": (5.0, 0.0),
    "flow.correction_spread": (3.0, 0.0),
    # The adjustment's cost (issue #17's 200 views on the GPU machine): measured at 100 and 200 views.
    "flow.max_observations": (150_000, 0),
    "bundle.function_tolerance": (1e-6, 0.0),
}


@dataclass
class ReconstructOptions:
    """How cameras and the point cloud are recovered from the pointmaps: by concern (``cameras``, ``points``,
    ``refine``) and for the whole run."""

    cameras: CameraOptions = field(default_factory=CameraOptions)
    """Focal and pose recovery."""
    points: PointOptions = field(default_factory=PointOptions)
    """The point cloud and the COLMAP model's tracks."""
    refine: RefineOptions = field(default_factory=RefineOptions)
    """The bundle-adjustment refinement (off unless ``refine.enabled``)."""
    device: str | None = None
    """Torch device for the geometry; None picks "cuda" when available, else "cpu". Default is None."""
    chunk_views: int = 64
    """Views processed together (bounds memory for long sequences). Default is 64."""
    max_views_per_pass: int | None = None
    """Most views in one predictor call; more are predicted in overlapping passes that share anchor views and are
    merged by robust similarity fits (``fast3r_ns.chunked``). None: all views in one pass unless the predictor says
    they do not fit (``Fast3RPredictor`` estimates it from the free GPU memory; never on the CPU). Default is
    None."""
    anchor_views: int = 8
    """Views shared by every pass when chunked (view 0 and views spread over the sequence; at most a quarter of a
    pass). Default is 8."""

    def __post_init__(self) -> None:
        _instance(self, "cameras", CameraOptions)
        _instance(self, "points", PointOptions)
        _instance(self, "refine", RefineOptions, " (e.g. RefineOptions(enabled=True))")
        if self.device is not None and not isinstance(self.device, str):
            _fail(self, "device", 'must be a torch device name such as "cpu" or "cuda:1", or None')
        _at_least(self, 1, "chunk_views", "anchor_views")
        _at_least(self, 2, "max_views_per_pass", optional=True)


def with_values(options: Any, values: Mapping[str, Any]) -> Any:
    """A copy of the dataclass ``options`` with ``values`` set by dotted path (``{"refine.flow.rounds": 3}``),
    checked like a new one; an unknown path raises ValueError."""
    nested: dict[str, dict[str, Any]] = {}
    changes: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(options)}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if head not in names:
            raise ValueError(f"{type(options).__name__} has no option {head!r} (in {path!r})")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            current = getattr(options, head)
            changes[head] = tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value
    for head, inner in nested.items():
        part = changes.get(head, getattr(options, head))
        if not dataclasses.is_dataclass(part):
            raise ValueError(f"{type(options).__name__}.{head} has no options ({', '.join(inner)})")
        changes[head] = with_values(part, inner)
    return dataclasses.replace(options, **changes)


def _get(options: Any, path: str) -> Any:
    for name in path.split("."):
        options = getattr(options, name)
    return options


def _fail(options: Any, name: str, requirement: str) -> None:
    raise ValueError(f"{type(options).__name__}.{name}={getattr(options, name)!r}: {requirement}")


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _at_least(options: Any, low: float, *names: str, optional: bool = False) -> None:
    for name in names:
        value = getattr(options, name)
        if value is None and optional:
            continue
        if not (_number(value) and value >= low):  # NaN fails too
            _fail(options, name, f"must be a number >= {low}" + (" or None" if optional else ""))


def _positive(options: Any, name: str) -> None:
    value = getattr(options, name)
    if not (_number(value) and value > 0):
        _fail(options, name, "must be a number > 0")


def _between(options: Any, name: str, low: float, high: float) -> None:
    value = getattr(options, name)
    if not (_number(value) and low <= value <= high):
        _fail(options, name, f"must be in [{low}, {high}]")


def _percentile(options: Any, name: str) -> None:
    value = getattr(options, name)
    if not (_number(value) and 0 <= value < 100):
        _fail(options, name, "must be a percentage in [0, 100)")


def _one_of(options: Any, name: str, literal: Any) -> None:
    allowed = get_args(literal)
    if getattr(options, name) not in allowed:
        _fail(options, name, f"must be one of {', '.join(repr(a) for a in allowed)}")


def _instance(options: Any, name: str, kind: type, hint: str = "") -> None:
    if not isinstance(getattr(options, name), kind):
        _fail(options, name, f"must be a {kind.__name__}{hint}")
