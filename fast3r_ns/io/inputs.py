"""Which files of ``--data`` / ``--eval-data`` become views, and which are skipped and why.

Folders are searched recursively (symlinked folders followed once, hidden entries ignored). Never taken as views:
our own outputs (any folder holding the marker file, ``images_N/`` downscales, the preview folder, the report
image) and ``masks/``. Every other skipped file or folder is reported with its reason.
"""

from __future__ import annotations

import errno
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..dataset import DatasetImage
from ..errors import InputError
from .images import AVIF_READABLE, HEIF_READABLE, HEIF_SUFFIXES, IMAGE_SUFFIXES, probe_image, size_problem
from .output import MARKER_NAME, is_our_output
from .video import VIDEO_SUFFIXES, extract_frames

if TYPE_CHECKING:
    from rich.progress import Progress

    from ..process import ProcessConfig

REPORT_IMAGE = "fast3r_report.png"  # fast3r_ns.preview.report.REPORT_PNG (not imported: it loads matplotlib)
PREVIEW_FOLDER = "fast3r_preview"  # fast3r_ns.preview.files.PREVIEW_DIR
_DOWNSCALES = re.compile(r"images_\d+")


@dataclass(frozen=True)
class Skipped:
    name: str  # relative to the --data folder
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def display_name(path: Path) -> str:
    """``path`` as text that is valid UTF-8 (undecodable bytes of a file name become U+FFFD)."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def _folder_reason(path: Path) -> str | None:
    if is_our_output(path):
        return f"an output of fast3r-ns ({MARKER_NAME})"
    if _DOWNSCALES.fullmatch(path.name):
        return "downscaled copies"
    if path.name == PREVIEW_FOLDER:
        return "fast3r-ns preview files"
    if path.name.lower() == "masks":
        return "masks, not views"
    return None


def _file_reason(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if path.name == REPORT_IMAGE:
        return "fast3r-ns report"
    if suffix not in IMAGE_SUFFIXES:
        return "not an image"
    if suffix in HEIF_SUFFIXES and not HEIF_READABLE:
        return "HEIC/HEIF needs an extra: pip install pillow-heif"
    if suffix == ".avif" and not AVIF_READABLE:
        return "AVIF is not supported by this Pillow build"
    if not os.access(path, os.R_OK):
        return "unreadable (permission denied)"
    return None


def list_images(folder: Path) -> tuple[list[Path], list[Skipped]]:
    """Image files under ``folder`` (sorted by path) and the entries skipped, with their reasons."""
    images: list[Path] = []
    skipped: list[Skipped] = []
    searched = {os.path.realpath(folder)}

    def skip(path: Path, reason: str) -> None:
        skipped.append(Skipped(display_name(path.relative_to(folder)), reason))

    def walk(directory: Path, chain: tuple[str, ...]) -> None:
        try:
            if not os.access(directory, os.R_OK | os.X_OK):  # listing names without x gives unopenable files
                raise PermissionError(errno.EACCES, "permission denied: needs read and execute permission")
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            if directory == folder:
                raise InputError(f"{display_name(folder)}: cannot read this folder ({error.strerror})") from None
            return skip(directory, f"unreadable folder ({error.strerror})")
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError as error:
                skip(path, f"unreadable ({error.strerror})")
                continue
            if entry.is_symlink() and not os.path.exists(path):
                skip(path, "broken link")
            elif is_dir:
                real = os.path.realpath(path)
                reason = _folder_reason(path)
                if reason is None and real in chain:
                    reason = "symlinked folder loop"
                elif reason is None and real in searched:
                    reason = "links to a folder already searched"
                if reason is not None:
                    skip(path, reason)
                    continue
                searched.add(real)
                walk(path, (*chain, real))
            elif is_file:
                reason = _file_reason(path)
                if reason is None:
                    images.append(path)
                else:
                    skip(path, reason)
            else:
                skip(path, "not a regular file")

    walk(folder, (os.path.realpath(folder),))
    images.sort(key=lambda path: path.relative_to(folder).parts)
    return images, skipped


def _probe(images: list[Path], image_size: int, skipped: list[Skipped], folder: Path) -> list[Path]:
    """Drop the images of an unsupported pixel type (into ``skipped``); refuse all too small ones at once."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        probes = list(pool.map(probe_image, images))
    kept, too_small = [], []
    for path, (size, reason) in zip(images, probes):
        if reason is not None:
            skipped.append(Skipped(display_name(path.relative_to(folder)), reason))
            continue
        problem = size_problem(size, image_size) if size is not None else None
        if problem is not None:
            too_small.append(f"{display_name(path)}: {problem}")
        kept.append(path)
    if too_small:
        more = f" (and {len(too_small) - 3} more)" if len(too_small) > 3 else ""
        raise InputError(f"{len(too_small)} image(s) cannot be used, remove them: {'; '.join(too_small[:3])}{more}")
    return kept


