"""LD3 distances: L2, and LPIPS weight loading (never random backbone weights)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from analytic import mixture_model

from ld3_core.ld3 import MissingWeightsError, get_distance, learn
from ld3_core.ld3.distances import ENV_BACKBONE, l2_distance
from ld3_core.teacher import TeacherConfig


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty torch hub cache and no backbone path in the environment."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(ENV_BACKBONE, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A torchvision AlexNet state dict made by the test itself (random but ours)."""
    torch.manual_seed(0)
    net = torchvision.models.alexnet()
    path = tmp_path_factory.mktemp("w") / "alexnet-test.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_l2_is_per_sample_mean_squared_error():
    x = torch.zeros(3, 1, 2, 2)
    y = torch.ones(3, 1, 2, 2) * torch.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1, 1)
    assert torch.allclose(l2_distance(x, y), torch.tensor([1.0, 4.0, 9.0]))
    with pytest.raises(ValueError):
        l2_distance(x, y[:2])


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric"):
        get_distance("ssim")


def test_lpips_without_weights_is_a_clear_error(no_weights):
    with pytest.raises(MissingWeightsError) as info:
        get_distance("lpips")
    msg = str(info.value)
    assert "weights" in msg and "alexnet-owt-7be5be79.pth" in msg and ENV_BACKBONE in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(MissingWeightsError, match="vgg16"):
        get_distance("lpips", lpips_net="vgg")
    with pytest.raises(MissingWeightsError):
        get_distance("lpips", backbone_path=no_weights / "nope.pth")


def test_learn_with_lpips_fails_before_any_work(no_weights):
    calls = [0]
    with pytest.raises(MissingWeightsError):
        learn(mixture_model(counter=calls), "unipc", 2, 4, metric="lpips",
              teacher=TeacherConfig(nfe=5, discretization="logsnr"))
    assert calls[0] == 0  # no teacher data generated


def test_lpips_loads_the_given_backbone(alexnet_file, no_weights, monkeypatch):
    path, net = alexnet_file
    dist = get_distance("lpips", backbone_path=path)
    backbone = dict(dist.model.net.named_parameters())
    assert torch.equal(backbone["slice1.0.weight"], net.features[0].weight)
    assert torch.equal(backbone["slice5.10.bias"], net.features[10].bias)
    # the environment variable works too
    monkeypatch.setenv(ENV_BACKBONE, str(path))
    dist_env = get_distance("lpips")
    assert torch.equal(dict(dist_env.model.net.named_parameters())["slice3.6.weight"],
                       net.features[6].weight)


def test_lpips_adapts_small_gray_images(alexnet_file):
    dist = get_distance("lpips", backbone_path=alexnet_file[0])
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 1, 8, 8, generator=gen) * 2 - 1).requires_grad_(True)
    y = torch.rand(3, 1, 8, 8, generator=gen) * 2 - 1
    assert dist.adapt(x).shape == (3, 3, 32, 32)
    d = dist(x, y)
    assert d.shape == (3,) and bool((d > 0).all())
    assert torch.allclose(dist(y, y), torch.zeros(3), atol=1e-6)
    d.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="1 or 3"):
        dist(torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError):
        dist(torch.zeros(2, 16), torch.zeros(2, 16))


def test_lpips_rejects_a_file_without_backbone(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"classifier.1.weight": torch.zeros(2)}, bad)
    with pytest.raises(MissingWeightsError):
        get_distance("lpips", backbone_path=bad)


def test_learn_with_lpips_on_digits(alexnet_file):
    """End to end with LPIPS on 1-channel 8x8 images (adapted to 3x32x32)."""
    from ld3_core.models import load

    res = learn(load("builtin:gmm-digits"), "euler", 1, 3, metric="lpips",
                lpips_backbone=str(alexnet_file[0]),
                teacher=TeacherConfig(nfe=6, discretization="quadratic"),
                n_train=2, n_val=2, epochs_phase1=1, epochs_phase2=1)
    assert res.config["metric"] == "lpips" and res.val_loss >= 0
    assert res.timesteps.shape == (4,)
    assert res.val_loss <= res.heuristic_val_losses[res.config["init_name"]] + 1e-6
