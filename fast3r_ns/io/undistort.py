"""An undistorted PINHOLE copy of a dataset whose cameras carry distortion (``--refine-distortion``), for readers
that take only PINHOLE cameras (graphdeco 3DGS): ``fast3r-ns undistort scene/``.

COLMAP's own image undistorter (``pycolmap.undistort_images``) writes ``images/`` and the model with PINHOLE
cameras and moved observations; the model goes to ``sparse/0`` (where 3DGS and gsplat look; COLMAP leaves it in
``sparse/``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import tyro

from ..errors import InputError

UNDISTORTED_DIR = "undistorted"


def undistort_dataset(dataset: str | Path, output: str | Path | None = None) -> Path:
    """Undistort ``dataset`` (images/ and colmap/sparse/0) into ``output`` (default dataset/undistorted):
    output/images/, output/sparse/0/ (PINHOLE cameras). Returns ``output``."""
    import pycolmap

    dataset = Path(dataset)
    model, images = dataset / "colmap/sparse/0", dataset / "images"
    if not (model / "cameras.bin").is_file() or not images.is_dir():
        raise InputError(f"{dataset}: not a fast3r-ns dataset (needs colmap/sparse/0/cameras.bin and images/)")
    output = Path(output) if output is not None else dataset / UNDISTORTED_DIR
    if output.exists():
        raise InputError(f"{output} already exists: remove it or pass another --output")
    pycolmap.undistort_images(str(output), str(model), str(images))
    sparse = output / "sparse"
    (sparse / "0").mkdir()
    for path in list(sparse.iterdir()):
        if path.is_file():
            shutil.move(str(path), str(sparse / "0" / path.name))
    return output


@dataclass
class UndistortConfig:
    """Write an undistorted PINHOLE copy (images/, sparse/0/) of a dataset processed with --refine-distortion, for
    trainers that reject distorted cameras (graphdeco 3DGS)."""

    dataset: tyro.conf.Positional[Path]
    """The dataset folder written by fast3r-ns process / ns-process-data fast3r."""
    output: Path | None = None
    """Where to write the copy; default DATASET/undistorted."""

    def main(self) -> None:
        try:
            output = undistort_dataset(self.dataset, self.output)
        except InputError as error:
            print(f"Error: {error}")
            raise SystemExit(1) from None
        print(f"Wrote {output}/images and {output}/sparse/0 (PINHOLE cameras): train 3DGS with -s {output}")
