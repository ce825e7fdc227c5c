"""VAE: the importance-weighted bound against the ELBO, Jensen and exact quadrature; the
discretized logistic; batch-size invariance; input checks; training; with a global latent
vector and with a spatial latent map."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from ood_lib.models.vae import SIZES, VAE, ResBlock, VAEConfig, discretized_logistic_log_p

torch.set_num_threads(1)

# The config keys of today's (global-latent) models, hashed into the keys of shipped checkpoints.
GLOBAL_KEYS = {"in_channels", "image_size", "hidden", "latent", "k_eval", "seed_eval"}
# Tiny spatial latents for the 8x8 images of _vae: 3 x 4 x 4 and 3 x 2 x 2, with and without
# residual blocks.
LATENTS = [dict(), dict(latent_stride=2, res_blocks=1), dict(latent_stride=4, res_blocks=2),
           dict(latent_stride=4)]


def _vae(n_bits: int = 8, double: bool = True, **kw) -> VAE:
    torch.manual_seed(0)
    cfg = dict(in_channels=1, image_size=8, hidden=4, latent=3, k_eval=4)
    model = VAE(VAEConfig(**{**cfg, **kw}))
    model.n_bits = n_bits
    return model.double() if double else model


def _images(n: int, shape: tuple[int, int, int] = (1, 8, 8), n_bits: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**n_bits, (n, *shape), generator=g, dtype=torch.uint8)


def _perturb_res_blocks(model: VAE) -> None:
    """Move the zero-initialised last convolutions of the residual blocks off zero."""
    g = torch.Generator().manual_seed(7)
    for block in (m for m in model.modules() if isinstance(m, ResBlock)):
        weight = block.out.weight
        weight.data.copy_(0.3 * torch.randn(weight.shape, generator=g, dtype=weight.dtype))


def _naive_log_p_x_given_z(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, n: int):
    """log of sigma(upper) - sigma(lower) summed over subpixels, edges taking the tails."""
    s = torch.exp(log_scale)
    upper = torch.where(x == n - 1, 1.0, torch.sigmoid((x + 0.5 - mean) / s))
    lower = torch.where(x == 0, 0.0, torch.sigmoid((x - 0.5 - mean) / s))
    return torch.log(upper - lower).flatten(1).sum(1)


def _sharpen(model: VAE, factor: float) -> None:
    """Scale the first weighted layer of the decoder: p(x|z) then depends strongly on z."""
    first = next(m for m in model.decoder if isinstance(m, nn.Linear | nn.Conv2d))
    first.weight.data.mul_(factor)


@pytest.mark.parametrize("kw", LATENTS)
def test_k1_bound_is_the_single_sample_elbo(kw: dict) -> None:
    model, x = _vae(**kw), _images(5)
    _perturb_res_blocks(model)  # they start as the identity
    d = model.latent_dim
    eps = torch.randn(5, 1, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    parts = model.iw_bound(x, 1, eps)
    with torch.no_grad():
        mu, log_sigma = model.encode(x)
        z = mu + log_sigma.exp() * eps[:, 0]
        mean, log_scale = model.decode(z)
        recon = _naive_log_p_x_given_z(x.double(), mean, log_scale, 256)
        q = Normal(mu, log_sigma.exp()).log_prob(z).sum(1)
        p = Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(parts["recon"], recon, atol=1e-8, rtol=1e-10)
    torch.testing.assert_close(parts["neg_kl"], p - q, atol=1e-8, rtol=1e-10)
    torch.testing.assert_close(parts["log_px"], recon + p - q, atol=1e-8, rtol=1e-10)
    assert torch.all(parts["iw_gain"] == 0)


@pytest.mark.parametrize("kw", LATENTS)
def test_train_loss_is_the_negative_elbo_in_bits_per_dim(kw: dict) -> None:
    model, x = _vae(**kw), _images(4)
    loss = model.train_loss(x, torch.Generator().manual_seed(5))
    with torch.no_grad():
        mu, log_sigma = model.encode(x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5)).double()
        mean, log_scale = model.decode(mu + log_sigma.exp() * eps)
        recon = _naive_log_p_x_given_z(x.double(), mean, log_scale, 256)
        kl = torch.distributions.kl_divergence(Normal(mu, log_sigma.exp()), Normal(0.0, 1.0)).sum(1)
    expected = (-(recon - kl) / (64 * math.log(2))).mean()
    torch.testing.assert_close(loss.detach(), expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kw", [LATENTS[0], LATENTS[1]])
@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_doubling_k_never_lowers_the_bound_on_fixed_samples(k: int, kw: dict) -> None:
    # log((A + B) / 2) >= (log A + log B) / 2: L_2k(s_1..s_2k) >= mean of the two halves' L_k
    model, x = _vae(**kw), _images(6)
    shape = (6, 2 * k, model.latent_dim)
    eps = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    with torch.no_grad():
        l_2k = model.iw_bound(x, 2 * k, eps)["log_px"]
        halves = [model.iw_bound(x, k, e)["log_px"] for e in (eps[:, :k], eps[:, k:])]
    assert torch.all(l_2k >= (halves[0] + halves[1]) / 2 - 1e-9)
    assert torch.any(l_2k > (halves[0] + halves[1]) / 2 + 1e-3)  # not vacuous


def test_bound_approaches_the_exact_likelihood_from_quadrature() -> None:
    # A 1x4x4 image, 8 levels, latent dimension 1: log p(x) = log int p(x|z) p(z) dz on a grid.
    model = _vae(n_bits=3, image_size=4, latent=1)
    with torch.no_grad():
        model.decoder[0].weight.mul_(2.0)  # make p(x|z) depend strongly on z
    data = model.sample(256, torch.Generator().manual_seed(2))
    opt = torch.optim.Adam(model.encoder.parameters(), lr=1e-2)  # fit q(z|x) to this decoder
    g = torch.Generator().manual_seed(3)
    for _ in range(200):
        loss = model.train_loss(data, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = model.sample(16, torch.Generator().manual_seed(1))
    z = torch.linspace(-10, 10, 20_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        log_joint = torch.stack([model.log_p_x_given_z(img[None], z) for img in x])  # [16, grid]
        log_joint = log_joint + Normal(0.0, 1.0).log_prob(z[:, 0])
        exact = torch.logsumexp(log_joint, dim=1) + math.log(20 / 20_000)  # Riemann sum
        err = {k: model.iw_bound(x, k)["log_px"] - exact for k in (1, 10, 100, 1000)}
    assert err[1000].abs().mean() < 0.1
    assert err[1000].abs().mean() < err[100].abs().mean() < err[1].abs().mean() / 5
    for k, e in err.items():
        assert e.mean() < 0.05, f"L_{k} above log p(x) on average by {e.mean():.3f}"
    assert err[1].mean() < -1.0  # the ELBO's gap is real here


@pytest.mark.parametrize("kw", [LATENTS[0], LATENTS[2]])
@pytest.mark.parametrize("k", [1, 3, 17])
def test_parts_add_up_and_importance_weighting_only_gains(k: int, kw: dict) -> None:
    model, x = _vae(double=False, **kw), _images(5)
    _sharpen(model, 3.0)
    with torch.no_grad():
        parts = model.iw_bound(x, k)
        default = model.log_prob_parts(x)
    assert set(parts) == {"log_px", *VAE.additive_parts}
    total = sum(parts[name] for name in VAE.additive_parts)
    torch.testing.assert_close(total, parts["log_px"], atol=1e-9, rtol=1e-12)
    assert torch.all(parts["iw_gain"] >= -1e-9)
    assert parts["log_px"].shape == (5,) and parts["log_px"].dtype == torch.float64
    torch.testing.assert_close(default["log_px"], model.iw_bound(x, 4)["log_px"], atol=0, rtol=0)


@pytest.mark.parametrize("kw", [dict(), dict(latent_stride=4, res_blocks=1)])
def test_scores_do_not_depend_on_the_batch_and_are_deterministic(kw: dict) -> None:
    """Per-image seeded noise: batches of 1, 3 and 7 agree to float round-off (batched
    convolutions may sum in another order), and a rerun is bit-identical."""
    model = _vae(double=False, image_size=28, **kw)  # 28 is padded to 32 inside
    x = _images(7, (1, 28, 28))
    x[5] = x[1]  # the same image twice in a batch gets the same number
    with torch.no_grad():
        whole = model.log_prob_parts(x)["log_px"]
        for size in (1, 3):
            parts = [model.log_prob_parts(x[i : i + size])["log_px"] for i in range(0, 7, size)]
            torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-6, atol=1e-6)
        assert torch.equal(model.log_prob_parts(x)["log_px"], whole)
        assert whole[5] == whole[1] and len(set(whole.tolist())) == 6
        other_seed = VAE(VAEConfig(**{**model.config.to_dict(), "seed_eval": 1}))
        other_seed.load_state_dict(model.state_dict())
        assert not torch.equal(other_seed.log_prob_parts(x)["log_px"], whole)


@pytest.mark.parametrize("n_levels", [2, 8, 256])
def test_discretized_logistic_sums_to_one(n_levels: int) -> None:
    g = torch.Generator().manual_seed(n_levels)
    mean = (torch.rand(50, 1, generator=g, dtype=torch.float64) * 1.4 - 0.2) * n_levels
    log_scale = torch.rand(50, 1, generator=g, dtype=torch.float64) * 10 - 4  # 0.02 .. 400 levels
    levels = torch.arange(n_levels, dtype=torch.float64)[None]  # [1, n]
    log_p = discretized_logistic_log_p(levels, mean, log_scale, n_levels)  # [50, n]
    torch.testing.assert_close(torch.logsumexp(log_p, 1), torch.zeros(50, dtype=torch.float64),
                               atol=1e-9, rtol=0)
    # closed form of one interior bin: sigma((x + 1/2 - mu)/s) - sigma((x - 1/2 - mu)/s)
    if n_levels > 2:
        x, s = 1.0, log_scale.exp()
        expected = torch.sigmoid((x + 0.5 - mean) / s) - torch.sigmoid((x - 0.5 - mean) / s)
        torch.testing.assert_close(log_p[:, 1:2].exp(), expected, atol=1e-12, rtol=1e-9)


def test_discrete_likelihood_and_bits_per_dim() -> None:
    model, x = _vae(), _images(3)
    assert model.likelihood == "discrete"
    with torch.no_grad():
        log_px = model.log_prob_parts(x)["log_px"]
    bpd = model.bits_per_dim(log_px, x[0].numel())
    torch.testing.assert_close(bpd, -log_px / (64 * math.log(2)))
    assert torch.all((bpd > 0) & (bpd < 12))  # no +8 shift: a random model is near 8 bits/dim


def test_clear_errors() -> None:
    model = _vae(n_bits=3)
    good = _images(2, n_bits=3)
    bad_inputs = {
        "uint8": good.float(),
        "expects images": _images(2, (1, 6, 6)),
        "levels must be": good | 8,
    }
    for message, x in [*bad_inputs.items(), ("expects images", good[0]), ("uint8", good.long())]:
        for call in (model.log_prob_parts, model.train_loss, lambda v: model.iw_bound(v, 2)):
            with pytest.raises(ValueError, match=message):
                call(x)
    with pytest.raises(ValueError, match="eps must be"):
        model.iw_bound(good, 2, torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="k must be"):
        model.iw_bound(good, 0)
    for bad in (dict(latent=0), dict(image_size=2), dict(k_eval=0), dict(hidden=0)):
        with pytest.raises(ValueError):
            VAEConfig(**bad)
    for stride in (1, 3, 6, 64):  # a power of two from 2 up to the padded size, 32
        with pytest.raises(ValueError, match="latent_stride"):
            VAEConfig(image_size=28, latent_stride=stride)
    VAEConfig(image_size=28, latent_stride=32)
    for bad in (dict(res_blocks=1), dict(latent_stride=4, res_blocks=-1)):
        with pytest.raises(ValueError, match="res_blocks"):
            VAEConfig(**bad)
    spatial = _vae(latent_stride=2)
    with pytest.raises(ValueError, match=r"eps must be \[2, 2, 48\]"):
        spatial.iw_bound(_images(2), 2, torch.zeros(2, 2, 3))


@pytest.mark.parametrize("kw", [dict(), dict(latent_stride=4, res_blocks=1)])
def test_adam_steps_lower_the_training_loss(kw: dict) -> None:
    model = _vae(double=False, **SIZES[("smoke", "grey")], **kw)
    x = _images(16)
    x[:, :, 2:6, 2:6] = 200  # some shared structure to learn
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_now() -> float:
        with torch.no_grad():
            gens = [torch.Generator().manual_seed(i) for i in range(4)]
            return sum(model.train_loss(x, g).item() for g in gens)

    before = loss_now()
    for step in range(30):
        loss = model.train_loss(x, torch.Generator().manual_seed(100 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_now() < before - 0.1


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("shape", [(3, 32), (1, 28)])
def test_profiles_build_and_sample(profile: str, shape: tuple[int, int]) -> None:
    kind = "rgb" if shape[0] == 3 else "grey"
    cfg = VAEConfig(in_channels=shape[0], image_size=shape[1], **SIZES[(profile, kind)])
    assert VAEConfig(**cfg.to_dict()) == cfg
    model = VAE(cfg)
    g = torch.Generator().manual_seed(0)
    x = model.sample(2, g)
    assert x.shape == (2, shape[0], shape[1], shape[1]) and x.dtype == torch.uint8
    assert torch.equal(model.sample(2, torch.Generator().manual_seed(0)), x)
    if profile == "smoke":
        median = model.sample(2, torch.Generator().manual_seed(0), pixel_noise=False)
        z = torch.randn(2, cfg.latent, generator=torch.Generator().manual_seed(0))
        mean, _ = model.decode(z)
        assert torch.equal(median, mean.round().clamp(0, 255).to(torch.uint8))
        assert model.train_loss(x).isfinite()


def test_default_config_dicts_are_unchanged() -> None:
    """The spatial-latent fields are left out of to_dict at their defaults, so the dicts, and
    the checkpoint keys hashed from them, of every existing model stay as they were."""
    assert set(VAEConfig().to_dict()) == GLOBAL_KEYS
    for size in SIZES.values():
        for channels, image_size in ((1, 28), (3, 32)):
            d = VAEConfig(in_channels=channels, image_size=image_size, **size).to_dict()
            assert d == dict(in_channels=channels, image_size=image_size, seed_eval=0, **size)
    assert VAEConfig(in_channels=1, image_size=28, **SIZES[("cpu", "grey")]).to_dict() == dict(
        in_channels=1, image_size=28, hidden=64, latent=64, k_eval=16, seed_eval=0)
    assert SIZES[("cpu", "rgb")] == dict(hidden=32, latent=8, k_eval=16, latent_stride=2,
                                         res_blocks=2)
    for extra in (dict(latent_stride=4), dict(latent_stride=4, res_blocks=2)):
        spatial = VAEConfig(latent=16, **extra)
        assert spatial.to_dict() == {**VAEConfig(latent=16).to_dict(), **extra}
        assert VAEConfig(**spatial.to_dict()) == spatial


@pytest.mark.parametrize("shape, stride, grid", [((3, 32), 4, 8), ((1, 28), 4, 8), ((3, 32), 2, 16),
                                                 ((1, 28), 32, 1)])
def test_spatial_latent_shapes_and_samples(shape: tuple[int, int], stride: int, grid: int) -> None:
    """z is a [latent, S/s, S/s] map on the padded grid, flat to the bound and the sampler;
    samples are uint8 images of the input's own size; residual blocks start as the identity."""
    channels, size = shape
    cfg = VAEConfig(in_channels=channels, image_size=size, hidden=8, latent=5, k_eval=2,
                    latent_stride=stride, res_blocks=1)
    model = VAE(cfg)
    assert model.latent_shape == (5, grid, grid) and model.latent_dim == 5 * grid * grid
    x = _images(3, (channels, size, size))
    with torch.no_grad():
        mu, log_sigma = model.encode(x)
        mean, log_scale = model.decode(mu)
        parts = model.log_prob_parts(x)
    assert mu.shape == log_sigma.shape == (3, model.latent_dim)
    assert mean.shape == log_scale.shape == (3, channels, size, size)
    assert model.eps_for(x, 4).shape == (3, 4, model.latent_dim)
    assert set(parts) == {"log_px", *VAE.additive_parts}
    assert all(v.shape == (3,) and v.dtype == torch.float64 for v in parts.values())
    samples = model.sample(4, torch.Generator().manual_seed(0))
    assert samples.shape == (4, channels, size, size) and samples.dtype == torch.uint8
    assert torch.equal(model.sample(4, torch.Generator().manual_seed(0)), samples)
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 2 * int(math.log2(stride))  # one per resolution, encoder and decoder
    h = torch.randn(2, blocks[0].conv.in_channels, 4, 4)
    assert torch.equal(blocks[0](h), h)


