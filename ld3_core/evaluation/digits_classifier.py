"""A small CNN classifier of the 8x8 digits; its penultimate layer is the "digits" feature space.

The shipped weights (``ld3_core/weights/digits_classifier.pt``) are produced by
``scripts/train_digits_classifier.py``. Input: ``(B, 1, 8, 8)`` images in ``[-1, 1]``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from ld3_core.weights import weights_path

CLASSIFIER_FILE = "digits_classifier.pt"
FEATURE_DIM = 64


class DigitsClassifier(nn.Module):
    """conv(32) -> conv(64) -> pool -> conv(64) -> pool -> fc(64)+SiLU [features] -> fc(10)."""

    def __init__(self, feature_dim: int = FEATURE_DIM, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 2 * 2, feature_dim),
            nn.SiLU(),  # smooth, no dead units: the feature covariance stays full rank
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations ``(B, feature_dim)`` of images ``(B, 1, 8, 8)`` in [-1, 1]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, 10)`` of images ``(B, 1, 8, 8)`` in [-1, 1]."""
        return self.head(self.dropout(self.body(x)))


def load_digits_classifier(path: str | Path | None = None) -> DigitsClassifier:
    """The trained classifier (eval mode, float32, CPU) from ``path`` or the shipped weights.

    Raises ``FileNotFoundError`` naming the training script when the weights file is absent.
    """
    return _load(str(path) if path is not None else str(weights_path(CLASSIFIER_FILE)))


@lru_cache(maxsize=4)
def _load(path: str) -> DigitsClassifier:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"digits classifier weights not found at {path}; "
            "run `python scripts/train_digits_classifier.py` to create them"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitsClassifier(feature_dim=int(blob.get("feature_dim", FEATURE_DIM)))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
