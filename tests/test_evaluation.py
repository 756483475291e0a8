"""Evaluation: Frechet distance vs pytorch-fid, extractors, stats files, sampling, grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from ld3_core import evaluation as ev
from ld3_core.data import digits_split, load_digits
from ld3_core.heuristics import discretize
from ld3_core.models import load


def _stats(rng: np.random.Generator, n: int, d: int, shift: float = 0.0):
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + shift
    return ev.feature_stats(a)


# -- Frechet distance -------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pytorch-fid passes disp= to scipy
@pytest.mark.parametrize("d", [2, 8, 64])
def test_fd_matches_pytorch_fid(d):
    rng = np.random.default_rng(d)
    m1, s1 = _stats(rng, 4 * d + 10, d)
    m2, s2 = _stats(rng, 4 * d + 10, d, shift=0.5)
    ours = ev.frechet_distance(m1, s1, m2, s2)
    ref = float(calculate_frechet_distance(m1, s1, m2, s2))
    assert ours == pytest.approx(ref, rel=1e-6)
    # Symmetric, positive, zero on identical statistics.
    assert ev.frechet_distance(m2, s2, m1, s1) == pytest.approx(ours, rel=1e-9)
    assert ours > 0
    assert ev.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9 * np.trace(s1))


def test_fd_singular_covariances_closed_form():
    # Commuting (diagonal) covariances with zero variances: FD = |dmu|^2 + sum (sqrt a - sqrt b)^2.
    a = np.array([0.0, 1.0, 4.0, 0.0, 2.0])
    b = np.array([0.0, 0.25, 4.0, 9.0, 0.0])
    mu1, mu2 = np.zeros(5), np.arange(5.0)
    expected = float(mu2 @ mu2 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    got = ev.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-12)
    # Fewer samples than dimensions: rank-deficient covariances still give a finite FD >= 0.
    rng = np.random.default_rng(0)
    m1, s1 = ev.feature_stats(rng.normal(size=(5, 30)))
    m2, s2 = ev.feature_stats(rng.normal(size=(6, 30)))
    fd = ev.frechet_distance(m1, s1, m2, s2)
    assert np.isfinite(fd) and fd > 0


def test_fd_bad_input():
    with pytest.raises(ValueError):
        ev.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        ev.frechet_distance(np.zeros(2), np.eye(2), np.array([0.0, np.nan]), np.eye(2))
    with pytest.raises(ValueError):
        ev.feature_stats(np.zeros((1, 3)))


def test_stats_npz_round_trip_and_pytorch_fid_format(tmp_path):
    rng = np.random.default_rng(1)
    mu, sigma = _stats(rng, 50, 7)
    path = ev.save_stats(tmp_path / "ref.npz", mu, sigma)
    with np.load(path) as raw:  # what pytorch-fid reads
        assert set(raw.files) == {"mu", "sigma"}
    mu2, sigma2 = ev.load_stats(path)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(ValueError, match="mu"):
        ev.load_stats(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="not found"):
        ev.load_stats(tmp_path / "missing.npz")


# -- extractors ---------------------------------------------------------------------------------
def test_digits_extractor_accuracy_and_features():
    ext = ev.get_extractor("digits")
    x, y = digits_split("holdout")
    feats = ext(x)
    assert ext.name == "digits" and feats.shape == (len(y), 64) and feats.dtype == torch.float64
    logits = ext.model(x)
    acc = float((logits.argmax(1) == y).float().mean())
    assert acc > 0.97
    # Real holdout digits are much closer to the training digits than noise or blank images.
    train, _ = digits_split("train")
    ref = ev.feature_stats(ext(train))
    fd_real = ev.frechet_distance(*ev.feature_stats(feats), *ref)
    noise = torch.rand(len(y), 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fd_noise = ev.frechet_distance(*ev.feature_stats(ext(noise)), *ref)
    assert fd_real < 0.1 * fd_noise
    with pytest.raises(ValueError, match="8x8"):
        ext(torch.zeros(2, 3, 32, 32))


def test_pixels_extractor_and_unknown_name():
    ext = ev.get_extractor("pixels")
    x = torch.linspace(-2, 2, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    f = ext(x)
    assert f.shape == (2, 48) and f.dtype == torch.float64
    assert float(f.max()) == 1.0 and float(f.min()) == -1.0  # clipped to the image range
    with pytest.raises(ValueError, match="digits"):
        ev.get_extractor("clip")


def test_inception_missing_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(ev.INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(ev.WeightsNotFoundError, match=ev.INCEPTION_WEIGHTS_ENV) as info:
        ev.get_extractor("inception")
    assert "torch hub cache" in str(info.value)
    monkeypatch.setenv(ev.INCEPTION_WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ev.get_extractor("inception")
    with pytest.raises(ev.WeightsNotFoundError, match="weights argument"):
        ev.get_extractor("inception", weights=tmp_path / "other.pth")


def test_inception_rejects_a_file_of_other_weights(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="Inception"):
        ev.get_extractor("inception", weights=path)


@pytest.mark.slow
def test_inception_loads_local_weights(tmp_path):
    # A file in pytorch-fid's layout (random values made here; real ones cannot be downloaded).
    import pytorch_fid.inception as fi
    from torchvision.models.inception import inception_v3

    net = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    net.Mixed_5b = fi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fi.FIDInceptionE_1(1280)
    net.Mixed_7c = fi.FIDInceptionE_2(2048)
    path = tmp_path / ev.extractors.INCEPTION_WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    ext = ev.get_extractor("inception", weights=path)
    assert ext.weights_path == path
    with torch.no_grad():
        expected = ext.model(torch.zeros(1, 3, 8, 8) + 0.5)[0].flatten(1)
    feats = ext(torch.zeros(2, 1, 8, 8))  # gray -> 3 channels, [-1, 1] -> [0, 1]
    assert feats.shape == (2, 2048) and feats.dtype == torch.float64
    torch.testing.assert_close(feats[0].float(), expected[0], rtol=1e-5, atol=1e-6)


# -- sampling and scoring -----------------------------------------------------------------------
def test_sample_is_seeded_and_independent_of_batch_size():
    model = load("builtin:gmm-digits")
    steps = discretize("logsnr", 4, model.schedule)
    a = ev.sample(model, steps, "dpm++", 2, 12, seed=3, batch_size=5)
    b = ev.sample(model, steps, "dpm++", 2, 12, seed=3, batch_size=12)
    c = ev.sample(model, steps, "dpm++", 2, 12, seed=4, batch_size=12)
    assert a.shape == (12, 1, 8, 8) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)  # float32 GEMM blocking differs
    a64 = ev.sample(model, steps, "dpm++", 2, 12, seed=3, batch_size=5, dtype=torch.float64)
    b64 = ev.sample(model, steps, "dpm++", 2, 12, seed=3, batch_size=12, dtype=torch.float64)
    torch.testing.assert_close(a64, b64, rtol=0, atol=1e-12)
    assert float((a - c).abs().max()) > 0.1


def test_sample_conditional_and_decode():
    model = load("builtin:gmm-digits-cond", guidance_scale=2.0)
    steps = discretize("logsnr", 3, model.schedule)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    x = ev.sample(model, steps, "unipc", 2, 6, cond={"class_labels": labels}, batch_size=4)
    y = ev.sample(model, steps, "unipc", 2, 6, cond={"class_labels": labels.flip(0)})
    assert x.shape == (6, 1, 8, 8) and float((x - y).abs().max()) > 0.1
    model.decode = lambda z: z[:, :, :4, :4] * 0.5
    z = ev.sample(model, steps, "unipc", 2, 6, cond={"class_labels": labels})
    assert z.shape == (6, 1, 4, 4)
    torch.testing.assert_close(z, x[:, :, :4, :4] * 0.5, rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        ev.sample(model, steps, "unipc", 2, 0)


def test_score_samples_with_images_npz_and_labels(tmp_path):
    real, _ = load_digits()
    ext = ev.get_extractor("digits")
    gen = torch.Generator().manual_seed(0)
    samples = real[torch.randperm(len(real), generator=gen)[:300]]
    blurred = torch.nn.functional.avg_pool2d(samples, 3, 1, 1)
    score = ev.score_samples(samples, real, "digits")
    assert score["extractor"] == "digits" and score["n"] == 300 and score["n_reference"] == 1797
    assert score["fd"] < ev.score_samples(blurred, real, ext)["fd"]
    path = ev.save_stats(tmp_path / "digits.npz", *ev.feature_stats(ext(real)))
    from_npz = ev.score_samples(samples, path, ext)
    assert from_npz["fd"] == pytest.approx(score["fd"], rel=1e-9)
    assert ev.score_samples(samples, real, "pixels")["extractor"] == "pixels"
    small = ev.save_stats(tmp_path / "d10.npz", np.zeros(10), np.eye(10))
    with pytest.raises(ValueError, match="dimension"):
        ev.score_samples(samples, small, ext)


def test_distance_to_teacher():
    a = torch.zeros(4, 1, 2, 2)
    b = torch.ones(4, 1, 2, 2)
    b[0] = 0.0
    d = ev.distance_to_teacher(a, b)
    assert d["n"] == 4 and d["l2"] == pytest.approx(0.75 * 2.0)
    assert d["rmse"] == pytest.approx(np.sqrt(0.75))
    with pytest.raises(ValueError):
        ev.distance_to_teacher(a, b[:3])


def test_default_extractor_and_grid(tmp_path):
    assert ev.default_extractor_for(load("builtin:gmm-digits")) == "digits"
    assert ev.default_extractor_for(load("builtin:unet-digits")) == "digits"

    class Other:
        sample_shape = (3, 32, 32)
        decode = None

    assert ev.default_extractor_for(Other()) == "inception"
    real, _ = load_digits()
    out = ev.save_grid({"real": real[:10], "noise": torch.randn(5, 3, 8, 8)}, tmp_path / "g.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        ev.save_grid({}, tmp_path / "empty.png")
