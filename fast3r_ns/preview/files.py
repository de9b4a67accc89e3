"""Files of an output folder as the viewer reads them: transforms.json, the PLY, and ``OUT/fast3r_preview/``.

``OUT/fast3r_preview/`` is written by the report step (``write_preview``) because the nerfstudio files carry
neither per-view confidence maps nor the reasons a view is untrusted:

- ``views.json``: ``{"version": 1, "views": [{index, name, frame_path, confidence, pose_ok, note, fx, fy,
  confidence_map}]}``, one entry per reconstructed image, ``confidence_map`` a file name in ``confidence/``
  or null;
- ``confidence/NNNNN.png``: the view's confidence map, colour-mapped with one scale for all views (8-bit RGB,
  at most ``THUMBNAIL_SIZE`` pixels on the long side);
- ``points_confidence.npy``: [M] float32 per-point confidence in the order of the reconstruction's points; the
  viewer uses it only when the PLY has no ``confidence`` property and the same number of vertices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fast3r_ns.geometry.conventions import opencv_to_opengl
from fast3r_ns.reconstruction import Reconstruction

PREVIEW_DIR = "fast3r_preview"
VIEWS_FILE = "views.json"
POINTS_CONFIDENCE_FILE = "points_confidence.npy"
CONFIDENCE_MAP_DIR = "confidence"
THUMBNAIL_SIZE = 256
"""Long side in pixels of the stored confidence maps."""
WEAK_FRACTION = 0.5
"""A trusted view is weak when its confidence is below this fraction of the median view confidence."""


@dataclass
class PreviewView:
    """What the report step recorded about one reconstructed image."""

    index: int
    name: str  # file name of the original image
    frame_path: str  # image path relative to OUT as written in transforms.json ("" when unknown)
    confidence: float
    pose_ok: bool
    note: str  # why the view is untrusted ("" when trusted or unknown)
    fx: float
    fy: float
    confidence_map: Path | None  # colour-mapped confidence PNG, None when not saved


@dataclass
class Camera:
    """One frame of transforms.json."""

    file_path: str  # as written in transforms.json, relative to OUT
    cam_to_world: np.ndarray  # [4, 4] OpenCV camera axes, in the transforms.json world frame
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    original_file_path: str = ""  # the source image, when transforms.json records it


def view_status(confidence: Sequence[float] | np.ndarray, pose_ok: Sequence[bool] | np.ndarray) -> list[str]:
    """Per view: "untrusted" (pose not ok), "weak" (confidence < WEAK_FRACTION x median) or "ok"."""
    confidence = np.asarray(confidence, dtype=np.float64)
    threshold = WEAK_FRACTION * float(np.median(confidence)) if len(confidence) else 0.0
    return [
        "untrusted" if not ok else "weak" if c < threshold else "ok"
        for ok, c in zip(np.asarray(pose_ok, dtype=bool), confidence)
    ]


def thumbnail(image: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """[H, W, 3] uint8 copy of ``image`` with its long side at most ``size`` pixels."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    pil = pil.convert("RGB")
    pil.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def write_preview(
    out_dir: Path,
    reconstruction: Reconstruction,
    confidence_map_images: Sequence[np.ndarray] | None = None,
    frame_paths: Sequence[str] | None = None,
) -> Path:
    """Write ``OUT/fast3r_preview/`` and return its path.

    Args:
        confidence_map_images: per view, a colour-mapped confidence map [h, w, 3] uint8 (stored as a PNG
            thumbnail), or None.
        frame_paths: per view, its image path relative to ``out_dir`` as written in transforms.json
            (e.g. ``images/frame_00001.jpg``). Default is unknown: the viewer then matches by file name.
    """
    rec = reconstruction
    preview_dir = Path(out_dir) / PREVIEW_DIR
    map_dir = preview_dir / CONFIDENCE_MAP_DIR
    map_dir.mkdir(parents=True, exist_ok=True)
    notes = getattr(rec, "pose_notes", None) or [""] * rec.num_images
    views = []
    for i, path in enumerate(rec.image_paths):
        map_name = None
        if confidence_map_images is not None and confidence_map_images[i] is not None:
            map_name = f"{i:05d}.png"
            Image.fromarray(thumbnail(confidence_map_images[i], THUMBNAIL_SIZE)).save(map_dir / map_name)
        views.append(
            {
                "index": i,
                "name": Path(path).name,
                "frame_path": frame_paths[i] if frame_paths is not None else "",
                "confidence": float(rec.view_confidence[i]),
                "pose_ok": bool(rec.pose_ok[i]),
                "note": str(notes[i] or ""),
                "fx": float(rec.intrinsics[i, 0]),
                "fy": float(rec.intrinsics[i, 1]),
                "confidence_map": map_name,
            }
        )
    (preview_dir / VIEWS_FILE).write_text(json.dumps({"version": 1, "views": views}, indent=1))
    np.save(preview_dir / POINTS_CONFIDENCE_FILE, np.asarray(rec.point_confidence, dtype=np.float32))
    return preview_dir


