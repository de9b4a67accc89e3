"""``ns-process-data fast3r``: the subcommand's dataclass and its registration into nerfstudio's Union."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Annotated, Union

import tyro
from nerfstudio.process_data.base_converter_to_nerfstudio_dataset import BaseConverterToNerfstudioDataset

from ..process import CONSOLE, ProcessConfig, run_cli

SUBCOMMAND = "fast3r"


@dataclass
class ProcessFast3R(ProcessConfig, BaseConverterToNerfstudioDataset):
    """Process images or a video into a nerfstudio dataset with Fast3R instead of COLMAP: one network pass
    gives every image's camera and a point cloud. Writes images/ (and downscales), transforms.json,
    sparse_pc.ply and a COLMAP model in colmap/sparse/0."""

    def __post_init__(self) -> None:
        """Create nothing yet (the base class makes the folders): the output appears only once complete."""

    def main(self) -> None:
        """Run; exit 1 on any error (ns-process-data itself logs RuntimeError/ValueError and exits 0)."""
        try:
            run_cli(self)
        except (RuntimeError, ValueError):
            CONSOLE.print_exception()
            raise SystemExit(1) from None


def register(module: ModuleType) -> None:
    """Add ``fast3r`` to ``module.Commands`` (nerfstudio.scripts.process_data), once."""
    commands = module.Commands
    if any(ProcessFast3R in getattr(arg, "__args__", (arg,)) for arg in getattr(commands, "__args__", ())):
        return
    module.Commands = Union[commands, Annotated[ProcessFast3R, tyro.conf.subcommand(name=SUBCOMMAND)]]  # noqa: UP007
