"""The Diff-UNet denoiser: shapes, feature reuse and broadcasting, time conditioning, config."""

from __future__ import annotations

import json

import pytest
import torch

from SpineSegDiffLib.core.errors import InputError, ModelError
from SpineSegDiffLib.model.network import (
    PAPER_FEATURES, SMALL_FEATURES, TINY_FEATURES, DiffUNet, NetworkConfig, count_parameters,
    estimate_size_mb,
)


def tiny_model(image_channels: int = 1, seed: int = 0) -> DiffUNet:
    torch.manual_seed(seed)
    return DiffUNet(NetworkConfig(image_channels=image_channels, features=TINY_FEATURES,
                                  time_embed_dim=16)).eval()


@pytest.mark.parametrize("image_channels", [1, 3])
def test_shapes_for_one_and_three_image_channels(image_channels):
    model = tiny_model(image_channels)
    image = torch.rand(2, image_channels, 32, 48)
    features = model.encode(image)
    assert [tuple(f.shape) for f in features] == [
        (2, 8, 32, 48), (2, 8, 16, 24), (2, 16, 8, 12), (2, 16, 4, 6), (2, 32, 2, 3)]
    logits = model(image, torch.randn(2, 3, 32, 48), torch.tensor([10, 500]))
    assert logits.shape == (2, 3, 32, 48)
    assert torch.isfinite(logits).all()


def test_precomputed_features_give_the_same_logits_as_forward():
    model = tiny_model()
    image, x_t = torch.rand(2, 1, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        direct = model(image, x_t, 300)
        reused = model.denoise(x_t, 300, image, model.encode(image))
    torch.testing.assert_close(reused, direct)


def test_features_of_b_slices_broadcast_onto_s_samples():
    model = tiny_model()
    image = torch.rand(2, 1, 32, 32)
    x_t = torch.randn(3 * 2, 3, 32, 32)  # 3 samples x 2 slices, sample-major
    with torch.no_grad():
        features = model.encode(image)
        broadcast = model.denoise(x_t, 700, image, features)
        explicit = model.denoise(x_t, 700, image.repeat(3, 1, 1, 1), [f.repeat(3, 1, 1, 1) for f in features])
        # row s * B + b must be conditioned on slice b: check one row against a lone call
        lone = model.denoise(x_t[5:6], 700, image[1:2], [f[1:2] for f in features])
    torch.testing.assert_close(broadcast, explicit)
    torch.testing.assert_close(broadcast[5:6], lone, atol=1e-5, rtol=1e-5)


def test_time_and_image_both_change_the_prediction():
    model = tiny_model()
    image, x_t = torch.rand(1, 1, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        early, late = model(image, x_t, 0), model(image, x_t, 999)
        other_image = model(torch.rand(1, 1, 32, 32), x_t, 0)
    assert (early - late).abs().max() > 1e-3
    assert (early - other_image).abs().max() > 1e-3


def test_image_encoder_features_are_added_to_the_denoiser():
    model = tiny_model()
    image, x_t = torch.rand(1, 1, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        features = model.encode(image)
        base = model.denoise(x_t, 100, image, features)
        for level in range(5):  # every scale's feature map reaches the output
            bumped = [f + 1.0 if i == level else f for i, f in enumerate(features)]
            assert (model.denoise(x_t, 100, image, bumped) - base).abs().max() > 1e-4


def test_sizes_that_are_not_multiples_of_16_are_refused():
    model = tiny_model()
    with pytest.raises(InputError, match="multiples of 16"):
        model.encode(torch.rand(1, 1, 40, 32))
    with pytest.raises(InputError, match="image channels"):
        model.encode(torch.rand(1, 3, 32, 32))


def test_channels_last_and_autocast():
    model = tiny_model()
    image, x_t = torch.rand(2, 1, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(image, x_t, 250)
        model_cl = model.to(memory_format=torch.channels_last)
        channels_last = model_cl(image.to(memory_format=torch.channels_last),
                                 x_t.to(memory_format=torch.channels_last), 250)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model_cl(image, x_t, 250)
    torch.testing.assert_close(channels_last, reference, atol=1e-4, rtol=1e-4)
    assert mixed.shape == reference.shape and torch.isfinite(mixed).all()
    # bfloat16 keeps ~3 significant digits: the probabilities must still agree closely
    assert (torch.sigmoid(mixed.float()) - torch.sigmoid(reference)).abs().max() < 0.1


def test_config_round_trips_through_json_and_rejects_bad_settings():
    config = NetworkConfig(image_channels=3, features=SMALL_FEATURES, time_embed_dim=64, dropout=0.1)
    assert NetworkConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ModelError, match="a.json.*unknown network settings"):
        NetworkConfig.from_dict({**config.to_dict(), "depth": 7}, source="a.json")
    with pytest.raises(ModelError, match="b.json.*unknown norm"):
        NetworkConfig.from_dict({**config.to_dict(), "norm": "layer"}, source="b.json")
    with pytest.raises(ModelError, match="features"):
        NetworkConfig.from_dict({**config.to_dict(), "features": [8, 8, 16]})


def test_parameter_count_and_size_follow_the_presets():
    sizes = {}
    for name, features in (("tiny", TINY_FEATURES), ("small", SMALL_FEATURES), ("paper", PAPER_FEATURES)):
        model = DiffUNet(NetworkConfig(features=features))
        sizes[name] = (count_parameters(model), estimate_size_mb(model))
    assert sizes["tiny"][0] < sizes["small"][0] < sizes["paper"][0]
    for count, megabytes in sizes.values():
        # float32 weights plus the two calibration buffers (scale, bias per structure);
        # instance norm with affine=True keeps no running buffers
        assert megabytes == pytest.approx(4 * (count + 2 * 3) / 1e6)
    half = DiffUNet(NetworkConfig(features=TINY_FEATURES)).half()
    assert estimate_size_mb(half) == pytest.approx(sizes["tiny"][1] / 2)


def test_a_2d_model_widened_to_2_5d_starts_out_computing_the_same():
    """Fine-tuning a 2D model as 2.5D (with_context_channels): same output whatever the
    neighbouring slices hold, until training changes the neighbour weights."""
    from SpineSegDiffLib.model.network import DiffUNet, NetworkConfig, TINY_FEATURES, with_context_channels

    torch.manual_seed(0)
    flat = DiffUNet(NetworkConfig(image_channels=1, features=TINY_FEATURES)).eval()
    wide = DiffUNet(NetworkConfig(image_channels=3, features=TINY_FEATURES)).eval()
    wide.load_state_dict(with_context_channels(flat.state_dict(), 3))
    image = torch.rand(2, 1, 32, 32)
    neighbours = torch.cat([torch.rand(2, 1, 32, 32), image, torch.rand(2, 1, 32, 32)], dim=1)
    x_t = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wide(neighbours, x_t, 500), flat(image, x_t, 500))
    with pytest.raises(Exception, match="1-channel"):
        with_context_channels(wide.state_dict(), 5)
