"""The quality report of a reconstruction: ``OUT/fast3r_report.html`` (self-contained) and ``OUT/fast3r_report.png``.

The HTML embeds the PNG and its thumbnails as base64 and has no scripts, stylesheets or fonts from elsewhere; the
numbers it shows are also embedded as JSON (``<script type="application/json" id="fast3r-report-data">``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from fast3r_ns.preview.files import PREVIEW_DIR, WEAK_FRACTION, thumbnail, view_status, write_preview
from fast3r_ns.reconstruction import Reconstruction

REPORT_HTML = "fast3r_report.html"
REPORT_PNG = "fast3r_report.png"
NUM_WEAKEST = 5
"""How many of the least confident images the report names."""
POOR_FRACTION = 0.25
"""The verdict is "poor" when more than this fraction of the images are weak or untrusted."""
FOCAL_SPREAD = 0.15
"""Relative spread (std / median) of per-image focal lengths above which the report suggests one shared camera."""
PLOT_POINTS = 40_000
"""Most points drawn in the top-down plot (a fixed-seed random subset)."""
MAX_PLOT_LABELS = 10
"""Most flagged cameras named in the top-down plot (least confident first)."""
MAX_TABLE_ROWS = 24
"""Most flagged (weak or untrusted) images listed with thumbnails, besides the NUM_WEAKEST weakest."""
CONFIDENCE_COLORMAP = "viridis"

_STATUS_COLORS = {"ok": "#2e7d32", "weak": "#ef6c00", "untrusted": "#c62828"}
_VERDICTS = {
    "good": ("Looks good", "#2e7d32"),
    "check": ("Usable: check the flagged images", "#ef6c00"),
    "poor": ("Check before training: many images are weak or untrusted", "#c62828"),
}


def colorize_confidence(
    confidence_maps: Sequence[np.ndarray], size: int = 256
) -> tuple[list[np.ndarray], tuple[float, float]]:
    """Colour-map per-view confidence maps [h, w] with one log scale for all views.

    Returns the [h', w', 3] uint8 images (long side at most ``size``) and the (low, high) confidence of the scale.
    """
    small = []
    for conf in confidence_maps:
        conf = np.asarray(conf, dtype=np.float32)
        step = max(1, int(np.ceil(max(conf.shape) / size)))
        small.append(np.log(np.maximum(conf[::step, ::step], 1e-6)))
    values = np.concatenate([m.ravel() for m in small]) if small else np.zeros(1)
    low, high = np.percentile(values, [1.0, 99.0])
    high = max(high, low + 1e-6)
    cmap = colormaps[CONFIDENCE_COLORMAP]
    images = [(cmap(np.clip((m - low) / (high - low), 0.0, 1.0))[..., :3] * 255).astype(np.uint8) for m in small]
    return images, (float(np.exp(low)), float(np.exp(high)))


def report_data(reconstruction: Reconstruction, command: str, timings: dict[str, float] | None = None) -> dict:
    """The numbers the report shows, as plain JSON-able values (``timings`` default: the reconstruction's)."""
    rec = reconstruction
    names = [Path(p).name for p in rec.image_paths]
    conf = np.asarray(rec.view_confidence, dtype=np.float64)
    status = view_status(rec.view_confidence, rec.pose_ok)
    notes = getattr(rec, "pose_notes", None) or [""] * rec.num_images
    weakest = [int(i) for i in np.argsort(conf, kind="stable")[: min(NUM_WEAKEST, rec.num_images)]]
    flagged = [i for i, s in enumerate(status) if s != "ok"]
    verdict = "good" if not flagged else "check" if len(flagged) <= POOR_FRACTION * rec.num_images else "poor"
    fx, fy = rec.intrinsics[:, 0], rec.intrinsics[:, 1]
    widths, heights = rec.image_sizes[:, 0], rec.image_sizes[:, 1]
    timings = {str(k): float(v) for k, v in (rec.timings if timings is None else timings).items()}
    return {
        "version": 1,
        "command": command,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "verdict": verdict,
        "num_images": rec.num_images,
        "num_points": len(rec.points),
        "num_untrusted": status.count("untrusted"),
        "shared_intrinsics": bool(rec.shared_intrinsics),
        "images": [
            {
                "name": names[i],
                "width": int(widths[i]),
                "height": int(heights[i]),
                "fx": float(fx[i]),
                "fy": float(fy[i]),
                "fov_x_deg": float(np.degrees(2 * np.arctan(widths[i] / (2 * fx[i])))),
                "confidence": float(conf[i]),
                "status": status[i],
                "note": str(notes[i] or ""),
            }
            for i in range(rec.num_images)
        ],
        "weakest_images": [names[i] for i in weakest],
        "weak_images": [names[i] for i in flagged if status[i] == "weak"],
        "untrusted_images": [names[i] for i in flagged if status[i] == "untrusted"],
        "timings": timings,
        "total_seconds": float(sum(timings.values())),
        "advice": _advice(rec, status, notes, names),
        "refinement": _refinement(rec, names),
    }


REFINE_FIELDS = (
    "rotation_change_deg_median",
    "rotation_change_deg_max",
    "focal_change_median",
    "focal_change_max",
    "reprojection_err_px_initial",
    "reprojection_err_px_after",
)


def _refinement(rec: Reconstruction, names: list[str]) -> dict | None:
    """How far --refine moved the cameras and the views it could not fix (None without --refine)."""
    stats = getattr(rec, "refine_stats", None) or {}
    if not all(key in stats for key in REFINE_FIELDS):
        return None
    unfixed = getattr(rec, "refine_unfixed", None) or {}
    return {key: float(stats[key]) for key in REFINE_FIELDS} | {
        "unfixed_images": [{"name": names[int(v)], "why": str(why)} for v, why in unfixed.items()]
    }


def _advice(rec: Reconstruction, status: list[str], notes: Sequence[str], names: list[str]) -> list[str]:
    """What to do, in plain sentences."""

    def listed(indices: list[int]) -> str:
        shown = [names[i] + (f" ({notes[i]})" if notes[i] else "") for i in indices[:8]]
        return ", ".join(shown) + (f" and {len(indices) - 8} more" if len(indices) > 8 else "")

    advice = []
    untrusted = [i for i, s in enumerate(status) if s == "untrusted"]
    weak = [i for i, s in enumerate(status) if s == "weak"]
    if untrusted:
        one = len(untrusted) == 1
        advice.append(
            f"The camera{'' if one else 's'} of {len(untrusted)} image{'' if one else 's'} could not be trusted: "
            f"{listed(untrusted)}. Remove {'this image' if one else 'these images'}, or add photos that overlap "
            f"{'it' if one else 'them'} with {'its' if one else 'their'} neighbours, and process again."
        )
    if weak:
        one = len(weak) == 1
        advice.append(
            f"{len(weak)} image{' agrees' if one else 's agree'} poorly with the others: {listed(weak)}. Blur, "
            "little overlap, moving objects and reflections are the usual causes; consider removing "
            f"{'it' if one else 'them'} before training."
        )
    fx = rec.intrinsics[:, 0]
    if not rec.shared_intrinsics and rec.num_images > 1 and np.std(fx) > FOCAL_SPREAD * np.median(fx):
        advice.append(
            f"The recovered focal lengths differ by more than {FOCAL_SPREAD:.0%} between images. If all photos "
            "come from one camera at one zoom, process again with one shared camera."
        )
    if not advice:
        advice.append(f"All {rec.num_images} images agree with each other: the dataset is ready for training.")
    return advice


def _top_down_basis(cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(right, forward, up) world directions for a view from above: up is the mean camera up (-y, OpenCV)."""
    up = -cam_to_world[:, :3, 1].mean(axis=0)
    if np.linalg.norm(up) < 1e-6:
        up = -cam_to_world[0, :3, 1]
    up = up / np.linalg.norm(up)
    forward = cam_to_world[0, :3, 2] - (cam_to_world[0, :3, 2] @ up) * up
    if np.linalg.norm(forward) < 1e-6:
        forward = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    forward = forward / np.linalg.norm(forward)
    return np.cross(forward, up), forward, up


def _plot_top_down(ax, rec: Reconstruction, status: list[str]) -> None:
    right, forward, up = _top_down_basis(np.asarray(rec.cam_to_world, dtype=np.float64))
    centres = rec.cam_to_world[:, :3, 3]
    cam_xy = np.stack([centres @ right, centres @ forward], axis=1)
    points = np.asarray(rec.points, dtype=np.float64)
    if len(points) > PLOT_POINTS:
        keep = np.random.default_rng(0).choice(len(points), PLOT_POINTS, replace=False)
        points, colors = points[keep], rec.colors[keep]
    else:
        colors = rec.colors
    order = np.argsort(points @ up)  # higher points drawn last, as seen from above
    pts_xy = np.stack([points @ right, points @ forward], axis=1)[order]
    ax.scatter(pts_xy[:, 0], pts_xy[:, 1], c=colors[order] / 255.0, s=1.0, linewidths=0, rasterized=True)
    both = np.concatenate([np.percentile(pts_xy, [1, 99], axis=0) if len(pts_xy) else cam_xy[:1], cam_xy])
    low, high = both.min(axis=0), both.max(axis=0)
    extent = float(max(high - low)) or 1.0
    ax.plot(cam_xy[:, 0], cam_xy[:, 1], "-", color="#555555", lw=0.8, zorder=3)
    look = rec.cam_to_world[:, :3, 2]
    look_xy = np.stack([look @ right, look @ forward], axis=1) * 0.06 * extent
    colors_cam = [_STATUS_COLORS[s] for s in status]
    ax.quiver(
        cam_xy[:, 0],
        cam_xy[:, 1],
        look_xy[:, 0],
        look_xy[:, 1],
        color=colors_cam,
        angles="xy",
        scale_units="xy",
        scale=1.0,
        width=0.004,
        zorder=4,
    )
    ax.scatter(cam_xy[:, 0], cam_xy[:, 1], c=colors_cam, s=14, zorder=5, edgecolors="white", linewidths=0.5)
    ax.annotate("first", cam_xy[0], xytext=(4, 4), textcoords="offset points", fontsize=8)
    flagged = [i for i in np.argsort(rec.view_confidence, kind="stable") if status[i] != "ok"][:MAX_PLOT_LABELS]
    for i in flagged:
        name = Path(rec.image_paths[i]).name
        ax.annotate(name, cam_xy[i], xytext=(4, -9), textcoords="offset points", fontsize=7, color=colors_cam[i])
    middle, half = (low + high) / 2, 0.55 * extent
    ax.set_xlim(middle[0] - half, middle[0] + half)
    ax.set_ylim(middle[1] - half, middle[1] + half)
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(f"Seen from above: {rec.num_images} cameras, {len(rec.points):,} points")
    ax.set_xticks([])
    ax.set_yticks([])


def _plot_confidence(ax, rec: Reconstruction, status: list[str], data: dict) -> None:
    conf = np.asarray(rec.view_confidence, dtype=np.float64)
    index = np.arange(rec.num_images)
    ax.bar(index, conf, width=0.85, color=[_STATUS_COLORS[s] for s in status])
    ax.axhline(WEAK_FRACTION * np.median(conf), color="#ef6c00", ls="--", lw=0.8)
    names = [Path(p).name for p in rec.image_paths]
    top = float(conf.max()) if len(conf) else 1.0
    for name in data["weakest_images"]:
        i = names.index(name)
        ax.text(i, conf[i] + 0.02 * top, name, rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, top * 1.45)
    ax.set_xlim(-0.6, rec.num_images - 0.4)
    ax.set_xlabel("image")
    ax.set_ylabel("confidence")
    ax.set_title("Confidence per image: green ok, orange weak, red untrusted")


def _plot_focal(ax, rec: Reconstruction) -> None:
    fx, fy = rec.intrinsics[:, 0], rec.intrinsics[:, 1]
    index = np.arange(rec.num_images)
    if np.allclose(fx, fy, rtol=1e-3):
        ax.plot(index, fx, "o-", ms=3, lw=0.8, label="fx = fy")
    else:
        ax.plot(index, fx, "o-", ms=3, lw=0.8, label="fx")
        ax.plot(index, fy, "s--", ms=3, lw=0.8, label="fy")
    fov = np.degrees(2 * np.arctan(rec.image_sizes[:, 0] / (2 * fx)))
    kind = "one shared camera" if rec.shared_intrinsics else "per image"
    ax.set_title(f"Focal length, {kind}: fx {np.median(fx):.0f} px (median), FOV {np.median(fov):.0f} deg")
    ax.set_xlabel("image")
    ax.set_ylabel("pixels")
    ax.set_xlim(-0.6, rec.num_images - 0.4)
    ax.legend(loc="best", fontsize=8)


def _plot_timings(ax, timings: dict[str, float]) -> None:
    if not timings:
        ax.text(0.5, 0.5, "no timings recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    stages = list(timings)
    seconds = [timings[s] for s in stages]
    ax.barh(range(len(stages)), seconds, color="#1565c0")
    ax.set_yticks(range(len(stages)), stages, fontsize=8)
    ax.invert_yaxis()
    for y, s in enumerate(seconds):
        ax.text(s, y, f" {s:.2f} s", va="center", fontsize=8)
    ax.set_xlim(0, max(seconds) * 1.3 or 1.0)
    ax.set_xlabel("seconds")
    ax.set_title(f"Time per stage (total {sum(seconds):.1f} s)")


def render_figure(reconstruction: Reconstruction, data: dict, dpi: int = 90) -> bytes:
    """The report's PNG: top-down view, confidence per image, focal lengths and timings."""
    rec = reconstruction
    status = [image["status"] for image in data["images"]]
    fig = Figure(figsize=(13, 8.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 2, width_ratios=[1.1, 1])
    _plot_top_down(fig.add_subplot(grid[:, 0]), rec, status)
    _plot_confidence(fig.add_subplot(grid[0, 1]), rec, status, data)
    _plot_focal(fig.add_subplot(grid[1, 1]), rec)
    _plot_timings(fig.add_subplot(grid[2, 1]), data["timings"])
    title, color = _VERDICTS[data["verdict"]]
    fig.suptitle(f"fast3r-ns reconstruction: {title}", color=color, fontsize=14, fontweight="bold")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    buffer = io.BytesIO()  # a 256-colour palette: a third of the size, no visible change for charts
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(image: np.ndarray, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, quality=85)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _image_thumbnail(path: Path, size: int = 160) -> np.ndarray | None:
    try:
        with Image.open(path) as image:
            return thumbnail(ImageOps.exif_transpose(image), size)
    except OSError:
        return None


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1200px;
color:#212121;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.verdict{font-size:1.25em;font-weight:bold;padding:.4em .7em;border-radius:6px;color:#fff;display:inline-block}
pre{background:#f5f5f5;padding:.6em;white-space:pre-wrap;word-break:break-all;border-radius:4px}
table{border-collapse:collapse;font-size:.92em}td,th{border-bottom:1px solid #e0e0e0;padding:.3em .6em;
text-align:left;vertical-align:middle}th{background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums}
img.figure{width:100%;height:auto;border:1px solid #e0e0e0}img.thumb{max-height:96px;display:block}
.ok{color:#2e7d32}.weak{color:#ef6c00}.untrusted{color:#c62828}li{margin:.3em 0}
"""


def _refinement_html(refinement: dict | None) -> str:
    """The "Refinement" section: camera motion, reprojection error, views not fixed ("" without --refine)."""
    if refinement is None:
        return ""
    r = refinement
    rows = [
        (
            "camera rotation change (deg), median / max",
            f"{r['rotation_change_deg_median']:.3f} / {r['rotation_change_deg_max']:.3f}",
        ),
        ("focal change, median / max", f"{r['focal_change_median']:.2%} / {r['focal_change_max']:.2%}"),
        (
            "reprojection error (px, median), before / after",
            f"{r['reprojection_err_px_initial']:.2f} / {r['reprojection_err_px_after']:.2f}",
        ),
    ]
    cells = "".join(f'<tr><td>{html.escape(k)}</td><td class="num">{v}</td></tr>' for k, v in rows)
    unfixed = r["unfixed_images"]
    listed = "".join(f"<li>{html.escape(u['name'])}: {html.escape(u['why'])}</li>" for u in unfixed)
    views = (
        f'<p>Not fixed by the refinement:</p><ul id="unfixed">{listed}</ul>'
        if unfixed
        else ('<p id="unfixed">The refinement fixed every camera.</p>')
    )
    return f'<h2>Refinement</h2>\n<table id="refinement">{cells}</table>\n{views}\n'


def _html(data: dict, png: bytes, thumbs: dict[int, tuple[str | None, str | None]], out_dir: Path) -> str:
    esc = html.escape
    title, color = _VERDICTS[data["verdict"]]
    images = data["images"]
    rows_weak = []
    for i in sorted(thumbs, key=lambda i: images[i]["confidence"]):
        image_url, map_url = thumbs[i]
        cells = [
            f'<img class="thumb" src="{image_url}" alt="">' if image_url else "",
            f'<img class="thumb" src="{map_url}" alt="">' if map_url else "",
        ]
        img = images[i]
        rows_weak.append(
            f"<tr><td>{cells[0]}</td><td>{cells[1]}</td><td>{esc(img['name'])}</td>"
            f'<td class="num">{img["confidence"]:.3g}</td><td class="{img["status"]}">{img["status"]}</td>'
            f"<td>{esc(img['note'])}</td></tr>"
        )
    if data["shared_intrinsics"]:
        first = images[0]
        focal_rows = [
            f'<tr><td>all {len(images)} images</td><td class="num">{first["fx"]:.1f}</td>'
            f'<td class="num">{first["fy"]:.1f}</td><td class="num">{first["fov_x_deg"]:.1f}</td></tr>'
        ]
    else:
        focal_rows = [
            f'<tr><td>{esc(img["name"])}</td><td class="num">{img["fx"]:.1f}</td><td class="num">{img["fy"]:.1f}</td>'
            f'<td class="num">{img["fov_x_deg"]:.1f}</td></tr>'
            for img in images
        ]
    timing_rows = [f'<tr><td>{esc(k)}</td><td class="num">{v:.2f}</td></tr>' for k, v in data["timings"].items()]
    timing_rows.append(f'<tr><th>total</th><th class="num">{data["total_seconds"]:.2f}</th></tr>')
    advice = "".join(f"<li>{esc(a)}</li>" for a in data["advice"])
    refinement = _refinement_html(data.get("refinement"))
    blob = json.dumps(data, indent=1).replace("</", "<\\/")
    png_url = f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fast3r-ns report: {esc(out_dir.name)}</title><style>{_CSS}</style></head>
<body>
<h1>fast3r-ns reconstruction report</h1>
<p>{data["num_images"]} images, <span id="num-points">{data["num_points"]:,}</span> points, written to
<code>{esc(str(out_dir))}</code> on {esc(data["created"])}.</p>
<p class="verdict" style="background:{color}">{esc(title)}</p>
<h2>What to do</h2><ul id="advice">{advice}</ul>
<p>Look around in 3-D with <code>fast3r-ns view {esc(shlex.quote(str(out_dir)))}</code>.</p>
<h2>Overview</h2>
<img class="figure" src="{png_url}" alt="camera path and point cloud from above, confidence per image, focal lengths,
time per stage">
<h2>Weakest images</h2>
<table id="weakest"><tr><th>image</th><th>confidence map</th><th>name</th><th>confidence</th><th>status</th>
<th>note</th></tr>
{"".join(rows_weak)}</table>
<p>Confidence maps: dark = low, yellow = high (one scale for all images).</p>
<h2>Focal lengths</h2>
<table id="focal"><tr><th>image</th><th>fx (px)</th><th>fy (px)</th><th>horizontal FOV (deg)</th></tr>
{"".join(focal_rows)}</table>
{refinement}<h2>Time per stage</h2>
<table id="timings"><tr><th>stage</th><th>seconds</th></tr>{"".join(timing_rows)}</table>
<h2>Command</h2>
<pre id="command">{esc(data["command"])}</pre>
<script type="application/json" id="fast3r-report-data">{blob}</script>
</body></html>
"""


def write_report(
    out_dir: Path,
    reconstruction: Reconstruction,
    confidence_maps: Sequence[np.ndarray] | np.ndarray | None = None,
    command: str | None = None,
    frame_paths: Sequence[str] | None = None,
    timings: dict[str, float] | None = None,
) -> Path:
    """Write ``fast3r_report.html`` and ``fast3r_report.png`` into ``out_dir`` (and the viewer's files into
    ``out_dir/fast3r_preview/``); return the HTML path.

    Args:
        out_dir: the output folder (created if missing).
        reconstruction: the reconstruction whose points went into the output PLY, in the same order.
        confidence_maps: per view, its confidence map [h, w] (any resolution, e.g. the network's), or None.
        command: the command line that produced the reconstruction. Default is this process's ``sys.argv``
            (program name without its folder).
        frame_paths: per view, its image path in transforms.json relative to ``out_dir``
            (e.g. ``images/frame_00001.jpg``). Default is unknown; the viewer then matches images by name.
        timings: seconds per stage to show, in order. Default is ``reconstruction.timings``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = reconstruction
    if command is None:
        command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    data = report_data(rec, command, timings)
    map_images = None
    if confidence_maps is not None:
        map_images, scale = colorize_confidence(list(confidence_maps))
        data["confidence_map_scale"] = list(scale)
    write_preview(out_dir, rec, map_images, frame_paths)
    data["preview_dir"] = PREVIEW_DIR

    png = render_figure(rec, data)
    (out_dir / REPORT_PNG).write_bytes(png)
    order = np.argsort(rec.view_confidence, kind="stable")
    flagged = [int(i) for i in order if data["images"][i]["status"] != "ok"][:MAX_TABLE_ROWS]
    shown = {int(i) for i in order[:NUM_WEAKEST]} | set(flagged)
    thumbs = {}
    for i in shown:
        image = _image_thumbnail(Path(rec.image_paths[i]))
        thumbs[i] = (
            _data_url(image) if image is not None else None,
            _data_url(thumbnail(map_images[i], 160), "PNG") if map_images is not None else None,
        )
    html_path = out_dir / REPORT_HTML
    html_path.write_text(_html(data, png, thumbs, out_dir), encoding="utf-8")
    return html_path
