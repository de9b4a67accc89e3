"""Where Fast3R runs: the torch device, the dtype and the predictor for a ``ProcessConfig``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import Progress

from .errors import InputError

if TYPE_CHECKING:
    from .predictions import Predictor
    from .process import ProcessConfig


def resolve_device(config: ProcessConfig, console: Console) -> tuple[str, str]:
    import torch

    if config.device is None:
        if torch.cuda.is_available():
            return "cuda", "Device: cuda"
        message = "No CUDA GPU found: running Fast3R on the CPU (expect minutes for a few dozen images)"
        console.print(f"[bold yellow]Warning:[/bold yellow] {message}")
        return "cpu", message
    check_device(config.device)
    device = torch.device(config.device)
    return str(device), f"Device: {device}"


def check_device(name: str | None) -> None:
    """Refuse a --device that cannot run Fast3R here (before any work)."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"--device {name}: {error}") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name}: Fast3R runs on cuda or cpu here, not on {device.type}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available here; use --device cpu or leave it out")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def load_model(config: ProcessConfig, device: str):
    """The Fast3R model on ``device`` in the configured dtype, and the dtype's name."""
    import torch

    from .model import Fast3R

    dtype_name = config.dtype
    if dtype_name == "auto":
        on_gpu = device.startswith("cuda")
        dtype_name = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "fp32"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    try:
        return Fast3R.from_pretrained(config.model, device=device, dtype=dtype), dtype_name
    except ValueError as error:
        raise InputError(f"--model {config.model}: cannot use this checkpoint ({error})") from None


def load_predictor(config: ProcessConfig, console: Console, progress: Progress) -> tuple[Predictor, str]:
    from .distributed import launched_by_torchrun
    from .predictor import Fast3RPredictor

    if launched_by_torchrun():  # rank 0 of torchrun: its own GPU, the others serve their share of each pass
        import torch.distributed as dist

        from .distributed import DistributedFast3RPredictor, init_from_env

        device = str(init_from_env())
        note = f"Devices: {dist.get_world_size()} processes ({device} on rank 0), decoder tokens split across them"
    else:
        device, note = resolve_device(config, console)
    task = progress.add_task(f"Loading Fast3R ({config.model}, {config.dtype}, {device})", total=None)
    model, dtype_name = load_model(config, device)
    progress.update(task, total=1, completed=1)
    if launched_by_torchrun():
        return DistributedFast3RPredictor(model, device), f"{note} ({dtype_name})"
    return Fast3RPredictor(model, device), f"{note} ({dtype_name})"
