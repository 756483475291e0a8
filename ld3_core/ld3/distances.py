"""Distances ``d(student_output, teacher_output)`` for LD3's loss, one value per sample.

- ``l2``: squared L2 distance divided by the number of elements (mean squared error per
  sample), as in the authors' public code.
- ``lpips``: LPIPS (Zhang et al. 2018) from the ``lpips`` package. Its linear calibration
  layers ship inside the package; the AlexNet/VGG backbone weights (torchvision ImageNet
  weights) do not and cannot be downloaded here. They are loaded from, in this order: the
  ``backbone_path`` argument, the ``LD3_LPIPS_BACKBONE`` environment variable, or torchvision's
  file in the torch hub cache (``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` or
  ``vgg16-397923af.pth``). When none exists, :class:`MissingWeightsError` (a ``ValueError``)
  says so: the backbone is never left with random weights.

  Image adaptation: LPIPS compares 3-channel images in [-1, 1] of a reasonable size. 1-channel
  images are repeated to 3 channels; images whose shorter side is below ``min_size`` (32 px by
  default, the CIFAR-10 size the LD3 authors used LPIPS at) are upsampled bilinearly so that the
  shorter side is ``min_size``. Other channel counts are refused with a ``ValueError``. Both
  inputs are clamped to [-1, 1] first.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ld3_core.extras import require

METRICS = ("l2", "lpips")
LPIPS_NETS = ("alex", "vgg")
_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
ENV_BACKBONE = "LD3_LPIPS_BACKBONE"

Distance = Callable[[Tensor, Tensor], Tensor]


class MissingWeightsError(ValueError):
    """Pretrained weights a metric needs are not available locally."""


def check_metric(metric: str) -> str:
    """Validate a metric name (``l2`` or ``lpips``); returns it."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return metric


def l2_distance(x: Tensor, y: Tensor) -> Tensor:
    """Per-sample mean squared difference: x, y (B, ...) -> (B,) in x's dtype."""
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    return (x - y).pow(2).flatten(1).mean(dim=1)


def _hub_backbone_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / _BACKBONE_FILES[net]


def find_lpips_backbone(net: str = "alex", backbone_path: str | os.PathLike | None = None) -> Path:
    """Locate the torchvision backbone weights of LPIPS ``net``; raises MissingWeightsError."""
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    candidates: list[tuple[str, Path]] = []
    if backbone_path is not None:
        candidates.append(("argument backbone_path", Path(backbone_path)))
    elif os.environ.get(ENV_BACKBONE):
        candidates.append((f"${ENV_BACKBONE}", Path(os.environ[ENV_BACKBONE])))
    else:
        candidates.append(("torch hub cache", _hub_backbone_path(net)))
    for _, path in candidates:
        if path.is_file():
            return path
    where = "; ".join(f"{src}: {p}" for src, p in candidates)
    raise MissingWeightsError(
        f"LPIPS ({net}) needs the torchvision ImageNet backbone weights "
        f"({_BACKBONE_FILES[net]}), which are not available ({where} does not exist). "
        f"Download them elsewhere and pass backbone_path=..., set {ENV_BACKBONE}, or put the "
        f"file in {_hub_backbone_path(net).parent}; or use metric='l2'."
    )


def _load_backbone(model: nn.Module, net: str, path: Path) -> None:
    """Copy torchvision ``features.*`` weights into lpips' sliced backbone (strict)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        raise MissingWeightsError(f"{path} holds no torchvision 'features.*' weights for {net}")
    target: dict[str, Tensor] = {}
    backbone = model.net
    for slice_name, block in backbone.named_children():
        for idx, layer in block.named_children():
            for pname, _ in layer.named_parameters(recurse=False):
                key = f"{idx}.{pname}"
                if key not in features:
                    raise MissingWeightsError(f"{path} lacks backbone weight features.{key}")
                target[f"{slice_name}.{idx}.{pname}"] = features[key]
    missing, unexpected = backbone.load_state_dict(target, strict=False)
    if unexpected or any(k for k in missing if "weight" in k or "bias" in k):
        raise MissingWeightsError(f"{path} does not match the LPIPS {net} backbone: {missing}")


class LPIPSDistance(nn.Module):
    """LPIPS distance module: ``forward(x, y) -> (B,)`` for images (B, C, H, W) in [-1, 1].

    Args:
        net: ``alex`` (default, as recommended by the lpips authors) or ``vgg`` (used by LD3).
        backbone_path: torchvision backbone weights file (see module doc for the fallbacks).
        min_size: images with a shorter side below this are upsampled bilinearly to it.
    """

    def __init__(
        self,
        net: str = "alex",
        backbone_path: str | os.PathLike | None = None,
        min_size: int = 32,
    ) -> None:
        super().__init__()
        lpips = require("lpips", "metric='lpips'")  # heavy import, only when LPIPS is used
        path = find_lpips_backbone(net, backbone_path)

        # pnet_rand=True: build the backbone without letting torchvision download anything;
        # the real weights are copied in right after (never left random).
        with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" notices
            warnings.simplefilter("ignore")
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        _load_backbone(self.model, net, path)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.net = net
        self.min_size = int(min_size)
        self.backbone_path = str(path)

    def adapt(self, x: Tensor) -> Tensor:
        """(B, C, H, W) with C in {1, 3} -> (B, 3, H', W') float32 in [-1, 1], H', W' >= min."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"LPIPS needs images of shape (B, 1 or 3, H, W); got {tuple(x.shape)}. "
                "Use metric='l2' for other data."
            )
        x = x.float().clamp(-1.0, 1.0)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        short = min(x.shape[-2:])
        if short < self.min_size:
            scale = self.min_size / short
            size = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
            x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-sample LPIPS distance (B,) between image batches x and y."""
        if x.shape != y.shape:
            raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        out = self.model(self.adapt(x), self.adapt(y))
        return out.reshape(x.shape[0]).to(x.dtype)


def get_distance(
    metric: str,
    *,
    lpips_net: str = "alex",
    backbone_path: str | os.PathLike | None = None,
    lpips_min_size: int = 32,
    device: torch.device | str | None = None,
) -> Distance:
    """The per-sample distance function of ``metric`` (``l2`` or ``lpips``): (x, y) -> (B,).

    Raises ``ValueError`` for an unknown metric and :class:`MissingWeightsError` when the LPIPS
    backbone weights are not available locally.
    """
    check_metric(metric)
    if metric == "l2":
        return l2_distance
    module = LPIPSDistance(lpips_net, backbone_path, lpips_min_size)
    if device is not None:
        module = module.to(device)
    return module
