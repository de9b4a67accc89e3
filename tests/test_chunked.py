"""Chunked reconstruction: passes sharing anchor views, merged by robust similarity fits (oracle scenes, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fast3r_ns import PointOptions, ReconstructOptions, reconstruct
from fast3r_ns.chunked import (
    ChunkedPredictor,
    estimate_pass_gib,
    plan_chunks,
    summary_lines,
    views_per_pass_for_memory,
)
from fast3r_ns.io import load_images
from fast3r_ns.testing import OraclePredictor, make_scene
from fast3r_ns.testing.metrics import camera_errors

VIEWS = 20
NOISE = {"depth_noise": 0.03, "point_noise": 0.01, "outlier_fraction": 0.05, "low_conf_fraction": 0.1}


@pytest.fixture(scope="module")
def scene_images(tmp_path_factory):
    sizes = ([(120, 90), (96, 96), (90, 120), (120, 90), (126, 84), (120, 90), (120, 90)] * 3)[:VIEWS]
    factors = ([1.0, 0.7, 1.3, 1.0, 1.15, 0.85, 1.0] * 3)[:VIEWS]
    scene = make_scene(VIEWS, image_size=sizes, focal_factors=factors, arc_degrees=150, seed=3)
    images = load_images(scene.write_images(tmp_path_factory.mktemp("chunked")), size=96)
    return scene, images


@pytest.mark.parametrize("order", ["interleaved", "contiguous"])
def test_plan_covers_every_view_once_with_shared_anchors(order) -> None:
    anchors, passes = plan_chunks(23, 8, num_anchors=8, order=order)
    assert anchors == [0, 11]  # at most a quarter of a pass, view 0 first, spread over the sequence
    assert all(p[:2] == anchors and len(p) <= 8 for p in passes)
    own = sorted(v for p in passes for v in p[2:])
    assert own == [v for v in range(23) if v not in anchors] and len(passes) == 4
    if order == "interleaved":
        assert passes[0][2:] == [1, 5, 9, 14, 18, 22]
    else:
        assert passes[0][2:] == [1, 2, 3, 4, 5, 6]
    assert plan_chunks(5, 8) == ([0], [[0, 1, 2, 3, 4]])
    with pytest.raises(ValueError, match="at least 2"):
        plan_chunks(5, 1)


def test_oracle_subset_call_is_in_its_first_views_frame(scene_images) -> None:
    scene, images = scene_images
    oracle = OraclePredictor(scene, images, normalize=False)
    full = oracle([im.tensor for im in images])
    subset = oracle([images[i].tensor for i in (4, 2, 9)])
    to_cam4 = np.linalg.inv(scene.cameras[4].cam_to_world) @ scene.cameras[0].cam_to_world
    expected = full[9]["pts3d_in_other_view"][0].double().numpy() @ to_cam4[:3, :3].T + to_cam4[:3, 3]
    np.testing.assert_allclose(subset[2]["pts3d_in_other_view"][0].numpy(), expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="subset"):
        oracle([torch.zeros(1, 3, 96, 72)])


def test_exact_chunks_merge_into_the_one_pass_result(scene_images) -> None:
    scene, images = scene_images
    views = [im.tensor for im in images]
    oracle = OraclePredictor(scene, images, call_scale_jitter=0.5, call_frame_jitter=5.0)
    one_pass = oracle(views)
    chunked = ChunkedPredictor(oracle, max_views_per_pass=8, num_anchors=2)
    merged = chunked(views)
    # One global similarity takes the whole merged prediction onto the one-pass one (here: a scale and the
    # one-pass call's jitter); exact data leaves nothing else.
    a = torch.cat([o["pts3d_in_other_view"].reshape(-1, 3) for o in merged]).double()
    b = torch.cat([o["pts3d_in_other_view"].reshape(-1, 3) for o in one_pass]).double()
    from fast3r_ns.geometry.align import apply_similarity, umeyama

    s, r, t = umeyama(a, b)
    np.testing.assert_allclose(apply_similarity(a, s, r, t).numpy(), b.numpy(), atol=2e-5 * float(b.norm(dim=-1).max()))
    for m, o in zip(merged, one_pass):  # local pointmaps pass through (exact here); confidences are per pass
        torch.testing.assert_close(m["pts3d_local"], o["pts3d_local"])
        assert m["conf"].shape == o["conf"].shape and m["conf"].min() >= 2.0
    report = chunked.report
    assert [f.chunk for f in report] == [0, 1, 2] and [f.views for f in report] == [8, 8, 8]
    assert report[0].anchor_points == 0 and report[0].scale == 1.0
    for fit in report[1:]:
        assert fit.ok and fit.residual_rel < 1e-5 and fit.inlier_fraction > 0.9
        assert fit.anchor_points == 2 * 96 * 64  # every pixel of the two anchors (views 0 and 10)
        assert fit.rotation_deg > 0.5 and abs(np.log(fit.scale)) > 0.01  # the jitter was there to be undone


def test_chunked_cameras_match_ground_truth_like_one_pass(scene_images) -> None:
    scene, images = scene_images
    truth = scene.cam_to_world_in_view0()
    focal = np.array([c.intrinsics[0] for c in scene.cameras])
    exact = OraclePredictor(scene, images, call_scale_jitter=0.5, call_frame_jitter=5.0)
    options = ReconstructOptions(
        points=PointOptions(max_points=2000), device="cpu", max_views_per_pass=8, anchor_views=2
    )
    result = reconstruct(images, exact, options)
    errors = camera_errors(result.cam_to_world, truth, scene.size)
    assert result.pose_ok.all()  # same tolerances as one pass on exact pointmaps (tests/test_pipeline.py)
    assert errors["rotation_err_deg"].max() < 1e-3 and errors["translation_err_rel"].max() < 1e-5
    np.testing.assert_allclose(result.intrinsics[:, 0], focal, rtol=1e-5)
    assert len(result.chunk_report) == 3 and all(f["ok"] for f in result.chunk_report)

    noisy = OraclePredictor(scene, images, **NOISE, call_scale_jitter=0.5, call_frame_jitter=5.0, seed=7)
    result = reconstruct(images, noisy, options)
    errors = camera_errors(result.cam_to_world, truth, scene.size)
    # Noise drawn afresh per pass: the anchors disagree between passes as a network's would.
    assert result.pose_ok.all()  # same tolerances as one pass on noisy pointmaps
    assert errors["rotation_err_deg"].max() <= 0.2 and errors["translation_err_rel"].max() <= 2e-3
    assert np.abs(result.intrinsics[:, 0] / focal - 1).max() <= 0.01
    report = result.chunk_report
    assert all(f["ok"] for f in report)
    assert all(0.01 < f["residual_rel"] < 0.03 and 0.8 < f["inlier_fraction"] < 1.0 for f in report[1:])
    assert summary_lines([]) == []


def test_poor_fit_is_reported_and_warned(scene_images) -> None:
    scene, images = scene_images
    oracle = OraclePredictor(scene, images)
    calls = []

    def broken(views):
        outputs = oracle(views)
        calls.append(len(views))
        if len(calls) == 3:  # the third pass predicts garbage for its anchors
            generator = torch.Generator().manual_seed(0)
            for output in outputs[:2]:
                output["pts3d_in_other_view"] = torch.randn(output["pts3d_in_other_view"].shape, generator=generator)
        return outputs

    messages = []
    chunked = ChunkedPredictor(broken, max_views_per_pass=8, num_anchors=2, progress=messages.append)
    with pytest.warns(RuntimeWarning, match="pass 3 fits the shared anchor views poorly"):
        chunked([im.tensor for im in images])
    assert [f.ok for f in chunked.report] == [True, True, False]
    assert chunked.report[2].residual_rel > 0.05
    assert messages[0] == "pass 1/3: 8 views (2 shared anchor views)"
    assert any(m.startswith("pass 2/3 merged: scale") for m in messages)
    lines = summary_lines(chunked.report)
    assert lines[0].startswith("Chunked: 3 passes of at most 8 views") and "worst pass 3" in lines[0]
    assert lines[1].startswith("[yellow]pass 3 fits the shared anchor views poorly")


def test_memory_estimate_and_automatic_pass_size() -> None:
    # Measured on an H200 (bf16, 512x384): ~9.1 GiB at 256 views, ~20 GiB at 1000 (outputs to the CPU), 26.1 GiB
    # at 1000 with the outputs on the GPU. The estimate stays above the measurements, by at most 25 %.
    assert 9.1 <= estimate_pass_gib(256) <= 9.1 * 1.25
    assert 20.0 <= estimate_pass_gib(1000) <= 20.0 * 1.15
    assert 26.1 <= estimate_pass_gib(1000, outputs_on_gpu=True) <= 26.1 * 1.1
    assert estimate_pass_gib(1000, itemsize=4) == pytest.approx(2 * estimate_pass_gib(1000))
    # A 24 GB card with ~22 GiB free holds about 900 views of 512x384 per pass; an H200 about 8000.
    assert 850 <= views_per_pass_for_memory(22.0) <= 1000
    assert 7000 <= views_per_pass_for_memory(139.0) <= 9000
    assert views_per_pass_for_memory(1.0) == 2
    # The limit is what makes the estimate fit the budget.
    limit = views_per_pass_for_memory(40.0, weights_resident=False)
    assert estimate_pass_gib(limit) <= 0.9 * 40.0 < estimate_pass_gib(limit + 20)


def test_process_in_passes_reports_the_merge(scene_images, tmp_path) -> None:
    from rich.console import Console

    from fast3r_ns.process import ProcessConfig, process

    scene, images = scene_images
    data = tmp_path / "imgs"
    scene.write_images(data)
    oracle = OraclePredictor(scene, images, call_scale_jitter=0.5, call_frame_jitter=5.0)
    config = ProcessConfig(
        data=data, output_dir=tmp_path / "out", image_size=96, num_downscales=0, max_views_per_pass=8
    )
    result = process(config, console=Console(quiet=True), predictor=oracle)
    rec = result.reconstruction
    assert len(rec.chunk_report) == 3 and all(f["ok"] for f in rec.chunk_report)
    errors = camera_errors(rec.cam_to_world, scene.cam_to_world_in_view0(), scene.size)
    assert errors["rotation_err_deg"].max() < 1e-3 and errors["translation_err_rel"].max() < 1e-5
    line = next(line for line in result.summary if line.startswith("Chunked:"))
    assert "3 passes of at most 8 views" in line and "worst pass" in line
    with pytest.raises(SystemExit):
        from fast3r_ns.process import run_cli

        run_cli(ProcessConfig(data=data, output_dir=tmp_path / "o2", max_views_per_pass=1), Console(quiet=True))
