"""``builtin:unet-digits``: a small convolutional eps-prediction U-Net for the 8x8 digits.

Trained by ``scripts/train_unet_digits.py`` under ``VPLinear`` (continuous t in [1e-3, 1]) with
the standard denoising loss ``|eps_theta(alpha_t x0 + sigma_t eps, t) - eps|^2``; the weights
ship as ``ld3_core/weights/unet_digits.pt``. The network takes the continuous time t itself.

Layout (C = ``channels``): conv_in -> residual block at 8x8 (C) -> stride-2 conv -> 2
residual blocks at 4x4 (2C) -> conv to C + nearest upsample -> concat with the 8x8 skip ->
residual block at 8x8 (2C -> C) -> GroupNorm/SiLU/conv_out. Every residual block adds a
projection of the sinusoidal time embedding. Most compute sits at 4x4 so that CPU training
stays within minutes.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ld3_core.weights import weights_path

UNET_FILE = "unet_digits.pt"


def timestep_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Sinusoidal embedding (B, dim) of continuous times t (B,) (multiplied by ``scale``)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = (t.float() * scale)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv x2 with an additive time projection and a residual connection."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(t_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """x (B, c_in, H, W), temb (B, t_dim) -> (B, c_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class DigitsUNet(nn.Module):
    """eps-prediction U-Net for (B, 1, 8, 8) inputs; ``forward(x, t)`` with t (B,) in [0, 1]."""

    def __init__(self, channels: int = 32, t_dim: int = 128) -> None:
        super().__init__()
        c = channels
        self.config = {"channels": channels, "t_dim": t_dim}
        self.t_dim = t_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim)
        )
        self.conv_in = nn.Conv2d(1, c, 3, padding=1)
        self.down = ResBlock(c, c, t_dim)
        self.downsample = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.mid1 = ResBlock(2 * c, 2 * c, t_dim)
        self.mid2 = ResBlock(2 * c, 2 * c, t_dim)
        self.up_conv = nn.Conv2d(2 * c, c, 3, padding=1)
        self.up = ResBlock(2 * c, c, t_dim)
        self.norm_out = nn.GroupNorm(8, c)
        self.conv_out = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Predicted noise (B, 1, 8, 8) for x_t (B, 1, 8, 8) at VPLinear times t (B,)."""
        temb = self.time_mlp(timestep_embedding(t, self.t_dim).to(x.dtype))
        skip = self.down(self.conv_in(x), temb)  # (B, C, 8, 8)
        h = self.mid2(self.mid1(self.downsample(skip), temb), temb)  # (B, 2C, 4, 4)
        h = F.interpolate(self.up_conv(h), scale_factor=2.0, mode="nearest")  # (B, C, 8, 8)
        h = self.up(torch.cat([h, skip], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def load_unet_digits(
    path: str | Path | None = None, device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DigitsUNet:
    """The trained network (eval mode, no grad on parameters) on ``device`` in ``dtype``.

    ``path`` defaults to the shipped ``ld3_core/weights/unet_digits.pt``; raises
    ``FileNotFoundError`` naming the training script when it is absent.
    """
    net = _load_cpu(str(path) if path is not None else str(weights_path(UNET_FILE)))
    clone = DigitsUNet(**net.config)
    clone.load_state_dict(net.state_dict())
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone.to(device=device, dtype=dtype)


@lru_cache(maxsize=4)
def _load_cpu(path: str) -> DigitsUNet:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"unet-digits weights not found at {path}; run `python scripts/train_unet_digits.py`"
        )
    blob: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    net = DigitsUNet(**blob["config"])
    state = {k: v.float() for k, v in blob["state_dict"].items()}
    net.load_state_dict(state)
    return net
