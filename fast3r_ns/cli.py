"""``fast3r-ns``: the command line without nerfstudio (``fast3r-ns process --data imgs/ --output-dir scene/``)."""

from __future__ import annotations

from collections.abc import Sequence

import tyro

from .io.undistort import UndistortConfig
from .preview.viewer import ViewConfig
from .process import ProcessConfig


def entrypoint(args: Sequence[str] | None = None) -> None:
    """Parse the command line and run the chosen subcommand."""
    tyro.extras.set_accent_color("bright_yellow")
    command = tyro.extras.subcommand_cli_from_dict(
        {"process": ProcessConfig, "view": ViewConfig, "undistort": UndistortConfig},
        prog="fast3r-ns",
        description="Fast3R instead of COLMAP: cameras and a point cloud for nerfstudio from one network pass.",
        args=args,
    )
    command.main()


if __name__ == "__main__":
    entrypoint()
