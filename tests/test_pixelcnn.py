"""Gated PixelCNN: causality, no blind spot, an exact normalised discrete likelihood, sampling;
with the 256-way softmax and with the discretized logistic mixture output."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from ood_lib.models.pixelcnn import (
    SIZES,
    PixelCNN,
    PixelCNNConfig,
    logistic_mixture,
    logistic_mixture_levels_log_p,
    logistic_mixture_log_p,
    mixture_outputs,
)

TINY = dict(hidden=12, layers=3, kernel=3, first_kernel=3)
# The config keys of today's (softmax) models, hashed into the keys of shipped checkpoints.
SOFTMAX_KEYS = {"in_channels", "image_size", "hidden", "layers", "kernel", "first_kernel"}


def _model(in_channels: int = 3, image_size: int = 6, n_bits: int | None = None, **kw) -> PixelCNN:
    torch.manual_seed(0)
    config = PixelCNNConfig(in_channels=in_channels, image_size=image_size, **{**TINY, **kw})
    return PixelCNN(config, n_bits=n_bits)


def _perturb(model: PixelCNN, scale: float = 0.2, seed: int = 0) -> PixelCNN:
    """Move every parameter off its initial value, so that gradients are generic."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def _images(model: PixelCNN, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.n_levels, (n, *model.input_shape), generator=g).to(torch.uint8)


def _influence(model: PixelCNN, draws: int = 16) -> torch.Tensor:
    """``dep[c, i, j, c2, i2, j2]``: does the output at subpixel (c, i, j) (its logits, through a
    random projection) have a non-zero gradient w.r.t. the input at (c2, i2, j2) for one of
    ``draws`` random images? (One image alone can switch a few paths off at the ReLUs of the
    head.) One backward pass: batch element (d, b) holds image d and projects only output b."""
    c, s = model.config.in_channels, model.config.image_size
    n = c * s * s
    g = torch.Generator().manual_seed(1)
    x = torch.rand(draws, 1, c, s, s, generator=g) * 2 - 1
    x = x.expand(draws, n, c, s, s).reshape(draws * n, c, s, s).requires_grad_()
    logits = model.logits_from_float(x)  # [draws * n, C, K, S, S]
    w = torch.randn(logits.shape[2], generator=g)
    select = torch.eye(n).view(n, c, s, s).repeat(draws, 1, 1, 1)  # output b <-> (c, i, j)
    (grad,) = torch.autograd.grad((logits * w[:, None, None] * select[:, :, None]).sum(), x)
    return (grad.abs().view(draws, n, -1).sum(0) > 0).view(c, s, s, c, s, s)


def _relation(model: PixelCNN, rule) -> torch.Tensor:
    """``rel[c, i, j, c2, i2, j2] = rule((c, i, j), (c2, i2, j2))`` over all subpixel pairs."""
    c, s = model.config.in_channels, model.config.image_size
    idx = list(itertools.product(range(c), range(s), range(s)))
    rel = torch.tensor([[rule(a, b) for b in idx] for a in idx])
    return rel.view(c, s, s, c, s, s)


CAUSAL_CONFIGS = [
    dict(in_channels=3, image_size=6),
    dict(in_channels=1, image_size=6),
    dict(in_channels=3, image_size=8, first_kernel=5, layers=2),
    # the mixture's "logits" are its conditionals over all levels: 8 of them keep it small
    dict(in_channels=3, image_size=6, mixtures=2, n_bits=3),
    dict(in_channels=1, image_size=6, mixtures=2, n_bits=3),
    dict(in_channels=3, image_size=8, first_kernel=5, layers=2, hidden=10, mixtures=3, n_bits=3),
]


