"""Images or a video -> a nerfstudio dataset (images/, transforms.json, sparse_pc.ply, COLMAP model) with Fast3R.

``ProcessConfig`` is the one option set of ``ns-process-data fast3r`` and ``fast3r-ns process``;
``process`` does the work and raises ``InputError`` (one clear message) for anything the user can fix.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import math
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .dataset import DatasetImage, frame_paths
from .errors import InputError
from .io.images import ImageLoadError
from .io.inputs import check_eval_data, collect, display_name, summarize
from .io.output import atomic_output_dir, check_output_dir
from .model.config import DEFAULT_REPO
from .runtime import check_device, load_model, load_predictor

if TYPE_CHECKING:
    from .io.images import PreparedImage
    from .options import ReconstructOptions
    from .predictions import Predictor
    from .reconstruction import Reconstruction

CONSOLE = Console(width=120)
ReconstructFn = Callable[..., "Reconstruction"]


@dataclass
class ProcessConfig:
    """Process images or a video into a nerfstudio dataset with Fast3R: images/, transforms.json, sparse_pc.ply
    and a COLMAP model. (The options of both ``fast3r-ns process`` and ``ns-process-data fast3r``.)"""

    data: Path
    """Folder of images (searched recursively; hidden files, masks/ and our own outputs skipped) or a video file."""
    output_dir: Path
    """Output folder (images/, images_2,4,8/, transforms.json, sparse_pc.ply, colmap/sparse/0/ with a sparse/0
    link, init.ply); it appears only once complete, and must not exist unless --overwrite."""
    eval_data: Path | None = None
    """Optional folder of images or video of evaluation views, reconstructed together with --data and written as
    frame_eval_XXXXX (the others as frame_train_XXXXX) for nerfstudio's filename split."""
    verbose: bool = False
    """Print ffmpeg's output and the pipeline's stage messages."""
    model: str = DEFAULT_REPO
    """Fast3R checkpoint: a Hugging Face repo id or a local folder with config.json and model.safetensors."""
    image_size: int = 512
    """Network input size: 512 for the 512 models, 224 for the 224 models (any multiple of 16 for others)."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Weights and activations; auto is bf16 (fp16 where unsupported) on a GPU and fp32 on the CPU."""
    device: str | None = None
    """Torch device, e.g. cuda, cuda:1 or cpu; None takes the first CUDA GPU, else the CPU with a warning."""
    focal_mode: Literal["per-view", "shared", "official"] = "per-view"
    """Focal length: one per image, one shared by all images (one camera), or the official Fast3R estimate."""
    conf_percentile: float | None = None
    """Drop this percentage (0-100) of each view's least confident pixels; None keeps the pipeline's default."""
    min_confidence: float | None = None
    """Absolute confidence floor for points (confidence is >= 1); None keeps the pipeline's default."""
    max_points: int | None = None
    """Voxel-thin the point cloud to about this many points; None keeps the pipeline's default."""
    refine: bool = False
    """Refine cameras and points by bundle adjustment on multi-view tracks from Fast3R's pointmaps and optical flow
    between neighbouring images (see --refine-tracks); the flow runs on the CPU cores, the adjustment on the GPU
    with a CUDA device (else pycolmap on the CPU). About 45 s for 200 images on an H200 machine; off by default."""
    refine_tracks: Literal["pointmaps", "flow"] = "flow"
    """With --refine: where the correspondences come from. "flow": optical flow started from the pointmaps, after a
    first refinement on pointmap tracks (needs OpenCV); "pointmaps": pixels whose predicted 3-D points coincide
    (faster, cannot see a view's misplaced pointmap)."""
    refine_distortion: bool = False
    """With --refine (refused without it): also refine one radial distortion coefficient (k1) per camera, written
    to transforms.json and the COLMAP model; for lenses with visible distortion."""
    fuse_points: bool = True
    """With --refine: rebuild the dense cloud (sparse_pc.ply) from each image's depth on its refined camera
    (triangulated from the refinement's flow matches where there is texture and parallax), kept where two
    neighbouring images confirm it and averaged with them; --no-fuse-points keeps the cloud of the pointmaps, whose
    per-image misplacement the refined cameras no longer share."""
    colmap_tracks: bool = True
    """Without --refine: give the COLMAP model multi-view tracks (pixels of neighbouring images whose predicted
    points agree, triangulated), so that COLMAP's bundle adjuster accepts it; --no-colmap-tracks writes cameras
    and images only (saves a few seconds per 100 images). The dense cloud is in sparse_pc.ply either way."""
    num_downscales: int = 3
    """How many times to halve the images: 3 writes images_2, images_4 and images_8."""
    num_frames_target: int = 300
    """For a video: about how many frames to extract, evenly spread (results may not be exact)."""
    skip_image_processing: bool = False
    """Write no images/ or downscales: transforms.json names the inputs by absolute path, the COLMAP model by
    path relative to --data. The inputs must be RGB JPEG/PNG without EXIF rotation."""
    overwrite: bool = False
    """Replace an existing --output-dir, only an earlier output of fast3r-ns (it holds .fast3r_ns) or an empty
    folder, and only once the new one is complete."""
    max_views_per_pass: int | None = None
    """Most images in one network pass; more are reconstructed in overlapping passes that share anchor images and
    are merged into one frame (the merge quality is printed). None: one pass unless the images do not fit the free
    GPU memory (never on the CPU)."""

    def main(self) -> None:
        """Run, print one clear message and exit non-zero on bad input."""
        run_cli(self)


