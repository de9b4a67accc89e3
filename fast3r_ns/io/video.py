"""Frames from a video with ffmpeg, sampled like nerfstudio's ``ns-process-data video`` (num_frames_target)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..errors import InputError
from ..interrupts import child

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".mts")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise InputError(f"{name} is needed to read videos and was not found: install ffmpeg (e.g. apt install ffmpeg)")
    return path


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def count_frames(video: Path) -> int:
    """Number of video frames (packets of the first video stream), or an InputError if ffprobe cannot read it."""
    command = [_tool("ffprobe"), "-v", "error", "-select_streams", "v:0", "-count_packets"]
    command += ["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(video)]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    match = re.search(r"\d+", result.stdout)
    if result.returncode != 0 or match is None:
        raise InputError(f"{video}: ffmpeg cannot read this file as a video ({_last_line(result.stderr)})")
    return int(match[0])


def extract_frames(video: Path, folder: Path, num_frames_target: int = 300, verbose: bool = False) -> list[Path]:
    """Write about ``num_frames_target`` frames of ``video`` as PNGs into ``folder``; return them in order.

    As nerfstudio: with N frames and spacing N // target > 1, ffmpeg's thumbnail filter keeps the most
    representative frame of each run of ``spacing`` frames; otherwise every frame is kept.
    """
    video = Path(video)
    if not video.is_file():
        raise InputError(f"{video}: no such video file")
    num_frames = count_frames(video)
    if num_frames == 0:
        raise InputError(f"{video}: the video has no frames")
    folder.mkdir(parents=True, exist_ok=True)
    spacing = num_frames // max(num_frames_target, 1)
    command = [_tool("ffmpeg"), "-nostdin", "-v", "error" if not verbose else "info", "-i", str(video)]
    if spacing > 1:
        command += ["-vf", f"thumbnail={spacing},setpts=N/TB"]
    command += ["-fps_mode", "vfr", str(folder / "frame_%05d.png")]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "errors": "replace"}
    with child(subprocess.Popen(command, **pipes)) as ffmpeg:  # killed on an interrupt or any error
        _, stderr = ffmpeg.communicate()
    frames = sorted(folder.glob("frame_*.png"))
    if ffmpeg.returncode != 0 or not frames:
        raise InputError(f"{video}: ffmpeg could not extract frames ({_last_line(stderr)})")
    return frames
