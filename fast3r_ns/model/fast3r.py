"""Fast3R: encode each view, fuse all views in one decoder, read global and local pointmaps with DPT heads."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from .attention import DEFAULT_ATTENTION, Attention, AttentionOptions
from .config import DEFAULT_REPO, Fast3RConfig
from .decoder import Decoder
from .dpt import PointmapHead
from .encoder import Encoder
from .image_ids import default_image_ids

Output = dict[str, torch.Tensor]
OUTPUT_KEYS = ("pts3d_in_other_view", "conf", "pts3d_local", "conf_local")
"""Keys of each per-view output dict (the official names)."""


class Fast3R(nn.Module):
    """The released Fast3R architecture, checkpoint-compatible with ``jedyang97/Fast3R_ViT_Large_512``.

    ``forward`` runs five public stages: ``prepare`` (check and cast the views), ``view_ids`` (image-index ids),
    ``encode`` (per view), ``decode`` (all views jointly) and ``heads`` (pointmaps per view).
    """

    def __init__(self, config: Fast3RConfig | None = None, attention: AttentionOptions | None = None) -> None:
        super().__init__()
        self.config = config = config or Fast3RConfig()
        enc, dec, head = config.encoder, config.decoder, config.head
        self.encoder = Encoder(enc)
        self.decoder = Decoder(dec, config.hooks)
        in_dims = (enc.embed_dim, dec.embed_dim, dec.embed_dim, dec.embed_dim)
        args = (in_dims, head.layer_dims, head.feature_dim, head.conf_mode[1])
        self.downstream_head = PointmapHead(*args)
        self.downstream_head_local = PointmapHead(*args) if head.with_local_head else None
        self.encoder_chunk_size = 400
        """Images encoded at once (view-major, same size)."""
        self.head_chunk_size = 25
        """Views run through the heads at once."""
        self.overlap_output_copies = True
        """With ``output_device="cpu"`` on a GPU, copy outputs into pinned memory on a side stream while the next
        head chunk runs (False: plain blocking copies; bench_model's ``--sync-output-copies``). Default is True."""
        self.attention_options = attention or DEFAULT_ATTENTION

    @property
    def attention_options(self) -> AttentionOptions:
        """How CUDA attention runs (backend order, key/value blocks, flash-attn), for every block."""
        return self._attention_options

    @attention_options.setter
    def attention_options(self, options: AttentionOptions) -> None:
        self._attention_options = options
        for module in self.modules():
            if isinstance(module, Attention):
                module.options = options

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_REPO, **kwargs) -> Fast3R:
        """Load config.json + model.safetensors from a folder or a Hugging Face repo (see ``load_pretrained``)."""
        from .loading import load_pretrained

        return load_pretrained(cls, name_or_path, **kwargs)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.patch_embed.proj.weight.dtype

    def set_attention_dtype(self, dtype: torch.dtype | None) -> None:
        """Compute attention scores/softmax in ``dtype`` (None: the activations' dtype).

        ``torch.bfloat16`` mimics the official CUDA path, which runs attention in bf16 whatever the model dtype.
        """
        for module in self.modules():
            if hasattr(module, "compute_dtype"):
                module.compute_dtype = dtype

    def forward(
        self,
        views: list[torch.Tensor],
        image_ids: torch.Tensor | None = None,
        output_device: torch.device | str | None = None,
    ) -> list[Output]:
        """Predict pointmaps for all views jointly.

        views: V tensors [B, 3, H, W] normalised to [-1, 1]; H, W multiples of 16, may differ between views.
        image_ids: index-embedding ids, [V] or [B, V] integer; default ``default_image_ids`` (view 0 -> 0).
        output_device: where outputs are moved as each head chunk finishes (e.g. "cpu" to free GPU memory);
        None: they stay where they were computed.
        Returns V dicts: ``pts3d_in_other_view`` [B, H, W, 3] (view 0's camera frame), ``conf`` [B, H, W],
        ``pts3d_local`` [B, H, W, 3] (the view's own camera frame), ``conf_local`` [B, H, W]; all float32.
        """
        views = self.prepare(views)
        ids = self.view_ids(len(views), views[0].shape[0], image_ids)
        features = self.encode(views)
        hooked = self.decode(features, ids)
        del features
        return self.heads(views, hooked, output_device)

    def prepare(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """The views checked ([B, 3, H, W], one B) and cast to the model's dtype."""
        if not views:
            raise ValueError("Fast3R needs at least one view")
        batch = views[0].shape[0]
        if any(v.ndim != 4 or v.shape[0] != batch or v.shape[1] != 3 for v in views):
            raise ValueError("every view must be a [B, 3, H, W] tensor with the same B")
        return [v.to(self.dtype) for v in views]

    def view_ids(self, num_views: int, batch: int, image_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[B, V] image-index ids: ``image_ids`` ([V] or [B, V]) checked, or ``default_image_ids``."""
        if image_ids is None:
            return default_image_ids(num_views, batch, random=self.config.decoder.random_image_idx_embedding)
        image_ids = torch.as_tensor(image_ids)
        if image_ids.ndim == 1:
            image_ids = image_ids.expand(batch, -1)
        if image_ids.shape != (batch, num_views):
            raise ValueError(f"image_ids must have shape [{num_views}] or [{batch}, {num_views}]")
        return image_ids.long()

    def _groups(self, views: list[torch.Tensor]) -> dict[tuple[int, int], list[int]]:
        """View indices grouped by image size, in view order."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, view in enumerate(views):
            groups[tuple(view.shape[-2:])].append(index)
        return groups

    def encode(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """V tensors [B, P_v, enc_dim] of prepared views; same-size views are encoded together in chunks."""
        features: list[torch.Tensor | None] = [None] * len(views)
        batch = views[0].shape[0]
        for indices in self._groups(views).values():
            images = torch.cat([views[i] for i in indices])  # view-major [len(indices) * B, 3, H, W]
            encoded = torch.cat([self.encoder(c)[0] for c in images.split(self.encoder_chunk_size)])
            for i, chunk in zip(indices, encoded.split(batch)):
                features[i] = chunk
        return features

    def decode(self, features: list[torch.Tensor], image_ids: torch.Tensor) -> list[torch.Tensor]:
        """The hooked decoder layers [B, sum(P_v), C] of all views' features fused jointly (``Decoder.forward``)."""
        return self.decoder(features, image_ids)

    def heads(
        self, views: list[torch.Tensor], hooked: list[torch.Tensor], output_device: torch.device | str | None = None
    ) -> list[Output]:
        """V output dicts (see ``forward``) from the hooked layers, ``head_chunk_size`` views at a time; each chunk's
        outputs move to ``output_device`` as it finishes (None: they stay)."""
        batch = views[0].shape[0]
        patch = self.config.head.patch_size
        bounds = [0]
        for view in views:
            bounds.append(bounds[-1] + (view.shape[-2] // patch) * (view.shape[-1] // patch))
        outputs: list[Output] = [{} for _ in views]
        move = _OutputMover(output_device, hooked[0].device, self.overlap_output_copies)
        for (height, width), indices in self._groups(views).items():
            for chunk in [indices[i : i + self.head_chunk_size] for i in range(0, len(indices), self.head_chunk_size)]:
                # tokens of the chunk's views, view-major: [len(chunk) * B, P, C]
                tokens = [torch.cat([h[:, bounds[i] : bounds[i + 1]] for i in chunk]) for h in hooked]
                grid = (height // patch, width // patch)
                results = {"pts3d_in_other_view": self.downstream_head(tokens, grid)}
                if self.downstream_head_local is not None:
                    results["pts3d_local"] = self.downstream_head_local(tokens, grid)
                for name, (points, conf) in results.items():
                    conf_name = "conf" if name == "pts3d_in_other_view" else "conf_local"
                    points, conf = move(points), move(conf)
                    for i, p, c in zip(chunk, points.split(batch), conf.split(batch)):
                        outputs[i][name], outputs[i][conf_name] = p, c
        move.finish()
        return outputs


class _OutputMover:
    """Moves head outputs to ``target`` as they come. From a CUDA device to the CPU the copies go into pinned memory
    on a side stream, so they overlap the next chunk's heads; ``finish()`` waits for them."""

    def __init__(self, target: torch.device | str | None, source: torch.device, overlap: bool = True) -> None:
        self.target = None if target is None else torch.device(target)
        self.stream = None
        cpu_from_gpu = self.target is not None and self.target.type == "cpu" and source.type == "cuda"
        if overlap and cpu_from_gpu:
            self.stream = torch.cuda.Stream(source)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.target is None:
            return tensor
        if self.stream is None:
            return tensor.to(self.target)
        try:
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        except RuntimeError:  # no page-locked memory to be had: a plain blocking copy
            return tensor.to(self.target)
        self.stream.wait_stream(torch.cuda.current_stream(tensor.device))
        with torch.cuda.stream(self.stream):
            host.copy_(tensor, non_blocking=True)
        tensor.record_stream(self.stream)  # the caching allocator must not reuse it before the copy ends
        return host

    def finish(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()
