"""Files for trainers other than nerfstudio, beside the nerfstudio dataset (README, "Train with other tools").

- ``sparse`` -> ``colmap/sparse``: graphdeco 3DGS and gsplat read ``sparse/0`` next to ``images/``, nerfstudio
  reads ``colmap/sparse/0``; one model, a relative symlink (a copy where the system refuses symlinks).
- ``init.ply``: the dense cloud in the COLMAP model's world frame. Brush opens the COLMAP model and then takes a
  PLY named init.ply (else the alphabetically last *.ply, e.g. sparse_pc.ply, which is in nerfstudio's rotated
  frame) as its initial point cloud.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..reconstruction import Reconstruction
from .ply import write_ply

SPARSE_LINK = Path("sparse")
INIT_PLY = "init.ply"


def link_sparse(root: str | Path, colmap_sparse: str | Path = "colmap/sparse") -> str:
    """``root/sparse`` -> ``root/colmap_sparse`` as a relative symlink; a copy where symlinks fail (Windows without
    developer mode, some network or FAT file systems). Returns "symlink" or "copy"."""
    root = Path(root)
    link = root / SPARSE_LINK
    try:
        os.symlink(Path(colmap_sparse), link, target_is_directory=True)
        return "symlink"
    except (OSError, NotImplementedError):
        shutil.copytree(root / colmap_sparse, link)
        return "copy"


def write_reader_files(root: str | Path, reconstruction: Reconstruction) -> str:
    """``sparse`` (see ``link_sparse``) and ``init.ply`` in the dataset folder ``root``; returns how sparse was
    made."""
    root = Path(root)
    write_ply(root / INIT_PLY, np.asarray(reconstruction.points, dtype=np.float32), reconstruction.colors)
    return link_sparse(root)
