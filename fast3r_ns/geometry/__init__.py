"""Cameras and point clouds from pointmaps; conventions in ``fast3r_ns.geometry.conventions``."""
