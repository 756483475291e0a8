"""Feature extractors for Frechet distances: "digits", "inception" and "pixels".

Every extractor maps images ``(B, C, H, W)`` in ``[-1, 1]`` (clipped to that range first, as
saving an image would) to ``(B, D)`` float64 features on the CPU, and carries its ``name`` so
every score can say which feature space produced it.

- ``digits``: the 64-d penultimate layer of the shipped digits classifier (8x8 gray images).
- ``inception``: pytorch-fid's InceptionV3 pool3 features (2048-d), i.e. real FID. The weights
  (``pt_inception-2015-12-05-6726825d.pth``) are read from a local file: the ``weights``
  argument, else ``$LD3_INCEPTION_WEIGHTS``, else the torch hub cache file pytorch-fid itself
  uses. Absent weights raise :class:`WeightsNotFoundError`; random weights are never used.
- ``pixels``: the raw flattened pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import Tensor

from ld3_core.extras import require

INCEPTION_WEIGHTS_ENV = "LD3_INCEPTION_WEIGHTS"
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
EXTRACTORS = ("digits", "inception", "pixels")


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights a feature extractor needs are not available locally."""


class FeatureExtractor:
    """Base class: ``extractor(images) -> (B, D)`` float64 CPU features; has ``name`` and ``dim``.

    Subclasses implement :meth:`_features` on a batch already clipped to ``[-1, 1]``.
    """

    name: str = "abstract"
    dim: int = 0

    def __init__(self, batch_size: int = 256, device: str | torch.device = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)

    def _check(self, images: Tensor) -> None:
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"{self.name} extractor needs images (B, C, H, W), got {shape}")

    def _features(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """Features ``(B, D)`` float64 (CPU) of images ``(B, C, H, W)`` in ``[-1, 1]``."""
        self._check(images)
        if not bool(torch.isfinite(images).all()):
            raise ValueError("images contain NaN or inf")
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            batch = images[i : i + self.batch_size].detach().clamp(-1.0, 1.0)
            out.append(self._features(batch).to(device="cpu", dtype=torch.float64))
        if not out:
            return torch.zeros(0, self.dim, dtype=torch.float64)
        return torch.cat(out, dim=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class PixelExtractor(FeatureExtractor):
    """Raw pixels, flattened: ``(B, C*H*W)``."""

    name = "pixels"

    def _features(self, images: Tensor) -> Tensor:
        self.dim = images[0].numel()
        return images.reshape(images.shape[0], -1)


class DigitsExtractor(FeatureExtractor):
    """Penultimate (64-d) features of the shipped digits classifier; images (B, 1, 8, 8)."""

    name = "digits"

    def __init__(
        self, weights: str | Path | None = None, batch_size: int = 1024,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(batch_size, device)
        from ld3_core.evaluation.digits_classifier import load_digits_classifier

        self.model = load_digits_classifier(weights)
        self.dim = self.model.head.in_features

    def _check(self, images: Tensor) -> None:
        super()._check(images)
        if tuple(images.shape[1:]) != (1, 8, 8):
            raise ValueError(
                f"digits extractor needs 8x8 gray images (B, 1, 8, 8), got {tuple(images.shape)}"
            )

    def _features(self, images: Tensor) -> Tensor:
        model = self.model.to(self.device)
        return model.features(images.to(device=self.device, dtype=torch.float32))


def inception_weights_path(weights: str | Path | None = None) -> Path:
    """Where the pytorch-fid Inception weights are: ``weights``, ``$LD3_INCEPTION_WEIGHTS`` or
    the torch hub cache (``<hub dir>/checkpoints/pt_inception-2015-12-05-6726825d.pth``).

    Raises :class:`WeightsNotFoundError` listing the places looked at when none exists.
    """
    tried: list[str] = []
    candidates: list[tuple[str, Path]] = []
    if weights is not None:
        candidates.append(("weights argument", Path(weights)))
    elif os.environ.get(INCEPTION_WEIGHTS_ENV):
        candidates.append((f"${INCEPTION_WEIGHTS_ENV}", Path(os.environ[INCEPTION_WEIGHTS_ENV])))
    else:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
        candidates.append(("torch hub cache", hub))
    for source, path in candidates:
        if path.is_file():
            return path
        tried.append(f"{source}: {path}")
    raise WeightsNotFoundError(
        "Inception-v3 FID weights are missing (looked at " + "; ".join(tried) + "). Download "
        f"{INCEPTION_WEIGHTS_FILE} from the pytorch-fid releases on a machine with internet "
        f"access and pass its path (weights=...) or set ${INCEPTION_WEIGHTS_ENV}; "
        "use the 'digits' or 'pixels' extractor otherwise. Random weights are never used."
    )


class InceptionExtractor(FeatureExtractor):
    """pytorch-fid's InceptionV3 pool3 features (2048-d) with locally stored FID weights.

    Gray images are repeated to 3 channels; inputs are resized to 299x299 by pytorch-fid.
    """

    name = "inception"
    dim = 2048

    def __init__(
        self, weights: str | Path | None = None, batch_size: int = 50,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(batch_size, device)
        require("pytorch_fid.inception", "extractor='inception'")  # the package, then weights
        self.weights_path = inception_weights_path(weights)
        self.model = _build_inception(self.weights_path).to(self.device).eval()

    def _features(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        if images.shape[1] != 3:
            raise ValueError(f"inception extractor needs 1 or 3 channels, got {images.shape[1]}")
        x01 = (images.to(device=self.device, dtype=torch.float32) + 1.0) / 2.0
        return self.model(x01)[0].flatten(1)


def _build_inception(path: Path) -> torch.nn.Module:
    """pytorch-fid's ``InceptionV3([3])`` whose weights come from the local file ``path``."""
    fid_inception = require("pytorch_fid.inception", "extractor='inception'")

    def local_state_dict(*_args: Any, **_kw: Any) -> dict[str, Tensor]:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - re-raised with the path
            raise ValueError(f"cannot read Inception weights {path}: {exc}") from exc

    # pytorch-fid fetches its weights with load_state_dict_from_url; point it at the file.
    with mock.patch.object(fid_inception, "load_state_dict_from_url", local_state_dict):
        try:
            return fid_inception.InceptionV3(
                output_blocks=[fid_inception.InceptionV3.DEFAULT_BLOCK_INDEX]
            )
        except RuntimeError as exc:
            raise ValueError(
                f"{path} does not hold pytorch-fid Inception-v3 weights: {exc}"
            ) from exc


def get_extractor(name: str | FeatureExtractor, **kw: Any) -> FeatureExtractor:
    """Feature extractor by name: ``"digits"``, ``"inception"`` or ``"pixels"``.

    ``kw``: ``batch_size``, ``device``, and ``weights`` (a local path) for digits/inception.
    An extractor instance is returned as is. Raises ``ValueError`` for an unknown name and
    :class:`WeightsNotFoundError` when inception weights are absent.
    """
    if isinstance(name, FeatureExtractor):
        return name
    key = str(name).lower()
    if key == "digits":
        return DigitsExtractor(**kw)
    if key == "inception":
        return InceptionExtractor(**kw)
    if key == "pixels":
        kw.pop("weights", None)
        return PixelExtractor(**kw)
    raise ValueError(f"unknown feature extractor {name!r}; known: {', '.join(EXTRACTORS)}")
