"""Diffusion: scheduler, partial-label loss, overfitting one example, ensemble sampling, fusion."""

from __future__ import annotations

import math

import pytest
import torch

from SpineSegDiffLib.model.diffusion import (
    DiffusionConfig, diffusion_loss, fusion_weights, make_scheduler, sample_ensemble,
    segmentation_loss, set_sampling_timesteps,
)
from SpineSegDiffLib.core.errors import ModelError
from SpineSegDiffLib.model.network import TINY_FEATURES, DiffUNet, NetworkConfig


def tiny_model(seed: int = 0) -> DiffUNet:
    torch.manual_seed(seed)
    return DiffUNet(NetworkConfig(features=TINY_FEATURES, time_embed_dim=16)).eval()


def disk_example() -> tuple[torch.Tensor, torch.Tensor]:
    """A 32x32 image with a disk (canal channel) and a square (vertebra channel); no disc."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disk = ((yy - 16) ** 2 + (xx - 14) ** 2 <= 64).float()
    square = ((yy >= 4) & (yy < 10) & (xx >= 20) & (xx < 28)).float()
    mask = torch.stack([disk, square, torch.zeros_like(disk)])[None]
    image = (0.8 * disk + 0.4 * square)[None, None]
    return image, mask


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float(2 * (a * b).sum() / (a.sum() + b.sum()))


def test_scheduler_is_cosine_with_x0_prediction():
    config = DiffusionConfig()
    scheduler = make_scheduler(config)
    assert scheduler.prediction_type == "sample" and scheduler.clip_sample
    # Nichol & Dhariwal cosine: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2)
    t = torch.tensor([0.0, 250.0, 500.0, 900.0])
    f = lambda x: torch.cos((x / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    expected = f(t + 1) / f(torch.tensor(0.0))
    torch.testing.assert_close(scheduler.alphas_cumprod[t.long()], expected, atol=1e-4, rtol=1e-3)
    assert scheduler.alphas_cumprod[-1] < 1e-4  # the last step is (almost) pure noise


@pytest.mark.parametrize("steps", [1, 5, 10, 7, 50])
def test_sampling_timesteps_match_the_ddim_step_stride(steps):
    scheduler = make_scheduler(DiffusionConfig())
    timesteps = set_sampling_timesteps(scheduler, steps)
    assert len(timesteps) == steps and int(timesteps[0]) == 999
    # MONAI's step() moves from t to t - T // K: the next timestep we evaluate must be that one
    stride = 1000 // steps
    assert all(int(a) - int(b) == stride for a, b in zip(timesteps[:-1], timesteps[1:]))
    assert int(timesteps[-1]) >= 0


def test_fusion_weights_sum_to_one_and_the_last_step_weighs_most():
    for ts in (1, 3, 5, 10):
        weights = fusion_weights(ts)
        assert weights.shape == (ts,)
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
        assert int(weights.argmax()) == ts - 1
        assert torch.all(weights[1:] > weights[:-1])
        # consecutive weights differ by exp(a / Ts) with a = Ts / 2
        if ts > 1:
            torch.testing.assert_close(weights[1:] / weights[:-1], torch.full((ts - 1,), math.exp(0.5)))


def test_channel_weight_zero_removes_that_structure_from_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    target = (torch.rand(2, 3, 16, 16) > 0.5).float()
    weight = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])  # sample 0 has no vertebra labels
    segmentation_loss(logits, target, weight)["loss"].backward()
    assert torch.all(logits.grad[0, 1] == 0)
    assert logits.grad[0, 0].abs().sum() > 0 and logits.grad[1, 1].abs().sum() > 0

    # whatever the unannotated channel says, the loss is the same
    other_target = target.clone()
    other_target[0, 1] = 1 - other_target[0, 1]
    with torch.no_grad():
        first = segmentation_loss(logits, target, weight)
        second = segmentation_loss(logits, other_target, weight)
        unmasked = segmentation_loss(logits, other_target)
    for term in ("loss", "dice", "bce", "mse"):
        assert float(first[term]) == pytest.approx(float(second[term]))
    assert float(unmasked["loss"]) != pytest.approx(float(first["loss"]))


def test_loss_terms_are_zero_for_a_perfect_prediction():
    target = torch.zeros(1, 3, 16, 16)
    target[0, 0, 4:12, 4:12] = 1
    perfect = segmentation_loss((2 * target - 1) * 30, target)
    assert float(perfect["loss"]) < 1e-3
    assert float(segmentation_loss(-(2 * target - 1) * 30, target)["loss"]) > 1.0


def test_training_overfits_one_example_and_sampling_recovers_it():
    image, mask = disk_example()
    model = tiny_model().train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    fixed_t = torch.tensor([50, 300, 600, 950])

    def fixed_loss() -> float:
        with torch.no_grad():
            terms = diffusion_loss(model, image.repeat(4, 1, 1, 1), mask.repeat(4, 1, 1, 1),
                                   timesteps=fixed_t, generator=torch.Generator().manual_seed(9))
        return float(terms["loss"])

    before = fixed_loss()
    for _ in range(50):
        terms = diffusion_loss(model, image.repeat(4, 1, 1, 1), mask.repeat(4, 1, 1, 1), generator=generator)
        optimiser.zero_grad()
        terms["loss"].backward()
        optimiser.step()
    assert fixed_loss() < 0.6 * before

    result = sample_ensemble(model.eval(), image, samples=2, steps=5, fused_steps=3,
                             generator=torch.Generator().manual_seed(1))
    assert dice(result.mask[0, 0], mask[0, 0]) > 0.8
    assert dice(result.mask[0, 1], mask[0, 1]) > 0.8
    assert result.mask[0, 2].float().mean() < 0.1  # the absent structure stays (nearly) empty


def test_ensemble_shapes_progress_and_single_encoding():
    model = tiny_model()
    image = torch.rand(2, 1, 32, 32)
    encoder_calls, reports = [], []
    hook = model.image_encoder.register_forward_hook(lambda *_: encoder_calls.append(1))
    try:
        result = sample_ensemble(model, image, samples=5, steps=4, fused_steps=3, chunk=2,
                                 generator=torch.Generator().manual_seed(0),
                                 progress=lambda done, total: reports.append((done, total)))
    finally:
        hook.remove()
    assert len(encoder_calls) == 1  # encoded once for 5 samples x 4 steps
    assert reports == [(i, 12) for i in range(1, 13)]  # 3 chunks x 4 steps
    assert result.probabilities.shape == (2, 3, 32, 32)
    assert torch.all((result.probabilities >= 0) & (result.probabilities <= 1))
    assert torch.equal(result.mask, result.probabilities > 0.5)
    assert result.statistics.mean_probability.shape == (3, 2, 3, 32, 32)
    assert result.statistics.samples == 5
    # fused = weighted sum of the per-step sample means
    expected = (result.weights[:, None, None, None, None] * result.statistics.mean_probability).sum(0)
    torch.testing.assert_close(result.probabilities, expected)
    maps = result.uncertainty()
    assert maps.entropy.shape == (2, 3, 32, 32) and maps.combined.shape == (2, 32, 32)


def test_precomputed_features_are_used():
    model = tiny_model()
    image = torch.rand(1, 1, 32, 32)
    features = model.encode(image)
    calls = []
    hook = model.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        with_features = sample_ensemble(model, image, 2, 3, 2, features=features,
                                        generator=torch.Generator().manual_seed(3))
    finally:
        hook.remove()
    without = sample_ensemble(model, image, 2, 3, 2, generator=torch.Generator().manual_seed(3))
    assert calls == []
    torch.testing.assert_close(with_features.probabilities, without.probabilities)


def test_sampling_is_deterministic_and_independent_of_chunking():
    model = tiny_model()
    image = torch.rand(2, 1, 32, 32)

    def run(seed: int, chunk: int | None):
        return sample_ensemble(model, image, samples=3, steps=4, fused_steps=2, chunk=chunk,
                               generator=torch.Generator().manual_seed(seed))

    first, again = run(0, None), run(0, None)
    assert torch.equal(first.probabilities, again.probabilities)
    # each sample has its own noise draw, so sample-at-a-time gives the same ensemble
    torch.testing.assert_close(run(0, 1).statistics.mean_probability, first.statistics.mean_probability,
                               atol=1e-5, rtol=1e-5)
    assert (run(1, None).probabilities - first.probabilities).abs().max() > 1e-4


def test_samples_differ_only_by_their_starting_noise():
    model = tiny_model()
    image = torch.rand(1, 1, 32, 32)
    shape = (1, 3, 32, 32)

    def run(samples: int, generator: torch.Generator):
        return sample_ensemble(model, image, samples=samples, steps=4, fused_steps=2, generator=generator)

    ensemble = run(2, torch.Generator().manual_seed(5))
    first = run(1, torch.Generator().manual_seed(5))
    skip_one = torch.Generator().manual_seed(5)
    torch.randn(shape, generator=skip_one)  # sample 1 starts from the second draw
    second = run(1, skip_one)
    # the ensemble is exactly its two members run alone: nothing but the noise differs
    torch.testing.assert_close(
        ensemble.statistics.mean_probability,
        (first.statistics.mean_probability + second.statistics.mean_probability) / 2, atol=1e-5, rtol=1e-5)
    assert (first.probabilities - second.probabilities).abs().max() > 1e-4
    assert ensemble.uncertainty().variance.max() > 1e-6


def test_fused_steps_larger_than_steps_is_clamped():
    result = sample_ensemble(tiny_model(), torch.rand(1, 1, 32, 32), samples=1, steps=2, fused_steps=5,
                             generator=torch.Generator().manual_seed(0))
    assert result.weights.shape == (2,) and result.statistics.mean_probability.shape[0] == 2


def test_diffusion_config_round_trip_and_errors():
    config = DiffusionConfig(sampling_steps=50, fused_steps=10, samples=15)
    assert DiffusionConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ModelError, match="m.json.*cosine"):
        DiffusionConfig.from_dict({**config.to_dict(), "schedule": "linear_beta"}, source="m.json")
    with pytest.raises(ModelError, match="m.json"):
        DiffusionConfig.from_dict({**config.to_dict(), "eta": 1}, source="m.json")


def test_sampling_under_autocast_keeps_float32_results():
    model = tiny_model()
    image = torch.rand(1, 1, 32, 32)
    reference = sample_ensemble(model, image, 2, 3, 2, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = sample_ensemble(model, image, 2, 3, 2, generator=torch.Generator().manual_seed(0))
    assert mixed.probabilities.dtype == torch.float32
    assert mixed.statistics.mean_probability.dtype == torch.float32
    assert (mixed.probabilities - reference.probabilities).abs().max() < 0.1


def test_single_sample_follows_the_ddim_chain_on_2_sigmoid_minus_1():
    model = tiny_model()
    image = torch.rand(1, 1, 32, 32)
    result = sample_ensemble(model, image, samples=1, steps=4, fused_steps=4,
                             generator=torch.Generator().manual_seed(2))
    # the documented chain, written out: x0 handed to MONAI's DDIM step is 2 * sigmoid(logits) - 1
    scheduler = make_scheduler(DiffusionConfig())
    x_t = torch.randn((1, 3, 32, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = model.encode(image)
        for index, t in enumerate(set_sampling_timesteps(scheduler, 4).tolist()):
            p = torch.sigmoid(model.denoise(x_t, t, image, features))
            torch.testing.assert_close(result.statistics.mean_probability[index], p, atol=1e-5, rtol=1e-5)
            x_t, _ = scheduler.step(2 * p - 1, t, x_t)


def test_fused_steps_clamp_is_one_rule():
    config = DiffusionConfig(sampling_steps=10, fused_steps=5)
    assert config.fused_steps_for(10) == 5  # the model's default
    assert config.fused_steps_for(3) == 3  # never more than the steps run
    assert config.fused_steps_for(10, requested=7) == 7 and config.fused_steps_for(4, requested=7) == 4
    assert config.fused_steps_for(1, requested=None) == 1
