"""``write_dataset``: a Reconstruction -> a nerfstudio dataset folder (images/, downscales, transforms.json,
sparse_pc.ply, the COLMAP model), for the command line and for library users holding a Reconstruction."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .io.colmap import write_colmap_model
from .io.images import open_rgb
from .io.ply import write_ply
from .io.readers import write_reader_files
from .io.transforms import nerfstudio_points, transforms_dict, write_transforms
from .reconstruction import Reconstruction

COLMAP_DIR = Path("colmap/sparse/0")
PLY_NAME = "sparse_pc.ply"


@dataclass(frozen=True)
class DatasetImage:
    """One input image of the dataset."""

    path: Path  # the file the network read
    name: str  # the name shown to the user (relative to its folder, or the video frame)
    output_name: str  # its name in images/ (frame_00001.jpg ...)


def dataset_images(paths: Sequence[Path], prefix: str = "frame_") -> list[DatasetImage]:
    """Output names frame_00001.jpg, ... (JPEG inputs stay JPEG, everything else becomes PNG)."""
    out = []
    for index, path in enumerate(paths):
        suffix = ".jpg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else ".png"
        out.append(DatasetImage(Path(path), Path(path).name, f"{prefix}{index + 1:05d}{suffix}"))
    return out


def write_dataset(
    reconstruction: Reconstruction,
    output_dir: Path,
    images: Sequence[DatasetImage] | None = None,
    num_downscales: int = 3,
    in_place_root: Path | None = None,
    copies: ImageCopies | None = None,
) -> None:
    """Write the dataset of ``reconstruction`` into the existing folder ``output_dir``.

    images: one per reconstructed image, in order (default: ``reconstruction.image_paths`` as frame_XXXXX);
    in_place_root: write no images: transforms.json names the inputs by absolute path, the COLMAP model by path
    relative to this folder; copies: image copies already started (``ImageCopies``), waited for here.
    """
    output_dir = Path(output_dir)
    images = list(images) if images is not None else dataset_images(reconstruction.image_paths)
    if len(images) != reconstruction.num_images:
        raise ValueError(f"{len(images)} images for a reconstruction of {reconstruction.num_images}")
    if in_place_root is not None:
        file_paths = [str(image.path.absolute()) for image in images]
        colmap_names = [
            image.path.absolute().relative_to(Path(in_place_root).absolute()).as_posix() for image in images
        ]
    else:
        if copies is None:
            sizes = [tuple(int(v) for v in size) for size in reconstruction.image_sizes]
            copies = ImageCopies(images, sizes, output_dir, num_downscales)
            with copies:
                copies.wait()
        else:
            copies.wait()
        colmap_names = [image.output_name for image in images]
    file_paths = frame_paths(images, in_place_root is not None)
    content = transforms_dict(reconstruction, file_paths, PLY_NAME, [image.name for image in images])
    write_transforms(output_dir / "transforms.json", content)
    write_ply(output_dir / PLY_NAME, nerfstudio_points(reconstruction.points), reconstruction.colors)
    write_colmap_model(output_dir / COLMAP_DIR, reconstruction, colmap_names)
    write_reader_files(output_dir, reconstruction)  # sparse/0 for 3DGS and gsplat, init.ply for Brush


def frame_paths(images: Sequence[DatasetImage], in_place: bool) -> list[str]:
    """What transforms.json calls each image (``write_dataset``'s file paths)."""
    return [str(i.path.absolute()) if in_place else f"images/{i.output_name}" for i in images]


def _save(image: Image.Image, path: Path) -> None:
    if path.suffix == ".jpg":
        image.save(path, quality=95, subsampling=0)
    else:
        image.save(path, compress_level=1)


def _write_one(source: DatasetImage, size: tuple[int, int], output_dir: Path, num_downscales: int) -> None:
    target = output_dir / "images" / source.output_name
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
        _save(small_image, output_dir / f"images_{factor}" / target.name)


class ImageCopies:
    """images/frame_XXXXX (RGB, EXIF applied; verbatim copies where nothing changes) and halved copies, written by
    a thread pool from ``__enter__`` on (``background``, so that they overlap the network pass) or from ``wait()``;
    ``wait()`` re-raises the first failure. Leaving the block early (an error elsewhere) cancels what has not
    started."""

    def __init__(
        self,
        images: Sequence[DatasetImage],
        sizes: Sequence[tuple[int, int]],
        output_dir: Path,
        num_downscales: int,
        advance: Callable[[], None] | None = None,
        background: bool = True,
    ) -> None:
        self._args = (list(images), [tuple(int(v) for v in size) for size in sizes], Path(output_dir), num_downscales)
        self._advance, self.background = advance, background
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: list = []
        self._submit: Callable[[], list] = list

    def __enter__(self) -> ImageCopies:
        images, sizes, output_dir, num_downscales = self._args
        for folder in ["images"] + [f"images_{2**level}" for level in range(1, num_downscales + 1)]:
            (output_dir / folder).mkdir(exist_ok=True)

        def write(source: DatasetImage, size: tuple[int, int]) -> None:
            _write_one(source, size, output_dir, num_downscales)
            if self._advance is not None:
                self._advance()

        # warning filters are process-wide: set once here (main thread), restored in __exit__
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fast3r-ns-images")
        self._submit = lambda: [self._pool.submit(write, s, size) for s, size in zip(images, sizes)]
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
