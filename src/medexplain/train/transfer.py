"""Saliency-to-segmentation transfer: a frozen classifier encoder, a light trained decoder, Dice on masks.

SIBnet (Mahapatra, Poellinger, Reyes, Medical Image Analysis 2022) tests whether an encoder trained with
interpretability guidance also serves segmentation: the classifier's encoder is kept as it is and only a decoder
is trained on the masks. Here the decoder is deliberately light (FPN-like): a 1x1 projection of each tapped
stage, upsampled to the finest one and summed, then a 3x3 convolution, ReLU and a 1x1 convolution to one logit,
upsampled to the input. The encoder runs in eval mode without gradient, so its features are computed once.
Images ``(N, C, *spatial)`` and masks ``(N, 1, *spatial)``, 2D or 3D through one code path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.hooks import Hooks, find_module, last_conv_block
from medexplain.explain.resample import to_input_resolution
from medexplain.metrics.overlap import dice_coefficient
from medexplain.models.layers import conv
from medexplain.models.modes import evaluation_mode
from medexplain.progress import progress_bar

RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def default_layers(encoder: nn.Module) -> list[str]:
    """The four residual stages of a ResNet, else the last convolutional block alone."""
    names = dict(encoder.named_modules())
    if all(stage in names for stage in RESNET_STAGES):
        return list(RESNET_STAGES)
    return [last_conv_block(encoder)]


@torch.no_grad()
def encoder_features(encoder: nn.Module, x: Tensor, layers: Sequence[str], batch_size: int = 64) -> list[Tensor]:
    """Outputs ``(N, C_l, *s_l)`` of ``layers`` for inputs ``x`` ``(N, C, *spatial)``, the encoder in eval mode."""
    modules = [find_module(encoder, name) for name in layers]
    outputs: list[list[Tensor]] = [[] for _ in layers]
    with evaluation_mode(encoder), Hooks() as hooks:
        for module, store in zip(modules, outputs, strict=True):
            hooks.forward(module, lambda _m, _a, output, store=store: store.append(output.detach()))
        for chunk in x.split(batch_size):
            encoder(chunk)
    return [torch.cat(store) for store in outputs]


class FeatureDecoder(nn.Module):
    """Light FPN-like decoder: tapped features ``[(B, C_l, *s_l)]`` -> mask logits ``(B, 1, *spatial)``.

    Args:
        feature_channels: ``C_l`` of each tapped layer, finest first or in any order.
        spatial_dims: 1, 2 or 3.
        channels: width of the shared projection.
    """

    def __init__(self, feature_channels: Sequence[int], spatial_dims: int, channels: int = 32) -> None:
        super().__init__()
        conv_nd = conv(spatial_dims)
        self.project = nn.ModuleList(conv_nd(c, channels, 1) for c in feature_channels)
        self.smooth = conv_nd(channels, channels, 3, padding=1)
        self.head = conv_nd(channels, 1, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        finest = max((f.shape[2:] for f in features), key=lambda s: torch.Size(s).numel())
        merged = sum(to_input_resolution(p(f), finest) for p, f in zip(self.project, features, strict=True))
        logits = self.head(F.relu(self.smooth(merged)))
        return to_input_resolution(logits, tuple(size))


class FrozenEncoderSegmenter(nn.Module):
    """A frozen encoder's ``layers`` feeding a :class:`FeatureDecoder`; ``(B, C, *spatial) -> (B, 1, *spatial)``."""

    def __init__(self, encoder: nn.Module, layers: Sequence[str], decoder: FeatureDecoder) -> None:
        super().__init__()
        self.encoder, self.layers, self.decoder = encoder, list(layers), decoder
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(encoder_features(self.encoder, x, self.layers), x.shape[2:])


def _check_pair(images: Tensor, masks: Tensor) -> None:
    if masks.shape != (images.shape[0], 1, *images.shape[2:]):
        raise MedexplainError(
            f"masks of shape {tuple(masks.shape)} do not fit images {tuple(images.shape)}: expected "
            f"({images.shape[0]}, 1, {', '.join(str(s) for s in images.shape[2:])})"
        )


def soft_dice_loss(logits: Tensor, masks: Tensor, eps: float = 1.0) -> Tensor:
    """``1 - (2 sum(p t) + eps) / (sum p + sum t + eps)`` per sample, averaged; ``p = sigmoid(logits)``."""
    p, t = torch.sigmoid(logits).flatten(1), masks.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def train_decoder(
    encoder: nn.Module,
    images: Tensor,
    masks: Tensor,
    *,
    layers: Sequence[str] | None = None,
    channels: int = 32,
    epochs: int = 40,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> FrozenEncoderSegmenter:
    """Train a :class:`FeatureDecoder` on ``masks`` over the frozen ``encoder``; the encoder is not modified.

    Args:
        encoder: a trained classifier (its weights are frozen; features are taken in eval mode).
        images: ``(N, C, *spatial)`` preprocessed as for the classifier.
        masks: ``(N, 1, *spatial)`` in {0, 1}.
        layers: tapped module names (default :func:`default_layers`).
        epochs, batch_size, lr: AdamW on BCE + soft Dice, cosine learning rate.
        seed: decoder initialisation and shuffling.

    Returns:
        The segmenter in eval mode.
    """
    _check_pair(images, masks)
    layers = list(layers) if layers is not None else default_layers(encoder)
    features = encoder_features(encoder, images, layers)
    targets = masks.to(features[0].dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = FeatureDecoder([f.shape[1] for f in features], images.ndim - 2, channels).to(images.device)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(decoder.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, epochs))
    with progress_bar(progress, transient=True) as bar:
        task = bar.add_task("decoder", total=epochs)
        for _ in range(epochs):
            for chosen in torch.randperm(len(images), generator=generator).split(batch_size):
                logits = decoder([f[chosen] for f in features], images.shape[2:])
                target = targets[chosen]
                loss = F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits, target)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
            schedule.step()
            bar.advance(task)
    return FrozenEncoderSegmenter(encoder, layers, decoder.eval())


@torch.no_grad()
def segmentation_dice(
    segmenter: nn.Module, images: Tensor, masks: Tensor, *, threshold: float = 0.5, batch_size: int = 64
) -> Tensor:
    """Dice ``(N,)`` of ``sigmoid(segmenter(images)) > threshold`` against ``masks`` (NaN where both are empty)."""
    _check_pair(images, masks)
    predicted = torch.cat([torch.sigmoid(segmenter(chunk)) > threshold for chunk in images.split(batch_size)])
    return dice_coefficient(predicted.flatten(1), masks.flatten(1) > 0.5)
