"""Several GPUs of one host under ``torchrun``: rank 0 runs the pipeline, every rank runs its share of each pass.

``torchrun --nproc-per-node 2 -m fast3r_ns.cli process --data imgs/ --output-dir scene/`` starts one process per
GPU. Rank 0 does everything ``fast3r-ns process`` does; its predictor (``DistributedFast3RPredictor``) sends each
rank its views, runs the sequence-parallel forward (``fast3r_ns.model.parallel``) and collects all outputs. The
other ranks only serve passes (``serve``) until rank 0 tells them to stop; they never touch the output folder.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

from .chunked import PASS_BYTES_PER_TOKEN, free_gpu_gib, views_per_pass_for_memory
from .model.parallel import Method, SequenceParallel, gather_outputs, parallel_forward, split_views, view_tokens
from .predictions import Output


def launched_by_torchrun() -> bool:
    """True in a process started by ``torchrun`` (or any launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(timeout_minutes: float = 120.0) -> torch.device:
    """Join the process group that ``torchrun`` describes (NCCL on CUDA, else gloo); returns this rank's device.

    The timeout is long: the other ranks wait while rank 0 collects and loads the images (or a video).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=timeout_minutes)
        kwargs = {"device_id": device} if cuda else {}
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout, **kwargs)
    return device


def _shapes_message(views: Sequence[torch.Tensor] | None) -> list:
    return ["stop", None] if views is None else ["predict", [tuple(v.shape) for v in views]]


class DistributedFast3RPredictor:
    """Rank 0's Predictor over all ranks: float32 outputs of every view on the CPU, like ``Fast3RPredictor``."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device | str,
        method: Method = "allgather",
        group: dist.ProcessGroup | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()  # outputs stay on the GPU until sent to rank 0
        self.parallel = SequenceParallel(group, method)
        if self.parallel.rank != 0:
            raise RuntimeError("DistributedFast3RPredictor runs on rank 0; the other ranks call serve()")

    @property
    def world_size(self) -> int:
        return self.parallel.world_size

    def max_views_per_pass(self, views: list[torch.Tensor]) -> int | None:
        """The one-GPU limit times the number of ranks, less the all-gathered keys and values (4 KiB per token)."""
        if self.device.type != "cuda":
            return None
        tokens = sum(view_tokens(self.model, views)) * views[0].shape[0] / len(views)
        per_rank = views_per_pass_for_memory(free_gpu_gib(self.device), tokens, self.model.dtype.itemsize)
        return int(per_rank * self.world_size / (1 + self.world_size * 4096 / PASS_BYTES_PER_TOKEN))

    @torch.inference_mode()
    def __call__(self, views: list[torch.Tensor]) -> list[Output]:
        message = _shapes_message(views)
        dist.broadcast_object_list(message, src=0, group=self.parallel.group)
        ranges = split_views(view_tokens(self.model, views), self.world_size)
        group = self.parallel.group
        requests = []
        for rank, members in enumerate(ranges[1:], start=1):
            for view in members:
                tensor = views[view].to(self.device, self.model.dtype).contiguous()
                requests.append(dist.isend(tensor, dist.get_global_rank(group, rank), group=group))
        mine, outputs = parallel_forward(self.model, views, self.parallel)
        for request in requests:
            request.wait()
        shapes = [v.shape for v in views]
        return gather_outputs(mine, outputs, shapes, ranges, group, self.device)  # type: ignore[return-value]

    def close(self) -> None:
        """Tell the other ranks to stop serving."""
        stop_workers(self.parallel.group)


def stop_workers(group: dist.ProcessGroup | None = None) -> None:
    """From rank 0: end ``serve`` on every other rank (safe to call when no pass ran)."""
    dist.broadcast_object_list(_shapes_message(None), src=0, group=group)


@torch.inference_mode()
def serve(
    model: torch.nn.Module,
    device: torch.device | str,
    method: Method = "allgather",
    group: dist.ProcessGroup | None = None,
) -> int:
    """On ranks other than 0: run this rank's share of every pass rank 0 starts, until it says stop.

    Returns the number of passes served.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    parallel = SequenceParallel(group, method)
    group = parallel.group
    passes = 0
    while True:
        message = [None, None]
        dist.broadcast_object_list(message, src=0, group=group)
        if message[0] == "stop":
            return passes
        shapes = [torch.Size(s) for s in message[1]]
        placeholders = [torch.empty(s, device="meta") for s in shapes]
        ranges = split_views(view_tokens(model, placeholders), parallel.world_size)
        own = []
        for view in ranges[parallel.rank]:
            tensor = torch.empty(shapes[view], device=device, dtype=model.dtype)
            dist.recv(tensor, dist.get_global_rank(group, 0), group=group)
            own.append(tensor)
        mine, outputs = parallel_forward(model, placeholders, parallel, local_views=own)
        gather_outputs(mine, outputs, shapes, ranges, group, device)
        passes += 1
