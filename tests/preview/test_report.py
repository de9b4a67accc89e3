"""The report of a synthetic reconstruction shows that reconstruction's numbers, names, timings and command."""

from __future__ import annotations

import base64
import html
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from preview_scene import TIMINGS, UNTRUSTED_VIEW, WEAK_VIEW, make_confidence_maps, make_reconstruction

from fast3r_ns.preview.files import PREVIEW_DIR, THUMBNAIL_SIZE, read_preview
from fast3r_ns.preview.report import NUM_WEAKEST, REPORT_PNG, write_report

COMMAND = "ns-process-data fast3r --data 'my photos' --output-dir out & <b>"


def report_json(text: str) -> dict:
    match = re.search(r'<script type="application/json" id="fast3r-report-data">(.*?)</script>', text, re.S)
    assert match is not None
    return json.loads(match.group(1))


def element_text(text: str, element_id: str) -> str:
    """Visible text of the element with this id (tags removed, entities decoded)."""
    match = re.search(rf'<(\w+) id="{element_id}"[^>]*>(.*?)</\1>', text, re.S)
    assert match is not None, element_id
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(2)))


def red_pixels(png: Path) -> int:
    """Pixels in the report's "untrusted" red."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(rgb - [198, 40, 40]).sum(axis=2) < 12).sum())


def test_report_matches_reconstruction(tmp_path: Path) -> None:
    rec = make_reconstruction(tmp_path / "input")
    out = tmp_path / "out"
    html_path = write_report(out, rec, make_confidence_maps(rec), command=COMMAND)
    assert html_path == out / "fast3r_report.html"
    text = html_path.read_text(encoding="utf-8")
    data = report_json(text)
    names = [p.name for p in rec.image_paths]

    assert data["num_images"] == rec.num_images and data["num_points"] == len(rec.points)
    assert [image["name"] for image in data["images"]] == names
    np.testing.assert_allclose([[im["fx"], im["fy"]] for im in data["images"]], rec.intrinsics[:, :2])
    weakest = [names[i] for i in np.argsort(rec.view_confidence)[:NUM_WEAKEST]]
    assert data["weakest_images"] == weakest and weakest[0] == names[WEAK_VIEW]
    assert data["weak_images"] == [names[WEAK_VIEW]]
    assert data["untrusted_images"] == [names[UNTRUSTED_VIEW]]
    assert data["images"][UNTRUSTED_VIEW]["note"] == "too few confident points"
    assert data["verdict"] == "check"
    assert data["timings"] == TIMINGS and data["total_seconds"] == pytest.approx(sum(TIMINGS.values()))
    assert data["command"] == COMMAND

    # The same numbers are visible, not only in the JSON.
    assert element_text(text, "command").strip() == COMMAND
    weakest_table = element_text(text, "weakest")
    assert names[WEAK_VIEW] in weakest_table and names[UNTRUSTED_VIEW] in weakest_table
    assert "too few confident points" in weakest_table
    focal_table = element_text(text, "focal")
    for name, (fx, fy) in zip(names, rec.intrinsics[:, :2]):
        assert re.search(rf"{re.escape(name)}\s+{fx:.1f}\s+{fy:.1f}", focal_table)
    timings_table = element_text(text, "timings")
    for stage, seconds in TIMINGS.items():
        assert re.search(rf"{re.escape(stage)}\s+{seconds:.2f}", timings_table)
    advice = element_text(text, "advice")
    assert names[WEAK_VIEW] in advice and names[UNTRUSTED_VIEW] in advice
    assert f"{len(rec.points):,}" in element_text(text, "num-points")

    # Self-contained: the PNG beside it is embedded; nothing is fetched from elsewhere.
    png = (out / REPORT_PNG).read_bytes()
    assert base64.b64encode(png).decode("ascii") in text
    assert not re.search(r"https?:|<link|\bsrc=\"(?!data:)|url\(", text)
    image = np.asarray(Image.open(out / REPORT_PNG).convert("RGB"))
    assert image.shape[0] > 500 and image.shape[1] > 800 and image.std() > 10
    assert red_pixels(out / REPORT_PNG) > 50  # the untrusted camera and its bar

    # Files for the viewer.
    views = read_preview(out)
    assert [v.name for v in views] == names
    assert [v.pose_ok for v in views] == rec.pose_ok.tolist()
    np.testing.assert_allclose([v.confidence for v in views], rec.view_confidence)
    for view in views:
        with Image.open(view.confidence_map) as conf_map:
            assert max(conf_map.size) <= THUMBNAIL_SIZE and conf_map.mode == "RGB"
    np.testing.assert_array_equal(np.load(out / PREVIEW_DIR / "points_confidence.npy"), rec.point_confidence)


def test_report_of_clean_reconstruction_without_extras(tmp_path: Path) -> None:
    """No confidence maps, no pose notes, one shared camera, every view fine: a green report without red."""
    rec = make_reconstruction(tmp_path / "input", pose_notes=False)
    rec.pose_ok[:] = True
    rec.view_confidence[:] = 8.0 + 0.1 * np.arange(rec.num_images)
    rec.intrinsics[:, :2] = [70.0, 71.0]
    rec.shared_intrinsics = True
    rec.timings = {}
    out = tmp_path / "out"
    timings = {"collect": 0.5, "model": 2.0}
    text = write_report(out, rec, timings=timings).read_text(encoding="utf-8")
    data = report_json(text)
    assert data["timings"] == timings
    assert data["command"].split()[0] == Path(sys.argv[0]).name  # default: this process's command line
    assert data["verdict"] == "good" and data["weak_images"] == [] and data["untrusted_images"] == []
    assert "ready for training" in element_text(text, "advice")
    assert re.search(rf"all {rec.num_images} images\s+70.0\s+71.0", element_text(text, "focal"))
    assert red_pixels(out / REPORT_PNG) == 0
    assert all(view.confidence_map is None for view in read_preview(out))


def test_report_shows_what_the_refinement_moved_and_could_not_fix(tmp_path: Path) -> None:
    rec = make_reconstruction(tmp_path / "input")
    rec.refine_stats = {
        "rotation_change_deg_median": 0.412,
        "rotation_change_deg_max": 2.75,
        "focal_change_median": 0.031,
        "focal_change_max": 0.064,
        "reprojection_err_px_initial": 7.31,
        "reprojection_err_px_after": 0.42,
    }
    rec.refine_unfixed = {WEAK_VIEW: "12 flow observations, pose from pointmap tracks"}
    text = write_report(tmp_path / "out", rec, make_confidence_maps(rec), command=COMMAND).read_text(encoding="utf-8")
    data = report_json(text)["refinement"]
    assert data["rotation_change_deg_max"] == 2.75 and data["reprojection_err_px_after"] == 0.42
    name = rec.image_paths[WEAK_VIEW].name
    assert data["unfixed_images"] == [{"name": name, "why": "12 flow observations, pose from pointmap tracks"}]
    table = element_text(text, "refinement")
    assert re.search(r"median / max\s+0\.412 / 2\.750", table)
    assert re.search(r"3\.10% / 6\.40%", table) and re.search(r"7\.31 / 0\.42", table)
    assert name in element_text(text, "unfixed")
    unrefined = write_report(tmp_path / "plain", make_reconstruction(tmp_path / "input2"), None, command=COMMAND)
    plain = unrefined.read_text(encoding="utf-8")
    assert report_json(plain)["refinement"] is None and 'id="refinement"' not in plain