@dataclass
class ProcessResult:
    """What ``process`` wrote, for callers and tests."""

    output_dir: Path
    num_images: int
    num_points: int
    timings: dict[str, float] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    reconstruction: Reconstruction | None = None  # cameras and points as written (before nerfstudio's rotation)


def run_cli(config: ProcessConfig, console: Console = CONSOLE) -> ProcessResult | None:
    """``process`` for command lines: an InputError, ImageLoadError or missing weights -> one red line, exit 1.

    Under ``torchrun`` (several GPUs of one host) rank 0 processes and the other ranks serve their share of each
    network pass (``fast3r_ns.distributed``); they return None.
    """
    from .distributed import launched_by_torchrun

    if launched_by_torchrun():
        return _run_distributed(config, console)
    return _run_cli(config, console)


def _run_distributed(config: ProcessConfig, console: Console) -> ProcessResult | None:
    import torch.distributed as dist

    from .distributed import init_from_env, serve, stop_workers

    device = init_from_env()
    try:
        if dist.get_rank() != 0:
            model, _ = load_model(config, str(device))
            serve(model, device)
            return None
        try:
            return _run_cli(config, console)
        finally:
            stop_workers()
    finally:
        dist.destroy_process_group()


def _run_cli(config: ProcessConfig, console: Console) -> ProcessResult:
    from .interrupts import handle_interrupts
    from .model.loading import WeightsNotFoundError

    try:
        with handle_interrupts():
            return process(config, console=console)
    except (InputError, ImageLoadError, WeightsNotFoundError, OSError) as error:
        message = error if type(error) is WeightsNotFoundError else _os_error_message(error, config.output_dir)
        console.print(f"[bold red]Error:[/bold red] {message}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None


def _os_error_message(error: Exception, output_dir: Path) -> str:
    """One line for a file-system error (disk full, permissions, read-only mount); others as they are."""
    if not isinstance(error, OSError) or error.strerror is None:
        return str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return f"--output-dir {output_dir}: {error.strerror}; nothing was written"
    where = f"{display_name(Path(error.filename))}: " if error.filename else ""
    return f"{where}{error.strerror}; nothing was written"


def process(
    config: ProcessConfig,
    console: Console = CONSOLE,
    predictor: Predictor | None = None,
    reconstruct_fn: ReconstructFn | None = None,
    image_copies: Literal["during", "after"] = "during",
) -> ProcessResult:
    """Turn ``config.data`` (and ``config.eval_data``) into a nerfstudio dataset in ``config.output_dir``.

    predictor: use this instead of loading ``config.model``; reconstruct_fn: called like
    ``fast3r_ns.pipeline.reconstruct`` (tests pass one that needs no network); image_copies: write images/ and
    the downscales while the network runs ("during") or after it (bench_pipeline's comparison).
    """
    from .dataset import ImageCopies, write_dataset
    from .summary import stage_times, summary_lines

    started = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []

    def step(name: str, function: Callable, *args):
        tic = time.perf_counter()
        value = function(*args)
        timings[name] = time.perf_counter() - tic
        return value

    inputs = tuple(p for p in (config.data, config.eval_data) if p is not None)
    output_dir = check_output_dir(config.output_dir, config.overwrite, inputs)
    _check_options(config)
    in_place = config.skip_image_processing
    with atomic_output_dir(output_dir, config.overwrite, inputs) as staging, _progress(console) as progress:
        sources = step("collect", _collect_inputs, config, staging / ".video_frames", progress, console, notes)
        images = step("load images", _load_network_images, [s.path for s in sources], config.image_size, progress)
        if predictor is None:
            predictor, device_note = step("model", load_predictor, config, console, progress)
            notes.append(device_note)
        else:
            timings["model"] = 0.0
        sizes = [image.original_size for image in images]  # the copies need only the decoded sizes
        task = progress.add_task("Writing images", total=0 if in_place else len(sources))
        copies = ImageCopies(
            sources, sizes, staging, config.num_downscales, lambda: progress.advance(task), image_copies == "during"
        )
        with copies if not in_place else contextlib.nullcontext():
            reconstruction = step(
                "reconstruct", _reconstruct, config, images, predictor, reconstruct_fn, console, progress
            )
            step("write images", copies.wait if not in_place else lambda: None)  # what is left after the network
            task = progress.add_task("Writing transforms.json, sparse_pc.ply and the COLMAP model", total=None)
            root = Path(config.data) if in_place else None
            step("write model", write_dataset, reconstruction, staging, sources, config.num_downscales, root, copies)
            shutil.rmtree(staging / ".video_frames", ignore_errors=True)
            progress.update(task, total=1, completed=1)
        stages = stage_times(reconstruction, timings)
        report = _write_report(staging, reconstruction, frame_paths(sources, in_place), stages, console)
        report = None if report is None else output_dir / report.relative_to(staging)

    timings["total"] = time.perf_counter() - started
    result = ProcessResult(output_dir, reconstruction.num_images, len(reconstruction.points), timings)
    result.reconstruction = reconstruction
    result.summary = summary_lines(config, reconstruction, sources, timings, notes, output_dir, stages, report)
    console.rule("[bold green]:tada: :tada: :tada: All DONE :tada: :tada: :tada:")
    for line in result.summary:
        console.print(line, justify="center", highlight=False)
    console.rule()
    return result


def _collect_inputs(
    config: ProcessConfig, frames_dir: Path, progress: Progress, console: Console, notes: list[str]
) -> list[DatasetImage]:
    """The input images (video frames extracted), with the skipped files named on the console and in ``notes``."""
    sources, skipped = collect(config, frames_dir, progress)
    if skipped:
        notes.append(f"Skipped {len(skipped)} file(s)/folder(s): {summarize(skipped)}")
        console.print(f"[yellow]Skipped {len(skipped)} file(s)/folder(s):[/yellow] {summarize(skipped)}")
    if config.skip_image_processing:
        _check_usable_in_place(sources)
    return sources


def _check_options(config: ProcessConfig) -> None:
    if config.image_size < 16 or config.image_size % 16:
        raise InputError(f"--image-size {config.image_size}: must be a multiple of 16 (512 or 224 for the releases)")
    if config.conf_percentile is not None and not 0 <= config.conf_percentile < 100:
        raise InputError(f"--conf-percentile {config.conf_percentile}: must be in [0, 100)")
    if config.min_confidence is not None and not math.isfinite(config.min_confidence):
        raise InputError(f"--min-confidence {config.min_confidence}: must be a finite number (confidence is >= 1)")
    if config.max_points is not None and config.max_points < 1:
        raise InputError(f"--max-points {config.max_points}: must be at least 1")
    if config.max_views_per_pass is not None and config.max_views_per_pass < 2:
        raise InputError(f"--max-views-per-pass {config.max_views_per_pass}: must be at least 2")
    if not 0 <= config.num_downscales <= 8:
        raise InputError(f"--num-downscales {config.num_downscales}: must be between 0 and 8")
    if config.num_frames_target < 2:
        raise InputError(f"--num-frames-target {config.num_frames_target}: must be at least 2")
    if config.skip_image_processing and any(p.is_file() for p in (config.data, config.eval_data) if p is not None):
        raise InputError("--skip-image-processing needs folders of images, not a video")
    if config.refine_distortion and not config.refine:
        raise InputError("--refine-distortion refines with the cameras: pass --refine as well")
    check_eval_data(config.data, config.eval_data)
    from .model.loading import check_model_name  # torch: not at import (--help stays light)

    check_model_name(config.model)
    check_device(config.device)
    if config.refine and config.refine_tracks == "flow" and importlib.util.find_spec("cv2") is None:
        raise InputError(
            "--refine uses optical flow from OpenCV, which is not installed: pip install opencv-python-headless "
            "(or pass --refine-tracks pointmaps)"
        )


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _check_usable_in_place(sources: list[DatasetImage]) -> None:
    for source in sources:
        if display_name(source.path) != str(source.path):
            raise InputError(
                f"{display_name(source.path)}: --skip-image-processing writes the file names into transforms.json, "
                "and this one is not valid UTF-8: rename it or drop the flag"
            )
        try:
            with Image.open(source.path) as image:
                orientation = image.getexif().get(0x0112, 1)
                kind = f"{image.format} {image.mode}"
        except Image.DecompressionBombError as error:
            raise InputError(f"{source.path}: too large for PIL's safety limit ({error}); downscale it first") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise InputError(f"{source.path}: not a readable image ({error})") from None
        if kind not in ("JPEG RGB", "PNG RGB") or orientation != 1:
            raise InputError(
                f"{source.path}: --skip-image-processing needs RGB JPEG/PNG images without EXIF rotation "
                f"(this one is {kind}, orientation {orientation}); drop the flag"
            )


def _load_network_images(paths: list[Path], size: int, progress: Progress) -> list[PreparedImage]:
    """Decode and preprocess in a thread pool (PIL releases the GIL while decoding and resizing), in order."""
    from .io.images import load_image

    def load(path: Path) -> PreparedImage:
        try:
            return load_image(path, size)
        except Image.DecompressionBombError as error:
            raise InputError(f"{path}: too large for PIL's safety limit ({error}); downscale it first") from None

    task = progress.add_task("Loading images", total=len(paths))
    images = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for image in pool.map(load, paths):
            images.append(image)
            progress.advance(task)
    return images


def reconstruct_options(config: ProcessConfig) -> ReconstructOptions:
    """The ``ReconstructOptions`` of the command-line flags: the one place where flags map onto options (unset
    flags keep the pipeline's defaults)."""
    from .options import CameraOptions, PointOptions, ReconstructOptions, RefineBundleOptions, RefineOptions

    points = {"conf_percentile": config.conf_percentile, "min_confidence": config.min_confidence}
    points |= {"max_points": config.max_points, "fuse": None if config.fuse_points else False}
    return ReconstructOptions(
        cameras=CameraOptions(focal_mode=config.focal_mode),
        points=PointOptions(colmap_tracks=config.colmap_tracks, **{k: v for k, v in points.items() if v is not None}),
        refine=RefineOptions(
            enabled=config.refine,
            tracks=config.refine_tracks,
            bundle=RefineBundleOptions(refine_distortion=config.refine_distortion),
        ),
        device=config.device,
        max_views_per_pass=config.max_views_per_pass,
    )


def _reconstruct(
    config: ProcessConfig,
    images: list[PreparedImage],
    predictor: Predictor,
    reconstruct_fn: ReconstructFn | None,
    console: Console,
    progress: Progress,
) -> Reconstruction:
    """The reconstruction (``fast3r_ns.pipeline.reconstruct`` decides whether the images need several passes)."""
    if reconstruct_fn is None:
        from .pipeline import reconstruct

        reconstruct_fn, options = reconstruct, reconstruct_options(config)
    else:
        options = None
    task = progress.add_task(f"Fast3R on {len(images)} images", total=None)

    def report(message: str) -> None:
        progress.update(task, description=message)
        if config.verbose:
            console.log(message)

    reconstruction = reconstruct_fn(images, predictor, options, progress=report)
    progress.update(task, description="Inference and pose recovery", total=1, completed=1)
    return reconstruction


def _write_report(
    staging: Path,
    reconstruction: Reconstruction,
    frame_paths: list[str],
    stages: dict[str, float],
    console: Console,
) -> Path | None:
    """The quality report, written into the staging folder before the rename. A file-system error (disk full)
    fails the run; any other failure only costs the report (its partial files are removed)."""
    from .preview.files import PREVIEW_DIR
    from .preview.report import REPORT_HTML, REPORT_PNG, write_report

    try:
        maps = reconstruction.confidence_maps or None
        return write_report(staging, reconstruction, maps, frame_paths=frame_paths, timings=stages)
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 - the report is optional, the dataset is complete
        for name in (REPORT_HTML, REPORT_PNG):
            (staging / name).unlink(missing_ok=True)
        shutil.rmtree(staging / PREVIEW_DIR, ignore_errors=True)
        console.print(f"[yellow]Could not write the report: {error}", highlight=False)
        return None
