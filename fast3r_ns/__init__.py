"""fast3r_ns: Fast3R instead of COLMAP for nerfstudio."""

from .pipeline import ReconstructOptions, reconstruct, reconstruct_from_predictions

__all__ = ["ReconstructOptions", "reconstruct", "reconstruct_from_predictions"]
