"""The command line's closing summary and the seconds of each stage (also shown in the report)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .dataset import COLMAP_DIR, PLY_NAME, DatasetImage
from .io.transforms import shares_one_camera
from .reconstruction import Reconstruction

if TYPE_CHECKING:
    from .process import ProcessConfig


def stage_times(reconstruction: Reconstruction, timings: dict[str, float]) -> dict[str, float]:
    """Seconds per stage, in order: ours around the pipeline's own stages."""
    stages = dict(reconstruction.timings) or {"reconstruct": timings["reconstruct"]}
    stages = {k: timings[k] for k in ("collect", "load images", "model")} | stages
    return stages | {k: timings[k] for k in ("write images", "write model")}


def summary_lines(
    config: ProcessConfig,
    reconstruction: Reconstruction,
    sources: Sequence[DatasetImage],
    timings: dict[str, float],
    notes: list[str],
    output_dir: Path,
    stages: dict[str, float],
    report: Path | None,
) -> list[str]:
    fx = reconstruction.intrinsics[:, 0]
    num_eval = sum(s.output_name.startswith("frame_eval_") for s in sources)
    used = f"Used {reconstruction.num_images} images" + (f" ({num_eval} for evaluation)" if num_eval else "")
    if shares_one_camera(reconstruction):
        camera = f"One shared camera: focal {fx[0]:.1f} px"
    else:
        camera = f"Per-image focal: median {np.median(fx):.1f} px (range {fx.min():.1f} - {fx.max():.1f})"
    conf = np.asarray(reconstruction.view_confidence, dtype=np.float64)
    confidence = f"View confidence: median {np.median(conf):.2f} (lowest {conf.min():.2f})"
    bad = np.flatnonzero(~np.asarray(reconstruction.pose_ok, dtype=bool))
    lines = [used, camera, confidence]
    if len(bad):
        names = ", ".join(sources[i].name for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
        lines.append(f"[yellow]{len(bad)} pose(s) flagged as unreliable (pose_ok false in transforms.json): {names}")
    lines += _refine_lines(reconstruction, sources)
    tracks = reconstruction.tracks
    multi_view = int(np.sum(np.diff(tracks.offsets) >= 2)) if tracks is not None else 0
    lines.append(
        f"Wrote {len(reconstruction.points):,} points to {PLY_NAME}, {multi_view:,} seen by 2+ images to "
        f"{COLMAP_DIR.as_posix()} (also sparse/0)"
    )
    if len(reconstruction.points) == 0:
        lines.append("[yellow]No point passed the confidence filters: splatfacto will start from random points")
    from .chunked import summary_lines as chunk_summary_lines  # torch: not at import

    lines += chunk_summary_lines(getattr(reconstruction, "chunk_report", None) or [])
    per_stage = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
    lines.append(f"Time: {per_stage}; total {timings['total']:.1f} s")
    lines += notes
    if reconstruction.distortion is not None:
        lines.append(f"For 3DGS (PINHOLE cameras only): fast3r-ns undistort {output_dir}")
    if report is not None:
        lines.append(f"Report: {report} (3-D preview: fast3r-ns view {output_dir})")
    lines.append(f"Next: ns-train splatfacto --data {output_dir}")
    return lines


def _refine_lines(reconstruction: Reconstruction, sources: Sequence[DatasetImage]) -> list[str]:
    """How far --refine moved the cameras and which views it could not fix (nothing without --refine)."""
    stats = reconstruction.refine_stats
    if "rotation_change_deg_max" not in stats:
        return []
    lines = [
        f"Refinement moved the cameras by {stats['rotation_change_deg_median']:.2f} deg at the median (max "
        f"{stats['rotation_change_deg_max']:.2f}), focal {stats['focal_change_median']:.1%} (max "
        f"{stats['focal_change_max']:.1%}); reprojection error {stats['reprojection_err_px_initial']:.2f} -> "
        f"{stats['reprojection_err_px_after']:.2f} px (median)"
    ]
    unfixed = reconstruction.refine_unfixed
    if unfixed:
        shown = [f"{sources[i].name} ({why})" for i, why in list(unfixed.items())[:5]]
        names = ", ".join(shown) + (", ..." if len(unfixed) > 5 else "")
        lines.append(f"[yellow]{len(unfixed)} camera(s) the refinement could not fix: {names}")
    return lines