def read_preview(out_dir: Path) -> list[PreviewView] | None:
    """The views recorded in ``OUT/fast3r_preview/views.json``, or None when there is no such file."""
    preview_dir = Path(out_dir) / PREVIEW_DIR
    path = preview_dir / VIEWS_FILE
    if not path.is_file():
        return None
    views = []
    for entry in json.loads(path.read_text())["views"]:
        map_name = entry.get("confidence_map")
        map_path = preview_dir / CONFIDENCE_MAP_DIR / map_name if map_name else None
        views.append(
            PreviewView(
                index=int(entry["index"]),
                name=str(entry["name"]),
                frame_path=str(entry.get("frame_path") or ""),
                confidence=float(entry["confidence"]),
                pose_ok=bool(entry["pose_ok"]),
                note=str(entry.get("note") or ""),
                fx=float(entry["fx"]),
                fy=float(entry["fy"]),
                confidence_map=map_path if map_path is not None and map_path.is_file() else None,
            )
        )
    return views


def match_views(
    file_paths: Sequence[str], views: Sequence[PreviewView], original_paths: Sequence[str] | None = None
) -> list[PreviewView | None]:
    """For each transforms.json ``file_path``, the preview view of the same image, or None.

    Matched by the recorded frame path, else by the file name of ``original_paths`` (transforms.json's
    ``original_file_path``) or of the file path, else by the number in nerfstudio's ``frame_NNNNN`` names
    (frame_00001 is view 0), else by position when the counts are equal.
    """
    by_frame = {v.frame_path: v for v in views if v.frame_path}
    by_name = {v.name: v for v in views}
    matched: list[PreviewView | None] = []
    for j, file_path in enumerate(file_paths):
        original = Path(original_paths[j]).name if original_paths is not None and original_paths[j] else None
        view = by_frame.get(file_path) or by_name.get(original) or by_name.get(Path(file_path).name)
        number = re.fullmatch(r"frame_(\d+)", Path(file_path).stem)
        if view is None and number is not None and 0 < int(number.group(1)) <= len(views):
            view = views[int(number.group(1)) - 1]
        matched.append(view)
    if all(v is None for v in matched) and len(file_paths) == len(views):
        return list(views)
    return matched


def read_cameras(out_dir: Path) -> tuple[list[Camera], dict]:
    """The frames of ``OUT/transforms.json`` (per-frame intrinsics override the top-level ones) and the file."""
    meta = json.loads((Path(out_dir) / "transforms.json").read_text())
    cameras = []
    for frame in meta["frames"]:

        def value(key: str, frame: dict = frame) -> float:
            return frame[key] if key in frame else meta[key]

        cam_to_world = np.eye(4)
        cam_to_world[:3] = np.asarray(frame["transform_matrix"], dtype=np.float64)[:3]
        cameras.append(
            Camera(
                file_path=str(frame["file_path"]),
                cam_to_world=opencv_to_opengl(cam_to_world),  # its own inverse: OpenGL axes -> OpenCV
                fx=float(value("fl_x")),
                fy=float(value("fl_y")),
                cx=float(value("cx")),
                cy=float(value("cy")),
                width=int(value("w")),
                height=int(value("h")),
                original_file_path=str(frame.get("original_file_path") or ""),
            )
        )
    return cameras, meta
