"""DPT head: four hooked token maps -> reassemble -> fuse -> dense 4-channel map (xyz + confidence)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x))))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """(a + RCU1(b)) -> RCU2 -> bilinear x2 (align_corners) -> 1x1 conv."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(dim)  # unused (but stored) in the deepest block
        self.resConfUnit2 = ResidualConvUnit(dim)
        self.out_conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.out_conv(_upsample2(self.resConfUnit2(x)))


class Scratch(nn.Module):
    """Projection of each stage to the fusion width, and the four fusion blocks."""

    def __init__(self, layer_dims: tuple[int, ...], feature_dim: int) -> None:
        super().__init__()
        for i, dim in enumerate(layer_dims, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(dim, feature_dim, 3, padding=1, bias=False))
            setattr(self, f"refinenet{i}", FusionBlock(feature_dim))


def _reassemble(in_dims: tuple[int, ...], layer_dims: tuple[int, ...]) -> nn.ModuleList:
    """1x1 projection then resample to 4x, 2x, 1x and 1/2x the patch grid."""
    resamplers = [
        nn.ConvTranspose2d(layer_dims[0], layer_dims[0], 4, stride=4),
        nn.ConvTranspose2d(layer_dims[1], layer_dims[1], 2, stride=2),
        None,
        nn.Conv2d(layer_dims[3], layer_dims[3], 3, stride=2, padding=1),
    ]
    stages = []
    for in_dim, dim, resample in zip(in_dims, layer_dims, resamplers):
        stage = [nn.Conv2d(in_dim, dim, 1)] + ([resample] if resample is not None else [])
        stages.append(nn.Sequential(*stage))
    return nn.ModuleList(stages)


class DPT(nn.Module):
    """Dense prediction from hooked tokens; parameter names follow the official checkpoint."""

    def __init__(
        self, in_dims: tuple[int, ...], layer_dims: tuple[int, ...], feature_dim: int, out_channels: int = 4
    ) -> None:
        super().__init__()
        self.act_postprocess = _reassemble(in_dims, layer_dims)
        self.scratch = Scratch(layer_dims, feature_dim)
        last_dim = feature_dim // 2
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, last_dim, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(last_dim, last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, out_channels, 1),
        )

    def forward(self, hooked: list[torch.Tensor], grid_hw: tuple[int, int]) -> torch.Tensor:
        """hooked: four [N, h*w, C_i] token maps of views sharing one patch grid (h, w) -> [N, 4, 16h, 16w]."""
        rows, cols = grid_hw
        maps = [t.transpose(1, 2).reshape(t.shape[0], t.shape[2], rows, cols) for t in hooked]
        s = self.scratch
        l1, l2, l3, l4 = (
            rn(stage(m))
            for stage, rn, m in zip(self.act_postprocess, (s.layer1_rn, s.layer2_rn, s.layer3_rn, s.layer4_rn), maps)
        )
        path = s.refinenet4(l4)[:, :, : l3.shape[2], : l3.shape[3]]  # crop matters for odd grids
        path = s.refinenet3(path, l3)
        path = s.refinenet2(path, l2)
        path = s.refinenet1(path, l1)
        return self.head(path)


class PointmapHead(nn.Module):
    """DPT + activations: xyz -> xyz/|xyz| * expm1(|xyz|), conf -> vmin + exp(c)."""

    def __init__(self, in_dims: tuple[int, ...], layer_dims: tuple[int, ...], feature_dim: int, conf_min: float):
        super().__init__()
        self.dpt = DPT(in_dims, layer_dims, feature_dim)
        self.conf_min = conf_min

    def forward(self, hooked: list[torch.Tensor], grid_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns points [N, H, W, 3] and confidence [N, H, W], both float32."""
        out = self.dpt(hooked, grid_hw).permute(0, 2, 3, 1).float()
        xyz, conf = out[..., :3], out[..., 3]
        dist = xyz.norm(dim=-1, keepdim=True)
        points = xyz / dist.clamp(min=1e-8) * torch.expm1(dist)
        return points, self.conf_min + conf.exp()
