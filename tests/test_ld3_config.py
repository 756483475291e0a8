"""LD3 hyper-parameter defaults, validation, the plateau decay and the batch order."""

from __future__ import annotations

import pytest
import torch

from ld3_core.ld3 import make_config, paper_config
from ld3_core.ld3.config import PAPER_DIFFERENCES
from ld3_core.ld3.trainer import PlateauDecay, epoch_permutation


def test_paper_defaults_pixel_and_latent():
    px = make_config(4, latent=False)
    assert (px.n_train, px.n_val, px.batch_size) == (50, 50, 2)
    assert (px.epochs_phase1, px.epochs_phase2) == (2, 5)
    assert px.lr_xi == 5e-3 and px.momentum_xi == 0.9
    assert px.lr_xi_c == pytest.approx(0.1 / 4) and px.lr_x == pytest.approx(12 / 4)
    assert (px.clip, px.patience, px.decay) == (1.0, 5, 0.8)
    assert (px.min_lr_xi, px.min_lr_xi_c, px.gamma) == (5e-5, 1e-6, 1e-3)
    lt = make_config(10, latent=True)
    assert lt.lr_xi == 1e-3 and lt.lr_xi_c == pytest.approx(1e-4) and lt.lr_x == 1.2
    assert make_config(4, latent=False, lr_xi=0.1).lr_xi == 0.1


def test_paper_config_is_app_b1_exactly():
    """Only restore_best differs from the paper's text by default; paper_config undoes it."""
    for latent in (False, True):
        ours, paper = make_config(7, latent), paper_config(7, latent)
        diff = {k for k, v in ours.to_dict().items() if paper.to_dict()[k] != v}
        assert diff == set(PAPER_DIFFERENCES) == {"restore_best"}
        assert paper.restore_best == "off" and ours.restore_best == "params+state"
        assert paper.val_every == 1  # validation after every iteration
        assert paper.lr_x == pytest.approx(12 / 7) and paper.gamma == 1e-3
    assert paper_config(7, False).lr_xi_c == pytest.approx(0.1 / 7)
    assert paper_config(7, True).lr_xi_c == pytest.approx(1e-3 / 7)
    assert paper_config(7, False, restore_best="params").restore_best == "params"


@pytest.mark.parametrize(
    "bad",
    [{"foo": 1}, {"n_train": 0}, {"batch_size": 1.5}, {"lr_xi": 0.0}, {"decay": 1.5},
     {"gamma": -1.0}, {"epochs_phase1": 0, "epochs_phase2": 0}, {"space": "sigma"},
     {"lpips_net": "squeeze"}, {"patience": -1}],
)
def test_invalid_options(bad):
    with pytest.raises(ValueError):
        make_config(4, latent=False, **bad)


def test_plateau_decay_after_patience_and_floor():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    frozen = torch.optim.SGD([p], lr=1.0)
    plateau = PlateauDecay(patience=5, factor=0.8)
    groups = [(opt, 0.7, True), (frozen, 0.0, False)]
    assert not plateau.step(1.0, groups)  # new best
    decays = [plateau.step(1.0, groups) for _ in range(5)]
    assert decays == [False] * 4 + [True]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.8)
    assert frozen.param_groups[0]["lr"] == 1.0  # inactive group untouched
    for _ in range(5):
        plateau.step(2.0, groups)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.7)  # floor
    assert not plateau.step(0.5, groups) and plateau.bad == 0
    state = plateau.state_dict()
    other = PlateauDecay(5, 0.8)
    other.load_state_dict(state)
    assert other.state_dict() == state


def test_epoch_permutation_is_deterministic_per_epoch():
    a = epoch_permutation(0, 3, 50)
    assert torch.equal(a, epoch_permutation(0, 3, 50))
    assert sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, epoch_permutation(0, 4, 50))
    assert not torch.equal(a, epoch_permutation(1, 3, 50))