@pytest.mark.slow
@pytest.mark.parametrize("kw", CAUSAL_CONFIGS)
def test_causal_and_no_blind_spot(kw: dict) -> None:
    model = _perturb(_model(**kw))
    dep = _influence(model)
    r = model.receptive_rows

    def before(a, b):  # raster order of pixels, then R < G < B within a pixel
        (c, i, j), (c2, i2, j2) = a, b
        return (i2, j2, c2) < (i, j, c)

    def seen(a, b):  # the rectangle above (upper right included), the row to the left, colours
        (c, i, j), (c2, i2, j2) = a, b
        above = i - r <= i2 < i and abs(j2 - j) <= r - 1
        left = i2 == i and j - (r - 1) <= j2 < j
        return above or left or (i2, j2) == (i, j) and c2 < c

    causal, required = _relation(model, before), _relation(model, seen)
    assert not (dep & ~causal).any(), "an output depends on its own or a later subpixel"
    assert (dep | ~required).all(), "an earlier subpixel in the receptive field has no influence"
    # receptive_rows is exact: nothing more than r rows above is seen (sample crops to it)
    rows_apart = _relation(model, lambda a, b: a[1] - b[1] > r)
    assert not (dep & rows_apart).any()


def test_no_blind_spot_upper_right() -> None:
    """A stack of masked k x k convolutions never sees the pixels up and to the right of the
    diagonal it grows along; the vertical stack does."""
    model = _perturb(_model(in_channels=3, image_size=6))
    dep = _influence(model)
    r = model.receptive_rows  # 4 here
    i, j = r, 0
    upper_right = dep[0, i, j][:, :i, j + 1 : j + r]  # rows above, columns to the right
    assert upper_right.shape == (3, r, r - 1) and upper_right.all()


