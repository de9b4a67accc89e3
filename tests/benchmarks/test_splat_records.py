"""The splat benchmark's records: ground-truth baseline and the fraction of the PSNR gap a refinement closes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import splat_records  # noqa: E402


def run(variant: str, psnr: float, camera_opt: str = "off", scene: str = "room") -> dict:
    return {"scene": scene, "variant": variant, "steps": 3000, "camera_opt": camera_opt, "psnr": psnr}


def test_gap_closed_by_refinement() -> None:
    records = splat_records.with_baseline(
        [
            run("gt", 30.0),
            run("oracle_noisy", 20.0),
            run("oracle_noisy_refined", 22.5),
            run("oracle_noisy_refined", 24.0, camera_opt="SO3xR3"),
            run("oracle_noisy_refined", 29.0, scene="other"),  # no baseline or unrefined run there
        ]
    )
    by_key = {(r["scene"], r["variant"], r["camera_opt"]): r for r in records}
    assert by_key["room", "oracle_noisy_refined", "off"]["gap_closed_frac"] == pytest.approx(0.25)
    assert by_key["room", "oracle_noisy_refined", "SO3xR3"]["gap_closed_frac"] == pytest.approx(0.4)
    assert by_key["room", "oracle_noisy", "off"]["psnr_gap_db"] == pytest.approx(10.0)
    assert "gap_closed_frac" not in by_key["room", "oracle_noisy", "off"]
    assert "baseline_psnr" not in by_key["other", "oracle_noisy_refined", "off"]
