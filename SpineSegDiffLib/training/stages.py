"""Training stages: which weights train, the batch loss, the validation score.

* ``diffusion``: the whole denoiser from pure-noise starts (t ~ U{0..T-1}), as before.
* ``presegmenter``: only the presegmentation head on the frozen image encoder
  (``model/presegmenter.py``); the denoiser's weights, calibration included, are kept
  bit for bit. Deterministic: one encoder pass + the head per batch, fast on a CPU.
* ``diffusion-from-presegmentation``: the paper's training. x_t is drawn from the forward
  process applied to the (frozen) presegmentation, t ~ U{0..t_max}, target the true mask;
  the image encoder and the head stay frozen (the head reads the encoder's features).

Partial labels are respected by every stage through the same loss weights
(``training/targets.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import NUM_CLASSES

STAGES = ("diffusion", "presegmenter", "diffusion-from-presegmentation")


@dataclass
class Stage:
    name: str
    trainable: list[torch.nn.Parameter]
    # (model, image, mask, weights, generator) -> loss
    loss: Callable[..., torch.Tensor]
    # (network, image batch) -> (B, C, H, W) bool prediction for validation
    predict: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None
    calibrate: bool  # fit the denoiser's logit calibration at the end


def check_stage(name: str, init_state: dict | None) -> None:
    if name not in STAGES:
        raise InputError(f"--stage must be one of {', '.join(STAGES)}, got '{name}'")
    if name != "diffusion" and init_state is None:
        raise InputError(f"--stage {name} trains on top of an existing model: give --init MODEL")


def build_stage(name: str, network, diff_cfg, preseg_cfg, size_prior_weight: float = 0.0) -> Stage:
    """Freeze what the stage keeps and return its loss; ``network`` is on its device.
    Batches that carry a size-prior channel (``training/size_prior.py``) add its penalty on
    the stage's predicted logits, times ``size_prior_weight``, in every stage."""
    from SpineSegDiffLib.model.diffusion import diffusion_loss, segmentation_loss
    from SpineSegDiffLib.model.presegmenter import has_presegmenter
    from SpineSegDiffLib.training.size_prior import size_prior_penalty, split_prior_channel

    def with_prior(stage_loss):
        """(model, image, mask, weights, gen) -> loss, from stage_loss(...) -> (loss, logits)."""
        def loss(model, image, mask, weights, gen):
            weights, region = split_prior_channel(weights, mask.shape[1])
            value, logits = stage_loss(model, image, mask, weights, gen)
            if region is None or size_prior_weight <= 0:
                return value
            return value + size_prior_weight * size_prior_penalty(logits, weights, region)
        return loss

    if name == "diffusion":
        @with_prior
        def loss(model, image, mask, weights, gen):
            terms = diffusion_loss(model, image, mask, channel_weight=weights, generator=gen, config=diff_cfg)
            return terms["loss"], terms["logits"]

        return Stage(name, list(network.parameters()), loss, None, True)

    if not has_presegmenter(network):
        raise InputError(f"--stage {name}: the --init model has no presegmenter; "
                         "train one first with --stage presegmenter")
    frozen = [network.image_encoder]
    if name == "presegmenter":
        trainable = list(network.presegmenter.parameters())
    else:
        frozen.append(network.presegmenter)
        head = {id(p) for m in frozen for p in m.parameters()}
        trainable = [p for p in network.parameters() if id(p) not in head]
    for module in frozen:
        module.requires_grad_(False)

    @with_prior
    def head_loss(model, image, mask, weights, gen):
        with torch.no_grad():
            features = model.image_encoder(image)
        logits = model.presegmenter(features)
        return segmentation_loss(logits, mask, weights)["loss"], logits

    @with_prior
    def from_presegmentation_loss(model, image, mask, weights, gen):
        with torch.no_grad():
            features = model.image_encoder(image)
            start = 2.0 * torch.sigmoid(model.presegmenter(features).float()) - 1.0
        t = torch.randint(0, preseg_cfg.t_max + 1, (image.shape[0],), generator=gen).to(image.device)
        noise = torch.randn(start.shape, generator=gen).to(image.device)
        x_t = _training_scheduler(diff_cfg).add_noise(start, noise, t)
        logits = model.denoise(x_t, t, image, features)
        return segmentation_loss(logits, mask, weights)["loss"], logits

    def predict_head(model, image):
        return torch.sigmoid(model.presegmenter(model.encode(image)).float()) > 0.5

    def predict_one_step(model, image):
        # one x0 prediction from the presegmentation noised to t_max (no randomness: x_t = mean)
        features = model.encode(image)
        start = 2.0 * torch.sigmoid(model.presegmenter(features).float()) - 1.0
        t = torch.full((image.shape[0],), preseg_cfg.t_max, dtype=torch.long, device=image.device)
        x_t = _training_scheduler(diff_cfg).add_noise(start, torch.zeros_like(start), t)
        return torch.sigmoid(model.denoise(x_t, t, image, features).float()) > 0.5

    if name == "presegmenter":
        return Stage(name, trainable, head_loss, predict_head, False)
    return Stage(name, trainable, from_presegmentation_loss, predict_one_step, False)


def _training_scheduler(diff_cfg):
    from SpineSegDiffLib.model.diffusion import _training_scheduler as cached

    return cached(diff_cfg)


def prepare_network(name: str, network, init_state: dict | None, image_channels: int) -> None:
    """Load the starting weights the stage needs (and a fresh head where there is none)."""
    from SpineSegDiffLib.model.presegmenter import WEIGHT_PREFIX, attach_presegmenter, split_state
    from SpineSegDiffLib.training.model_record import _load_initial_weights

    if init_state is None:
        return
    denoiser, head = split_state(init_state)
    if name == "diffusion-from-presegmentation" and not head:
        raise InputError(f"--stage {name}: the --init model has no presegmenter; "
                         "train one first with --stage presegmenter")
    if name == "diffusion":  # fine-tuning from noise starts: calibration reset
        _load_initial_weights(network, denoiser, image_channels)
        return
    attach_presegmenter(network)
    state = dict(denoiser)
    if name == "diffusion-from-presegmentation":  # the denoiser changes: its calibration is stale
        state.update({"logit_scale": torch.ones(NUM_CLASSES), "logit_bias": torch.zeros(NUM_CLASSES)})
    if head:
        state.update(head)
    else:  # a new head: its fresh initial weights
        state.update({WEIGHT_PREFIX + k: v for k, v in network.presegmenter.state_dict().items()})
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise InputError("the --init model does not fit this training's network (--features / "
                         f"--image-channels differ): {lines[1].strip() if len(lines) > 1 else lines[0]}") from None