def test_iw_curve_is_the_bound_on_nested_samples() -> None:
    """L_k of iw_curve equals iw_bound with the first k of the largest k's noise."""
    model = _vae(double=False, image_size=28)
    x = _images(3, (1, 28, 28))
    with torch.no_grad():
        curve = model.iw_curve(x, [1, 4, 16])
        eps = model.eps_for(x, 16)
        for j, k in enumerate((1, 4, 16)):
            expected = model.iw_bound(x, k, eps=eps[:, :k].contiguous())["log_px"]
            torch.testing.assert_close(curve[:, j], expected)
        torch.testing.assert_close(curve[:, 2], model.iw_bound(x, 16)["log_px"])


def test_iw_curve_keeps_no_autograd_graph() -> None:
    """A k = 1,000 curve decodes 1,000 samples per image: it must not hold their graph."""
    model = _vae(double=False, image_size=28)
    curve = model.iw_curve(_images(2, (1, 28, 28)), [1, 8])
    assert not curve.requires_grad


def test_fast_elementwise_functions_match_torch() -> None:
    """softplus and ELU on torch's vectorised exp and log agree with torch's own functions to
    float32 rounding (absolute), and ELU's gradient is ELU's."""
    from ood_lib.models import vae as vae_module

    x = torch.cat([torch.linspace(-40, 40, 100_001), torch.tensor([-1e4, -100.0, 0.0, 100.0,
                                                                   1e4, 1e-8, -1e-8])])
    torch.testing.assert_close(vae_module.softplus(x), torch.nn.functional.softplus(x),
                               rtol=1e-6, atol=1e-7)
    xg = x.clone().requires_grad_()
    ours = vae_module.elu(xg)
    (grad,) = torch.autograd.grad(ours.sum(), xg)
    xt = x.clone().requires_grad_()
    theirs = torch.nn.functional.elu(xt)
    (grad_t,) = torch.autograd.grad(theirs.sum(), xt)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, grad_t, rtol=1e-6, atol=1e-7)
    assert torch.equal(ours[x > 0], x[x > 0])  # exact where the ELU is the identity


