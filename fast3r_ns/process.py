"""Images or a video -> a nerfstudio dataset (images/, transforms.json, sparse_pc.ply, COLMAP model) with Fast3R.

``ProcessConfig`` is the one option set of ``ns-process-data fast3r`` and ``fast3r-ns process``;
``process`` does the work and raises ``InputError`` (one clear message) for anything the user can fix.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .errors import InputError
from .io.colmap import write_colmap_model
from .io.images import IMAGE_SUFFIXES, ImageLoadError, open_rgb
from .io.output import atomic_output_dir, check_output_dir
from .io.ply import write_ply
from .io.transforms import nerfstudio_points, shares_one_camera, transforms_dict, write_transforms
from .io.video import VIDEO_SUFFIXES, extract_frames
from .model.loading import DEFAULT_REPO

if TYPE_CHECKING:
    from .io.images import PreparedImage
    from .predictor import Predictor
    from .reconstruction import Reconstruction

CONSOLE = Console(width=120)
COLMAP_DIR = Path("colmap/sparse/0")
PLY_NAME = "sparse_pc.ply"
ReconstructFn = Callable[..., "Reconstruction"]


@dataclass
class ProcessConfig:
    """Process images or a video into a nerfstudio dataset with Fast3R: images/, transforms.json, sparse_pc.ply
    and a COLMAP model. (The options of both ``fast3r-ns process`` and ``ns-process-data fast3r``.)"""

    data: Path
    """Folder of images (searched recursively, hidden files skipped) or a video file."""
    output_dir: Path
    """Output folder (images/, images_2,4,8/, transforms.json, sparse_pc.ply, colmap/sparse/0/); it appears only
    once complete, and must not exist unless --overwrite."""
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
    """Refine cameras and points by bundle adjustment (pycolmap) on multi-view tracks from Fast3R's pointmaps and
    optical flow between neighbouring images (see --refine-tracks); costs CPU time, off by default."""
    refine_tracks: Literal["pointmaps", "flow"] = "flow"
    """With --refine: where the correspondences come from. "flow": optical flow started from the pointmaps, after a
    first refinement on pointmap tracks (needs OpenCV); "pointmaps": pixels whose predicted 3-D points coincide
    (faster, cannot see a view's misplaced pointmap)."""
    refine_distortion: bool = False
    """With --refine: also refine one radial distortion coefficient (k1) per camera, written to transforms.json
    and the COLMAP model; for lenses with visible distortion."""
    num_downscales: int = 3
    """How many times to halve the images: 3 writes images_2, images_4 and images_8."""
    num_frames_target: int = 300
    """For a video: about how many frames to extract, evenly spread (results may not be exact)."""
    skip_image_processing: bool = False
    """Write no images/ or downscales: transforms.json names the inputs by absolute path, the COLMAP model by
    path relative to --data. The inputs must be RGB JPEG/PNG without EXIF rotation."""
    overwrite: bool = False
    """Replace an existing --output-dir (only once the new one is complete)."""
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


@dataclass(frozen=True)
class _Source:
    path: Path  # file the network reads
    name: str  # original name shown to the user (relative to its folder, or the video frame)
    output_name: str  # frame_00001.jpg ...


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
            model, _ = _load_model(config, str(device))
            serve(model, device)
            return None
        try:
            return _run_cli(config, console)
        finally:
            stop_workers()
    finally:
        dist.destroy_process_group()


def _run_cli(config: ProcessConfig, console: Console) -> ProcessResult:
    from .model.loading import WeightsNotFoundError

    try:
        return process(config, console=console)
    except (InputError, ImageLoadError, WeightsNotFoundError) as error:
        console.print(f"[bold red]Error:[/bold red] {error}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None


def process(
    config: ProcessConfig,
    console: Console = CONSOLE,
    predictor: Predictor | None = None,
    reconstruct_fn: ReconstructFn | None = None,
) -> ProcessResult:
    """Turn ``config.data`` (and ``config.eval_data``) into a nerfstudio dataset in ``config.output_dir``.

    predictor: use this instead of loading ``config.model``; reconstruct_fn: called like
    ``fast3r_ns.pipeline.reconstruct`` (tests pass one that needs no network).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []
    inputs = tuple(p for p in (config.data, config.eval_data) if p is not None)
    output_dir = check_output_dir(config.output_dir, config.overwrite, inputs)
    _check_options(config)

    with atomic_output_dir(output_dir, config.overwrite) as staging, _progress(console) as progress:
        tic = time.perf_counter()
        sources, skipped = _collect(config, staging / ".video_frames", progress)
        if skipped:
            shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
            notes.append(f"Skipped {len(skipped)} file(s) that are not images: {shown}")
            console.print(f"[yellow]Skipped {len(skipped)} file(s) that are not images:[/yellow] {shown}")
        if config.skip_image_processing:
            _check_usable_in_place(sources)
        timings["collect"] = time.perf_counter() - tic

        tic = time.perf_counter()
        images = _load_network_images([s.path for s in sources], config.image_size, progress)
        timings["load images"] = time.perf_counter() - tic

        tic = time.perf_counter()
        if predictor is None:
            predictor, device_note = _load_predictor(config, console, progress)
            notes.append(device_note)
        timings["model"] = time.perf_counter() - tic

        # The image copies need only the decoded sizes: they are written while the network runs.
        sizes = [image.original_size for image in images]
        with _ImageWriter(sources, sizes, staging, config.num_downscales, progress, config.skip_image_processing) as w:
            tic = time.perf_counter()
            reconstruction, confidence_maps = _reconstruct(config, images, predictor, reconstruct_fn, console, progress)
            timings["reconstruct"] = time.perf_counter() - tic
            tic = time.perf_counter()
            w.wait()
            timings["write images"] = time.perf_counter() - tic  # what was left after the reconstruction
        if config.skip_image_processing:
            file_paths = [str(s.path.absolute()) for s in sources]
            colmap_names = [s.path.absolute().relative_to(Path(config.data).absolute()).as_posix() for s in sources]
        else:
            file_paths = [f"images/{s.output_name}" for s in sources]
            colmap_names = [s.output_name for s in sources]

        tic = time.perf_counter()
        task = progress.add_task("Writing transforms.json, sparse_pc.ply and the COLMAP model", total=None)
        content = transforms_dict(reconstruction, file_paths, PLY_NAME, [s.name for s in sources])
        write_transforms(staging / "transforms.json", content)
        write_ply(staging / PLY_NAME, nerfstudio_points(reconstruction.points), reconstruction.colors)
        write_colmap_model(staging / COLMAP_DIR, reconstruction, colmap_names)
        shutil.rmtree(staging / ".video_frames", ignore_errors=True)
        progress.update(task, total=1, completed=1)
        timings["write model"] = time.perf_counter() - tic

    stages = _stages(reconstruction, timings)
    report = _write_report(output_dir, reconstruction, confidence_maps, file_paths, stages, console)
    timings["total"] = time.perf_counter() - started
    result = ProcessResult(output_dir, reconstruction.num_images, len(reconstruction.points), timings)
    result.reconstruction = reconstruction
    result.summary = _summary(config, reconstruction, sources, timings, notes, output_dir, stages, report)
    console.rule("[bold green]:tada: :tada: :tada: All DONE :tada: :tada: :tada:")
    for line in result.summary:
        console.print(line, justify="center", highlight=False)
    console.rule()
    return result


def _check_options(config: ProcessConfig) -> None:
    if config.image_size < 16 or config.image_size % 16:
        raise InputError(f"--image-size {config.image_size}: must be a multiple of 16 (512 or 224 for the releases)")
    if config.conf_percentile is not None and not 0 <= config.conf_percentile < 100:
        raise InputError(f"--conf-percentile {config.conf_percentile}: must be in [0, 100)")
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


def _list_images(folder: Path) -> tuple[list[Path], list[str]]:
    """Images under ``folder`` (recursive, sorted, hidden skipped) and the names of the other files."""
    images, others = [], []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    return images, [p.relative_to(folder).as_posix() for p in others]


def _inputs_of(data: Path, frames_dir: Path, config: ProcessConfig) -> tuple[list[tuple[Path, str]], list[str]]:
    """[(file, display name)] of one --data / --eval-data argument, and skipped non-image files."""
    data = Path(data).expanduser()
    if not data.exists():
        raise InputError(f"{data}: no such file or folder")
    if data.is_dir():
        images, skipped = _list_images(data)
        if not images:
            raise InputError(f"{data}: no images found (looked for {' '.join(IMAGE_SUFFIXES)}, recursively)")
        return [(p, p.relative_to(data).as_posix()) for p in images], skipped
    if data.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{data} is a single image: pass the folder holding at least two images, or a video")
    if data.suffix.lower() not in VIDEO_SUFFIXES and config.verbose:
        CONSOLE.print(f"{data}: not a known video suffix, trying ffmpeg anyway")
    frames = extract_frames(data, frames_dir, config.num_frames_target, config.verbose)
    return [(p, f"{data.name}#{p.stem.split('_')[-1]}") for p in frames], []


def _collect(config: ProcessConfig, frames_dir: Path, progress: Progress) -> tuple[list[_Source], list[str]]:
    task = progress.add_task("Collecting input images", total=None)
    train, skipped = _inputs_of(config.data, frames_dir / "train", config)
    evaluation: list[tuple[Path, str]] = []
    if config.eval_data is not None:
        evaluation, skipped_eval = _inputs_of(config.eval_data, frames_dir / "eval", config)
        skipped += skipped_eval
    if len(train) + len(evaluation) < 2:
        raise InputError(f"{config.data}: found 1 image; Fast3R needs at least 2 views of the scene")
    sources = []
    for prefix, items in (("frame_train_" if evaluation else "frame_", train), ("frame_eval_", evaluation)):
        for index, (path, name) in enumerate(items):
            suffix = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
            sources.append(_Source(path, name, f"{prefix}{index + 1:05d}{suffix}"))
    progress.update(task, total=len(sources), completed=len(sources))
    return sources, skipped


def _check_usable_in_place(sources: list[_Source]) -> None:
    for source in sources:
        with Image.open(source.path) as image:
            orientation = image.getexif().get(0x0112, 1)
            if image.format not in ("JPEG", "PNG") or image.mode != "RGB" or orientation != 1:
                raise InputError(
                    f"{source.path}: --skip-image-processing needs RGB JPEG/PNG images without EXIF rotation "
                    f"(this one is {image.format} {image.mode}, orientation {orientation}); drop the flag"
                )


def _resolve_device(config: ProcessConfig, console: Console) -> tuple[str, str]:
    import torch

    if config.device is None:
        if torch.cuda.is_available():
            return "cuda", "Device: cuda"
        message = "No CUDA GPU found: running Fast3R on the CPU (expect minutes for a few dozen images)"
        console.print(f"[bold yellow]Warning:[/bold yellow] {message}")
        return "cpu", message
    try:
        device = torch.device(config.device)
    except RuntimeError as error:
        raise InputError(f"--device {config.device}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {config.device}: CUDA is not available here; use --device cpu or leave it out")
    return str(device), f"Device: {device}"


def _load_model(config: ProcessConfig, device: str):
    """The Fast3R model on ``device`` in the configured dtype, and the dtype's name."""
    import torch

    from .model import Fast3R

    dtype_name = config.dtype
    if dtype_name == "auto":
        on_gpu = device.startswith("cuda")
        dtype_name = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "fp32"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    try:
        return Fast3R.from_pretrained(config.model, device=device, dtype=dtype), dtype_name
    except ValueError as error:
        raise InputError(f"--model {config.model}: cannot use this checkpoint ({error})") from None


def _load_predictor(config: ProcessConfig, console: Console, progress: Progress) -> tuple[Predictor, str]:
    from .distributed import launched_by_torchrun
    from .predictor import Fast3RPredictor

    if launched_by_torchrun():  # rank 0 of torchrun: its own GPU, the others serve their share of each pass
        import torch.distributed as dist

        from .distributed import DistributedFast3RPredictor, init_from_env

        device = str(init_from_env())
        note = f"Devices: {dist.get_world_size()} processes ({device} on rank 0), decoder tokens split across them"
    else:
        device, note = _resolve_device(config, console)
    task = progress.add_task(f"Loading Fast3R ({config.model}, {config.dtype}, {device})", total=None)
    model, dtype_name = _load_model(config, device)
    progress.update(task, total=1, completed=1)
    if launched_by_torchrun():
        return DistributedFast3RPredictor(model, device), f"{note} ({dtype_name})"
    return Fast3RPredictor(model, device), f"{note} ({dtype_name})"


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


def _reconstruct(
    config: ProcessConfig,
    images: list[PreparedImage],
    predictor: Predictor,
    reconstruct_fn: ReconstructFn | None,
    console: Console,
    progress: Progress,
) -> tuple[Reconstruction, list[np.ndarray]]:
    """The reconstruction (in passes when the images do not fit one) and each view's confidence map."""
    from .chunked import chunked_if_needed

    if reconstruct_fn is None:
        from .pipeline import ReconstructOptions, reconstruct

        reconstruct_fn = reconstruct
        values = {
            "focal_mode": config.focal_mode,
            "conf_percentile": config.conf_percentile,
            "min_confidence": config.min_confidence,
            "max_points": config.max_points,
            "device": config.device,
            "refine": config.refine,
            "refine_distortion": config.refine_distortion,
            "refine_tracks": config.refine_tracks,
        }
        options = ReconstructOptions(**{k: v for k, v in values.items() if v is not None})
    else:
        options = None
    task = progress.add_task(f"Fast3R on {len(images)} images", total=None)

    def report(message: str) -> None:
        progress.update(task, description=message)
        if config.verbose:
            console.log(message)

    views = [image.tensor for image in images]
    predictor = chunked_if_needed(predictor, views, config.max_views_per_pass, progress=report)
    capture = _ConfidenceCapture(predictor)
    reconstruction = reconstruct_fn(images, capture, options, progress=report)
    progress.update(task, description="Inference and pose recovery", total=1, completed=1)
    return reconstruction, capture.maps


def _save(image: Image.Image, path: Path) -> None:
    if path.suffix == ".jpg":
        image.save(path, quality=95, subsampling=0)
    else:
        image.save(path, compress_level=1)


def _write_one(source: _Source, size: tuple[int, int], staging: Path, num_downscales: int) -> None:
    target = staging / "images" / source.output_name
    with Image.open(source.path) as raw:
        verbatim = raw.format in ("JPEG", "PNG") and raw.mode == "RGB" and raw.getexif().get(0x0112, 1) == 1
    image = open_rgb(source.path)
    if image.size != size:
        raise RuntimeError(f"{source.path}: read as {image.size}, reconstructed as {size}")
    if verbatim:
        shutil.copyfile(source.path, target)
    else:
        _save(image, target)
    for level in range(1, num_downscales + 1):
        factor = 2**level
        small = (max(1, size[0] // factor), max(1, size[1] // factor))
        small_image = image.resize(small, Image.Resampling.LANCZOS, reducing_gap=3.0)
        _save(small_image, staging / f"images_{factor}" / target.name)


class _ImageWriter:
    """images/frame_XXXXX (RGB, EXIF applied; verbatim copies where nothing changes) and halved copies, written by
    a thread pool in the background from ``__enter__`` on; ``wait()`` re-raises the first failure. Leaving the block
    early (an error elsewhere) cancels what has not started."""

    background = True
    """Write while the network runs; False starts the writes in ``wait()`` (bench_pipeline's comparison)."""

    def __init__(
        self,
        sources: list[_Source],
        sizes: list[tuple[int, int]],
        staging: Path,
        num_downscales: int,
        progress: Progress,
        skip: bool = False,
    ) -> None:
        self._args = (sources, [tuple(int(v) for v in size) for size in sizes], staging, num_downscales)
        self._progress, self._skip = progress, skip
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: list = []

    def __enter__(self) -> _ImageWriter:
        if self._skip:
            return self
        sources, sizes, staging, num_downscales = self._args
        for folder in ["images"] + [f"images_{2**level}" for level in range(1, num_downscales + 1)]:
            (staging / folder).mkdir()
        task = self._progress.add_task("Writing images", total=len(sources))

        def write(source: _Source, size: tuple[int, int]) -> None:
            _write_one(source, size, staging, num_downscales)
            self._progress.advance(task)

        # warning filters are process-wide: set once here (main thread), restored in __exit__
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fast3r-ns-images")
        self._submit = lambda: [self._pool.submit(write, s, size) for s, size in zip(sources, sizes)]
        if self.background:
            self._jobs = self._submit()
        return self

    def wait(self) -> None:
        if self._pool is not None and not self._jobs:
            self._jobs = self._submit()
        for job in self._jobs:
            job.result()

    def __exit__(self, *exc_info) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._warnings.__exit__(*exc_info)


def _stages(reconstruction: Reconstruction, timings: dict[str, float]) -> dict[str, float]:
    """Seconds per stage, in order: ours around the pipeline's own stages."""
    stages = dict(reconstruction.timings) or {"reconstruct": timings["reconstruct"]}
    stages = {k: timings[k] for k in ("collect", "load images", "model")} | stages
    return stages | {k: timings[k] for k in ("write images", "write model")}


class _ConfidenceCapture:
    """Passes predictions through, keeping each view's confidence map at 1/4 resolution for the report."""

    def __init__(self, predictor: Predictor, stride: int = 4) -> None:
        self.predictor, self.stride, self.maps = predictor, stride, []

    @property
    def chunk_report(self) -> list:
        """The merge report of a chunked predictor (empty for one pass)."""
        return getattr(self.predictor, "chunk_report", None) or []

    def __call__(self, views):
        outputs = self.predictor(views)
        self.maps = [o["conf"][0, :: self.stride, :: self.stride].float().cpu().numpy() for o in outputs]
        return outputs


def _write_report(
    output_dir: Path,
    reconstruction: Reconstruction,
    confidence_maps: list[np.ndarray],
    frame_paths: list[str],
    stages: dict[str, float],
    console: Console,
) -> Path | None:
    """The quality report beside the dataset; a failure here never costs the dataset already written."""
    from .preview.report import write_report

    try:
        return write_report(
            output_dir, reconstruction, confidence_maps or None, frame_paths=frame_paths, timings=stages
        )
    except Exception as error:  # noqa: BLE001 - the report is optional, the dataset is complete
        console.print(f"[yellow]Could not write the report: {error}", highlight=False)
        return None


def _refine_lines(reconstruction: Reconstruction, sources: list[_Source]) -> list[str]:
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


def _summary(
    config: ProcessConfig,
    reconstruction: Reconstruction,
    sources: list[_Source],
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
    lines.append(f"Wrote {len(reconstruction.points):,} points to {PLY_NAME} and {COLMAP_DIR.as_posix()}")
    if len(reconstruction.points) == 0:
        lines.append("[yellow]No point passed the confidence filters: splatfacto will start from random points")
    from .chunked import summary_lines

    lines += summary_lines(getattr(reconstruction, "chunk_report", None) or [])
    per_stage = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
    lines.append(f"Time: {per_stage}; total {timings['total']:.1f} s")
    lines += notes
    if report is not None:
        lines.append(f"Report: {report} (3-D preview: fast3r-ns view {output_dir})")
    lines.append(f"Next: ns-train splatfacto --data {output_dir}")
    return lines
