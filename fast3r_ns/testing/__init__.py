"""Test helpers usable by every part of the project: synthetic scenes with ground truth and oracle predictors."""

from .oracle import OraclePredictor
from .scene import Camera, Scene, look_at, make_scene

__all__ = ["Camera", "OraclePredictor", "Scene", "look_at", "make_scene"]