@pytest.mark.parametrize("kw", LATENTS)
def test_fast_scoring_equals_the_reference_computation(kw: dict,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The scoring path (k samples decoded in one batched pass per chunk, broadcast against
    their image, channels-last decoder, softplus and ELU on exp and log) against the previous
    one: torch's softplus and ELU, an NCHW decoder and one decoder pass per (image, sample)."""
    import copy

    from ood_lib.models import vae as vae_module

    model = _vae(double=False, **kw)
    _perturb_res_blocks(model)
    x, k = _images(5), 6
    eps = model.eps_for(x, k)
    monkeypatch.setattr(vae_module, "DECODE_CHUNK", 12)  # several chunks of 2 images
    with torch.no_grad():
        fast = model.log_weights(x, eps)
        bound = model.iw_bound(x, k, eps)
        with monkeypatch.context() as m:
            m.setattr(vae_module, "elu", torch.nn.functional.elu)
            m.setattr(vae_module, "softplus", torch.nn.functional.softplus)
            ref = copy.deepcopy(model)
            ref.decoder.to(memory_format=torch.contiguous_format)
            mu, log_sigma = ref.encode(x)
            z = mu[:, None] + torch.exp(log_sigma)[:, None] * eps  # [B, k, d]
            log_ratio = (vae_module.std_normal_log_p(z) - vae_module.std_normal_log_p(eps)
                         + log_sigma[:, None]).sum(2)
            log_pxz = torch.stack([torch.cat([ref.log_p_x_given_z(x[b : b + 1], z[b, i : i + 1])
                                              for i in range(k)]) for b in range(len(x))])
    close = dict(rtol=1e-5, atol=1e-4)  # float32 sums of 64 terms of a few nats
    torch.testing.assert_close(fast[1], log_pxz.double(), **close)
    torch.testing.assert_close(fast[2], log_ratio.double(), **close)
    torch.testing.assert_close(fast[0], (log_pxz + log_ratio).double(), **close)
    expected = torch.logsumexp((log_pxz + log_ratio).double(), 1) - math.log(k)
    torch.testing.assert_close(bound["log_px"], expected, **close)
