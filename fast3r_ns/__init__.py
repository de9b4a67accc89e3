"""fast3r_ns: Fast3R instead of COLMAP for nerfstudio."""
