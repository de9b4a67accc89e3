"""The options of ``reconstruct``: nested by concern, checked on construction, set by dotted path; the CLI flags map
onto them in ``process.reconstruct_options``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fast3r_ns.options import (
    REFINE_AUTO_VALUES,
    CameraOptions,
    PointOptions,
    ReconstructOptions,
    RefineBundleOptions,
    RefineFlowOptions,
    RefineOptions,
    with_values,
)
from fast3r_ns.process import ProcessConfig, reconstruct_options


def test_defaults_construct_and_keep_their_values() -> None:
    options = ReconstructOptions()
    assert options.cameras == CameraOptions() and options.points == PointOptions()
    assert options.refine == RefineOptions() and not options.refine.enabled
    assert (options.cameras.focal_mode, options.cameras.focal_range) == ("per-view", (0.1, 10.0))
    assert (options.points.conf_percentile, options.points.max_points, options.points.colmap_tracks) == (
        10,
        500_000,
        True,
    )
    assert (options.refine.tracks, options.refine.large_views, options.refine.neighbors) == ("flow", 300, 10)
    assert (options.refine.flow.tolerance_deg, options.refine.bundle.max_reprojection_error) == (0.02, 4.0)
    assert (options.chunk_views, options.anchor_views, options.max_views_per_pass, options.device) == (
        64,
        8,
        None,
        None,
    )
    # Each nested default is its own object.
    assert ReconstructOptions().refine is not options.refine


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: CameraOptions(focal_mode="zoom"), "CameraOptions.focal_mode"),
        (lambda: CameraOptions(solver_conf_percentile=100), "CameraOptions.solver_conf_percentile"),
        (lambda: CameraOptions(solver_points=0), "CameraOptions.solver_points"),
        (lambda: CameraOptions(focal_range=(10.0, 0.1)), "CameraOptions.focal_range"),
        (lambda: CameraOptions(focal_range=(0.0, 1.0)), "CameraOptions.focal_range"),
        (lambda: CameraOptions(min_inlier_fraction=1.5), "CameraOptions.min_inlier_fraction"),
        (lambda: CameraOptions(max_residual=0.0), "CameraOptions.max_residual"),
        (lambda: CameraOptions(official_principal_point="middle"), "CameraOptions.official_principal_point"),
        (lambda: PointOptions(conf_percentile=-1), "PointOptions.conf_percentile"),
        (lambda: PointOptions(conf_percentile=float("nan")), "PointOptions.conf_percentile"),
        (lambda: PointOptions(min_confidence=float("inf")), "PointOptions.min_confidence"),
        (lambda: PointOptions(max_points=0), "PointOptions.max_points"),
        (lambda: PointOptions(colors="rgb"), "PointOptions.colors"),
        (lambda: PointOptions(point_source="both"), "PointOptions.point_source"),
        (lambda: RefineOptions(tracks="keypoints"), "RefineOptions.tracks"),
        (lambda: RefineOptions(neighbors=0), "RefineOptions.neighbors"),
        (lambda: RefineOptions(samples=0), "RefineOptions.samples"),
        (lambda: RefineOptions(flow={"rounds": 3}), "RefineOptions.flow"),
        (lambda: RefineFlowOptions(preset="slow"), "RefineFlowOptions.preset"),
        (lambda: RefineFlowOptions(rounds=0), "RefineFlowOptions.rounds"),
        (lambda: RefineFlowOptions(tolerance_deg=-0.1), "RefineFlowOptions.tolerance_deg"),
        (lambda: RefineFlowOptions(correction_spread=-1.0), "RefineFlowOptions.correction_spread"),
        (lambda: RefineFlowOptions(depth_median=4), "RefineFlowOptions.depth_median"),
        (lambda: RefineBundleOptions(focal="shared"), "RefineBundleOptions.focal"),
        (lambda: RefineBundleOptions(max_reprojection_error=0), "RefineBundleOptions.max_reprojection_error"),
        (lambda: RefineBundleOptions(num_threads=0), "RefineBundleOptions.num_threads"),
        (lambda: RefineBundleOptions(focal_tolerance=-0.01), "RefineBundleOptions.focal_tolerance"),
        (lambda: ReconstructOptions(refine=True), "ReconstructOptions.refine"),
        (lambda: ReconstructOptions(max_views_per_pass=1), "ReconstructOptions.max_views_per_pass"),
        (lambda: ReconstructOptions(chunk_views=0), "ReconstructOptions.chunk_views"),
    ],
)
def test_bad_values_raise_one_line_naming_the_field(make, field) -> None:
    with pytest.raises(ValueError) as caught:
        make()
    message = str(caught.value)
    assert message.startswith(f"{field}=") and "\n" not in message


def test_boundary_values_are_accepted() -> None:
    CameraOptions(solver_conf_percentile=0, pose_iterations=0, min_inlier_fraction=1.0, focal_range=(0.5, 0.6))
    PointOptions(conf_percentile=99.9, min_confidence=-1.0, max_points=1)
    RefineOptions(large_views=0, flow=RefineFlowOptions(correction_spread=0.0, filter_spread=0.0, rounds=1))
    RefineBundleOptions(num_threads=1, refine_points=False, max_iterations=1)
    ReconstructOptions(max_views_per_pass=2, device="cuda:1")


def test_replace_checks_again() -> None:
    with pytest.raises(ValueError, match="PointOptions.max_points"):
        dataclasses.replace(PointOptions(), max_points=-5)


def test_with_values_sets_nested_options_by_path() -> None:
    options = with_values(ReconstructOptions(), {"refine.flow.rounds": 2, "refine.enabled": True, "device": "cpu"})
    assert (options.refine.flow.rounds, options.refine.enabled, options.device) == (2, True, "cpu")
    assert options.refine.flow.tolerance_deg == 0.02 and ReconstructOptions().refine.flow.rounds is None
    ranged = with_values(ReconstructOptions(), {"cameras.focal_range": [0.2, 5.0]})  # JSON lists become tuples
    assert ranged.cameras.focal_range == (0.2, 5.0)
    with pytest.raises(ValueError, match="no option 'round'"):
        with_values(ReconstructOptions(), {"refine.flow.round": 2})
    with pytest.raises(ValueError, match="has no options"):
        with_values(ReconstructOptions(), {"device.name": "cpu"})
    with pytest.raises(ValueError, match="RefineFlowOptions.rounds"):
        with_values(ReconstructOptions(), {"refine.flow.rounds": 0})


def test_every_auto_value_path_exists_and_starts_unset() -> None:
    options = RefineOptions()
    for path in REFINE_AUTO_VALUES:
        part, _, name = path.rpartition(".")
        assert getattr(getattr(options, part) if part else options, name) in (None, "auto"), path


def test_cli_flags_map_onto_the_nested_options(tmp_path: Path) -> None:
    default = reconstruct_options(ProcessConfig(data=tmp_path, output_dir=tmp_path / "out"))
    assert default == ReconstructOptions()
    config = ProcessConfig(
        data=tmp_path,
        output_dir=tmp_path / "out",
        device="cpu",
        focal_mode="shared",
        conf_percentile=20.0,
        min_confidence=2.0,
        max_points=1000,
        refine=True,
        refine_tracks="pointmaps",
        refine_distortion=True,
        colmap_tracks=False,
        fuse_points=False,
        max_views_per_pass=16,
    )
    options = reconstruct_options(config)
    assert options.cameras == CameraOptions(focal_mode="shared")
    assert options.points == PointOptions(
        conf_percentile=20.0, min_confidence=2.0, max_points=1000, colmap_tracks=False, fuse=False
    )
    assert options.refine == RefineOptions(
        enabled=True, tracks="pointmaps", bundle=RefineBundleOptions(refine_distortion=True)
    )
    assert (options.device, options.max_views_per_pass) == ("cpu", 16)