@pytest.mark.parametrize("mixtures", [0, 3])
def test_sample_crop_is_exact(mixtures: int) -> None:
    """Row i's logits from rows i - receptive_rows .. i equal those of the whole image."""
    model = _perturb(_model(in_channels=3, image_size=8, first_kernel=5, layers=2,
                            mixtures=mixtures))
    x = model.scale(_images(model, 2))
    full = model.logits_from_float(x)
    r = model.receptive_rows
    for i in range(r + 1, 8):
        crop = model.logits_from_float(x[:, :, i - r : i + 1])
        torch.testing.assert_close(crop[..., -1, :], full[..., i, :], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mixtures", [0, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_distributions_normalised_and_log_px_exact(in_channels: int, mixtures: int) -> None:
    """The training path (for a mixture: the chain rule on the joints of the pixel's first
    colours, at the true levels only) against the conditionals over all 256 levels."""
    model = _perturb(_model(in_channels=in_channels, mixtures=mixtures))
    x = _images(model, 3)
    logits = model.logits(x).double()
    assert logits.shape == (3, in_channels, 256, 6, 6)
    total = torch.exp(F.log_softmax(logits, dim=2)).sum(2)
    torch.testing.assert_close(total, torch.ones_like(total))
    if mixtures:  # the mixture's logits are log-probabilities already
        torch.testing.assert_close(torch.logsumexp(logits, 2), torch.zeros_like(total),
                                   rtol=0, atol=1e-5)
    # log P(x) = sum over subpixels of logit[true level] - logsumexp(logits), computed apart
    picked = logits.gather(2, x.long()[:, :, None]).squeeze(2)  # [B, C, H, W]
    log_p = picked - torch.logsumexp(logits, dim=2)
    parts = model.log_prob_parts(x)
    close = dict(rtol=1e-6, atol=1e-4)  # float32 sums of ~100 terms of a few nats
    torch.testing.assert_close(parts["log_px"].double(), log_p.sum((1, 2, 3)), **close)
    for k in range(in_channels):
        torch.testing.assert_close(parts[f"log_px_c{k}"].double(), log_p[:, k].sum((1, 2)), **close)


@pytest.mark.parametrize("mixtures", [0, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_parts_add_up(in_channels: int, mixtures: int) -> None:
    model = _perturb(_model(in_channels=in_channels, mixtures=mixtures))
    assert model.additive_parts == tuple(f"log_px_c{k}" for k in range(in_channels))
    parts = model.log_prob_parts(_images(model, 4))
    assert set(parts) == {"log_px", *model.additive_parts}
    total = sum(parts[name] for name in model.additive_parts)
    torch.testing.assert_close(total, parts["log_px"])


@pytest.mark.parametrize("in_channels, image_size, mixtures", [(1, 2, 0), (1, 2, 3), (3, 1, 3)])
def test_probabilities_of_all_images_sum_to_one(
    in_channels: int, image_size: int, mixtures: int
) -> None:
    """The chain rule is a proper distribution: with 2 bits, the 4**4 images of 2x2 grey pixels
    (or the 4**3 of one RGB pixel: the mixture's colour coefficients) add up to 1 (a leak
    through the masks would break it)."""
    model = _perturb(_model(in_channels=in_channels, image_size=image_size, n_bits=2,
                            mixtures=mixtures), scale=0.5)
    d = math.prod(model.input_shape)
    levels = torch.tensor(list(itertools.product(range(4), repeat=d)), dtype=torch.uint8)
    log_px = model.log_prob_parts(levels.view(-1, *model.input_shape))["log_px"].double()
    torch.testing.assert_close(torch.logsumexp(log_px, 0).exp().item(), 1.0, rtol=0, atol=1e-5)


def _naive_mixture_conditionals(out: torch.Tensor, x: torch.Tensor, n_levels: int):
    """``P(x_c = l | x_{<c})`` ``[N, C, n_levels]`` of one pixel per row, written out from the
    raw head output ``out`` ``[N, K (1 + 2C + C(C-1)/2)]`` and the levels ``x`` ``[N, C]``
    (float64): sigmoid differences on the [-1, 1] scale, bins of half-width 1 / (n - 1); and
    ``[N, C]`` where the components' weights did not underflow (the values are exact there)."""
    n, c = x.shape
    k = out.shape[1] // mixture_outputs(c, 1)
    out = out.view(n, -1, k)
    pi = torch.softmax(out[:, 0], dim=1)  # [N, K]
    u = x / (n_levels - 1) * 2 - 1
    mean, log_s = out[:, 1 : 1 + c].clone(), out[:, 1 + c : 1 + 2 * c].clamp(min=-7.0)
    coeff = torch.tanh(out[:, 1 + 2 * c :])
    if c == 3:  # mean_G += c1 u_R, mean_B += c2 u_R + c3 u_G
        mean[:, 1] += coeff[:, 0] * u[:, 0, None]
        mean[:, 2] += coeff[:, 1] * u[:, 0, None] + coeff[:, 2] * u[:, 1, None]
    levels = torch.arange(n_levels, dtype=x.dtype)
    centre = levels / (n_levels - 1) * 2 - 1  # [L]
    s = log_s.exp()[..., None]  # [N, C, K, 1]
    upper = (centre + 1 / (n_levels - 1) - mean[..., None]) / s  # [N, C, K, L]
    lower = (centre - 1 / (n_levels - 1) - mean[..., None]) / s
    upper[..., -1], lower[..., 0] = math.inf, -math.inf  # the edge bins take the tails
    # DL(l | component k) of each colour: sigma(upper) - sigma(lower), or, above the mean, the
    # same as sigma(-lower) - sigma(-upper) (two numbers near 1 would cancel)
    dl = torch.where(lower > 0, torch.sigmoid(-lower) - torch.sigmoid(-upper),
                     torch.sigmoid(upper) - torch.sigmoid(lower))
    # weights of the components given the pixel's earlier colours (at their levels x)
    at_x = dl.gather(3, x.long()[:, :, None, None].expand(n, c, k, 1))[..., 0]  # [N, C, K]
    before = torch.cumprod(torch.cat([torch.ones_like(at_x[:, :1]), at_x[:, :-1]], 1), 1)
    w = pi[:, None] * before  # [N, C, K]; all of them underflow in extreme contexts
    return ((w / w.sum(2, keepdim=True))[..., None] * dl).sum(2), w.sum(2) > 1e-250


@pytest.mark.parametrize("in_channels", [1, 3])
def test_mixture_probabilities_of_all_levels_sum_to_one(in_channels: int) -> None:
    """For one subpixel with random mixture parameters (float64; means beyond the level range,
    scales from below the floor to thousands of levels), the probabilities of the 256 levels
    add up to 1, equal sigmoid differences written out apart, and the training path (the
    chain rule at the true levels) picks the same values."""
    g = torch.Generator().manual_seed(in_channels)
    n, k, c = 200, 4, in_channels
    out = torch.randn(n, mixture_outputs(c, k), generator=g, dtype=torch.float64) * 2.0
    log_scales = slice(k * (1 + c), k * (1 + 2 * c))
    out[:, log_scales] = torch.rand(n, k * c, generator=g, dtype=torch.float64) * 12 - 9
    x = torch.randint(0, 256, (n, c), generator=g).double()
    x[:8] = torch.tensor([0.0, 255.0])[torch.arange(8) % 2, None]  # edge levels as context
    u = (x / 255 * 2 - 1)[..., None, None]  # [N, C, 1, 1]
    mixture = logistic_mixture(out[..., None, None], u, 256)
    log_p = logistic_mixture_levels_log_p(u, *mixture, 256)[..., 0, 0]  # [N, C, 256]
    assert log_p.dtype == torch.float64 and log_p.shape == (n, c, 256)
    torch.testing.assert_close(torch.logsumexp(log_p, 2), torch.zeros(n, c, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    naive, defined = _naive_mixture_conditionals(out, x, 256)
    assert defined[:, 0].all() and defined.float().mean() > 0.8
    torch.testing.assert_close(log_p.exp()[defined], naive[defined], rtol=1e-9, atol=1e-12)
    chain = logistic_mixture_log_p(x[..., None, None], *mixture, 256)[..., 0, 0]  # [N, C]
    picked = log_p.gather(2, x.long()[..., None])[..., 0]
    torch.testing.assert_close(chain, picked, rtol=1e-10, atol=1e-10)


def test_discrete_uniform_is_n_bits() -> None:
    """Zero logits: every subpixel is uniform over 256 levels, log P(x) = -D ln 256, 8 bits/dim."""
    model = _model()
    assert model.likelihood == "discrete"
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
    x = _images(model, 3)
    assert (model.logits(x) == 0).all()
    log_px = model.log_prob_parts(x)["log_px"]
    n_dims = x[0].numel()
    torch.testing.assert_close(log_px, torch.full((3,), -n_dims * math.log(256)))
    bpd = model.bits_per_dim(log_px, n_dims)
    torch.testing.assert_close(bpd, torch.full((3,), 8.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(model.train_loss(x), torch.tensor(8.0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mixtures", [0, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_sample(in_channels: int, mixtures: int) -> None:
    model = _perturb(_model(in_channels=in_channels, image_size=4, mixtures=mixtures)).eval()
    a = model.sample(3, torch.Generator().manual_seed(5))
    b = model.sample(3, torch.Generator().manual_seed(5))
    c = model.sample(3, torch.Generator().manual_seed(6))
    assert a.dtype == torch.uint8 and a.shape == (3, in_channels, 4, 4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(model.log_prob_parts(a)["log_px"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("mixtures", [0, 4])
@pytest.mark.parametrize("in_channels, image_size", [(1, 2), (3, 1)])
def test_sample_follows_the_model(in_channels: int, image_size: int, mixtures: int) -> None:
    """Samples hit each image about P(x) of the time (all 4**D images of 2 bits and D = 4 or 3
    subpixels enumerated). The model is first fitted to constant images, so its subpixels
    depend strongly on each other and a sampler that read them in the wrong order (pixels, or
    colours within a pixel) would be far off."""
    model = _model(in_channels=in_channels, image_size=image_size, n_bits=2, hidden=24,
                   mixtures=mixtures)
    shape = model.input_shape
    d = math.prod(shape)
    flat = torch.arange(4, dtype=torch.uint8).repeat_interleave(16)  # 4 constant images x 16
    data = flat[:, None, None, None].expand(64, *shape).contiguous()
    optimizer = torch.optim.Adamax(model.parameters(), lr=2e-2)
    for _ in range(100):
        loss = model.train_loss(data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    levels = torch.tensor(list(itertools.product(range(4), repeat=d)), dtype=torch.uint8)
    p = model.log_prob_parts(levels.view(-1, *shape))["log_px"].exp()  # [4**d]
    constant = [sum(v * 4**k for k in range(d)) for v in range(4)]  # 00.., 11.., 22.., 33..
    assert p[constant].sum() > 0.8, "the fit did not learn the dependence"
    x = model.sample(20_000, torch.Generator().manual_seed(0)).view(-1, d).long()
    index = (x * 4 ** torch.arange(d - 1, -1, -1)).sum(1)  # same order as `levels`
    freq = torch.bincount(index, minlength=4**d) / len(index)
    assert 0.5 * (freq - p).abs().sum() < 0.03  # total variation


def test_clear_errors() -> None:
    model = _model(in_channels=3, image_size=6)
    x = _images(model, 2)
    with pytest.raises(ValueError, match="uint8"):
        model.log_prob_parts(x.float())
    with pytest.raises(ValueError, match="expects"):
        model.log_prob_parts(x[:, :2])
    with pytest.raises(ValueError, match="expects"):
        model.log_prob_parts(x[:, :, :5, :5])
    with pytest.raises(ValueError, match="expects"):
        model.log_prob_parts(x[0])
    small = _model(in_channels=3, image_size=6, n_bits=5)
    with pytest.raises(ValueError, match="levels"):
        small.log_prob_parts(torch.full((1, 3, 6, 6), 32, dtype=torch.uint8))
    small.n_bits = 8
    with pytest.raises(ValueError, match="n_bits"):
        small.log_prob_parts(torch.zeros(1, 3, 6, 6, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiple"):
        PixelCNNConfig(in_channels=3, hidden=16)
    with pytest.raises(ValueError, match="odd"):
        PixelCNNConfig(kernel=4)
    with pytest.raises(ValueError, match="n_bits"):
        PixelCNN(PixelCNNConfig(**TINY), n_bits=9)
    with pytest.raises(ValueError, match="mixtures"):
        PixelCNNConfig(mixtures=-1)
    PixelCNNConfig(in_channels=3, hidden=16, mixtures=5)  # one group: any width


def test_sizes_and_config() -> None:
    assert set(SIZES) == {(p, k) for p in ("smoke", "cpu", "paper") for k in ("grey", "rgb")}
    for size in SIZES.values():
        for channels, image_size in ((1, 28), (3, 32)):
            PixelCNNConfig(in_channels=channels, image_size=image_size, **size)
    config = PixelCNNConfig(in_channels=1, image_size=28, **SIZES[("cpu", "grey")])
    assert PixelCNNConfig(**config.to_dict()) == config


def test_default_config_dicts_are_unchanged() -> None:
    """The output option is left out of to_dict at its default (the softmax), so the dicts, and
    the checkpoint keys hashed from them, of every existing model stay as they were."""
    assert set(PixelCNNConfig().to_dict()) == SOFTMAX_KEYS
    for size in SIZES.values():
        for channels, image_size in ((1, 28), (3, 32)):
            d = PixelCNNConfig(in_channels=channels, image_size=image_size, **size).to_dict()
            assert d == dict(in_channels=channels, image_size=image_size,
                             **{k: v for k, v in size.items() if k != "mixtures" or v})
    assert PixelCNNConfig(in_channels=1, image_size=28, **SIZES[("cpu", "grey")]).to_dict() == dict(
        in_channels=1, image_size=28, hidden=30, layers=4, kernel=3, first_kernel=7)
    assert SIZES[("cpu", "rgb")] == dict(hidden=32, layers=6, kernel=3, first_kernel=7, mixtures=5)
    mixture = PixelCNNConfig(hidden=32, layers=5, mixtures=5)
    assert mixture.to_dict() == dict(in_channels=3, image_size=32, hidden=32, layers=5, kernel=3,
                                     first_kernel=7, mixtures=5)
    assert PixelCNNConfig(**mixture.to_dict()) == mixture


@pytest.mark.parametrize("in_channels, outputs", [(1, 3 * 5), (3, 10 * 5)])
def test_mixture_head_size(in_channels: int, outputs: int) -> None:
    """K (1 + 2C + C(C-1)/2) outputs per pixel: 100 for RGB with K = 10 against the softmax's 768."""
    assert mixture_outputs(in_channels, 5) == outputs
    assert mixture_outputs(3, 10) == 100
    model = _model(in_channels=in_channels, mixtures=5)
    assert model.head[-1].out_channels == outputs


@pytest.mark.parametrize("mixtures", [0, 3])
def test_deterministic_and_training_lowers_loss(mixtures: int) -> None:
    torch.set_num_threads(1)
    model = _model(in_channels=3, image_size=6, mixtures=mixtures)
    x = _images(model, 8)
    torch.testing.assert_close(model.log_prob_parts(x), model.log_prob_parts(x), rtol=0, atol=0)
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = model.train_loss(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.01, losses


def test_gate_is_tanh_times_sigmoid() -> None:
    from ood_lib.models.pixelcnn import gate

    x = torch.cat([torch.linspace(-30, 30, 60_001), torch.tensor([0.0, 1e-8, -1e-8, 1e3, -1e3])])
    x = x.view(1, 2, -1)  # the halves: a = x[:, 0], b = x[:, 1]
    x = torch.cat([x, x.flip(2)], 1).view(1, 4, 1, -1)
    a, b = x.chunk(2, dim=1)
    torch.testing.assert_close(gate(x), torch.tanh(a) * torch.sigmoid(b), rtol=1e-6, atol=2e-7)


@pytest.mark.parametrize("mixtures", [0, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_fast_scoring_equals_the_reference_computation(
        in_channels: int, mixtures: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """log_prob_parts (channels-last head, softmax over contiguous levels, tanh through the
    sigmoid, fast softplus) and ``evaluate`` in batches of ``eval_batch_size`` against the
    previous computation: torch's tanh and softplus, an NCHW log-softmax over the levels,
    in one batch of all the images."""
    from ood_lib.models import pixelcnn as pixelcnn_module
    from ood_lib.models import vae as vae_module
    from ood_lib.models.base import evaluate

    model = _perturb(_model(in_channels=in_channels, image_size=5, mixtures=mixtures)).eval()
    x = _images(model, 40)
    fast = evaluate(model, x)
    assert model.eval_batch_size < len(x)  # several batches
    with torch.no_grad(), monkeypatch.context() as m:
        m.setattr(pixelcnn_module, "gate",
                  lambda h: torch.tanh(h.chunk(2, 1)[0]) * torch.sigmoid(h.chunk(2, 1)[1]))
        m.setattr(vae_module, "softplus", F.softplus)
        m.setattr(pixelcnn_module, "discretized_logistic_log_p",
                  vae_module.discretized_logistic_log_p)
        u = model.scale(x)
        if mixtures:
            mixture = logistic_mixture(model.head(model.features(u)), u, model.n_levels)
            log_p = logistic_mixture_log_p(x.float(), *mixture, model.n_levels)
        else:
            log_p = F.log_softmax(model.logits_from_float(u), dim=2)
            log_p = log_p.gather(2, x.long().unsqueeze(2)).squeeze(2)
    close = dict(rtol=1e-6, atol=1e-4)  # float32 sums of 25 to 75 terms of a few nats
    torch.testing.assert_close(torch.from_numpy(fast["log_px"]), log_p.sum((1, 2, 3)).double(),
                               **close)
    for k in range(in_channels):
        torch.testing.assert_close(torch.from_numpy(fast[f"log_px_c{k}"]),
                                   log_p[:, k].sum((1, 2)).double(), **close)


def test_predictive_entropy_is_the_mean_entropy_of_the_conditionals() -> None:
    """The softmax model's ``predictive_entropy`` is -sum_l P(l) log P(l) per subpixel from the
    full logits, averaged over subpixels; with a zero head every conditional is uniform
    (log 2^n nats); the mixture model's scores leave it out, and the log-likelihood parts are
    those of :meth:`log_prob_parts` either way."""
    model = _perturb(_model(in_channels=3, image_size=5)).eval()
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    with torch.no_grad():
        log_p = model.logits(x).log_softmax(2)  # [B, C, 2^n, H, W]
        expected = -(log_p.exp() * log_p).sum(2).mean((1, 2, 3))
        scored = model.score_parts(x)
        torch.testing.assert_close(scored["predictive_entropy"], expected, rtol=1e-5, atol=1e-5)
        assert {k: v for k, v in scored.items() if k != "predictive_entropy"}.keys() == \
            model.log_prob_parts(x).keys()
        for p in model.head.parameters():
            p.zero_()
        torch.testing.assert_close(model.score_parts(x)["predictive_entropy"],
                                   torch.full((4,), math.log(256.0)))
        mixture = _model(in_channels=3, image_size=5, mixtures=2).eval()
        assert "predictive_entropy" not in mixture.score_parts(x)