def inputs_of(data: Path, frames_dir: Path, config: ProcessConfig) -> tuple[list[tuple[Path, str]], list[Skipped]]:
    """[(file, display name)] of one --data / --eval-data argument, and the entries skipped."""
    data = Path(data).expanduser()
    if not data.exists():
        raise InputError(f"{data}: no such file or folder")
    if data.is_dir():
        if is_our_output(data):
            raise InputError(f"{data} is an output of fast3r-ns: pass the folder of the original images")
        images, skipped = list_images(data)
        images = _probe(images, config.image_size, skipped, data)
        if not images:
            looked = f"looked for {' '.join(IMAGE_SUFFIXES)}, recursively"
            shown = f"; skipped: {summarize(skipped)}" if skipped else ""
            raise InputError(f"{data}: no images found ({looked}){shown}")
        return [(p, display_name(p.relative_to(data))) for p in images], skipped
    if data.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{data} is a single image: pass the folder holding at least two images, or a video")
    if data.suffix.lower() not in VIDEO_SUFFIXES and config.verbose:
        print(f"{data}: not a known video suffix, trying ffmpeg anyway")
    frames = extract_frames(data, frames_dir, config.num_frames_target, config.verbose)
    return [(p, f"{display_name(Path(data.name))}#{p.stem.split('_')[-1]}") for p in frames], []


def summarize(skipped: list[Skipped], shown: int = 5) -> str:
    """The first ``shown`` skipped entries with their reasons, then how many more."""
    text = ", ".join(str(s) for s in skipped[:shown])
    return text + (f", and {len(skipped) - shown} more" if len(skipped) > shown else "")


def check_eval_data(data: Path, eval_data: Path | None) -> None:
    """Refuse --eval-data that is --data, inside it or holding it (every view would be used twice)."""
    if eval_data is None:
        return
    train, evaluation = Path(data).expanduser().resolve(), Path(eval_data).expanduser().resolve()
    if train == evaluation or train in evaluation.parents or evaluation in train.parents:
        raise InputError(
            f"--eval-data {eval_data} overlaps --data {data}: give the evaluation views in a separate folder"
        )


def collect(config: ProcessConfig, frames_dir: Path, progress: Progress) -> tuple[list[DatasetImage], list[Skipped]]:
    """The views of ``config.data`` (and ``config.eval_data``) named frame_XXXXX, and what was skipped."""
    task = progress.add_task("Collecting input images", total=None)
    check_eval_data(config.data, config.eval_data)
    train, skipped = inputs_of(config.data, frames_dir / "train", config)
    evaluation: list[tuple[Path, str]] = []
    if config.eval_data is not None:
        evaluation, skipped_eval = inputs_of(config.eval_data, frames_dir / "eval", config)
        skipped += skipped_eval
        shared = {os.path.realpath(p) for p, _ in train} & {os.path.realpath(p) for p, _ in evaluation}
        if shared:
            example = display_name(Path(min(shared)))
            raise InputError(f"--eval-data and --data share {len(shared)} image(s), e.g. {example}")
    if len(train) + len(evaluation) < 2:
        raise InputError(f"{config.data}: found 1 image; Fast3R needs at least 2 views of the scene")
    sources = []
    for prefix, items in (("frame_train_" if evaluation else "frame_", train), ("frame_eval_", evaluation)):
        for index, (path, name) in enumerate(items):
            suffix = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
            sources.append(DatasetImage(path, name, f"{prefix}{index + 1:05d}{suffix}"))
    progress.update(task, total=len(sources), completed=len(sources))
    return sources, skipped
