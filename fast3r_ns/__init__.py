"""fast3r_ns: Fast3R instead of COLMAP for nerfstudio.

The names below load their modules (and torch) on first use, so that the command line's ``--help`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .imports import lazy_exports

if TYPE_CHECKING:
    from .options import (
        CameraOptions,
        PointOptions,
        ReconstructOptions,
        RefineBundleOptions,
        RefineFlowOptions,
        RefineOptions,
    )
    from .pipeline import reconstruct, reconstruct_from_predictions

__all__ = [
    "CameraOptions",
    "PointOptions",
    "ReconstructOptions",
    "RefineBundleOptions",
    "RefineFlowOptions",
    "RefineOptions",
    "reconstruct",
    "reconstruct_from_predictions",
]
__getattr__ = lazy_exports(__name__, {n: ".options" if n.endswith("Options") else ".pipeline" for n in __all__})
