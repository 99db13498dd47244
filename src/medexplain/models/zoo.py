"""The registered model names: the BagNet family (also ``sparse-``), ResNet-18 and DenseNet-121 baselines, small
vision transformers (``vit-tiny``, ``vit-small``, and ``vit`` with every size given), and the concept bottleneck on
any of them."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from medexplain.models.bagnet import BagNet
from medexplain.models.bottleneck import concept_bottleneck
from medexplain.models.registry import register_model
from medexplain.models.resnet import ResNet18
from medexplain.models.vit import PRESETS, ViTClassifier

# Published ResNet-50 layout, and a light layout with ResNet-18's stage outputs (64, 128, 256, 512 channels).
FULL = {"width": 64, "blocks": (3, 4, 6, 3)}
LIGHT = {"width": 16, "blocks": (2, 2, 2, 2)}

# Default sparsity weight on the mean |evidence| per element (medexplain.train.losses explains the scale).
DEFAULT_SPARSITY_LAMBDA = 0.03


def _bagnet_factory(patch_size: int, layout: dict):
    def factory(
        *,
        in_channels: int = 3,
        num_classes: int = 2,
        spatial_dims: int = 2,
        width: int = layout["width"],
        blocks: Sequence[int] = layout["blocks"],
        evidence_activation: str = "linear",
    ) -> nn.Module:
        return BagNet(
            patch_size,
            in_channels=in_channels,
            num_classes=num_classes,
            spatial_dims=spatial_dims,
            width=width,
            blocks=tuple(blocks),
            evidence_activation=evidence_activation,
        )

    layout_name = "ResNet-50 layout (3, 4, 6, 3), width 64" if layout is FULL else "light layout (2, 2, 2, 2), width 16"
    factory.__doc__ = f"BagNet-{patch_size} (Brendel & Bethge 2019) with a class evidence head, {layout_name}; 2D/3D."
    return factory


for _q in (9, 17, 33):
    for _suffix, _layout in (("", FULL), ("-light", LIGHT)):
        _factory = _bagnet_factory(_q, _layout)
        _meta = {"interpretable": True, "patch_size": _q, "family": "bagnet"}
        register_model(f"bagnet{_q}{_suffix}", **_meta)(_factory)
        register_model(f"sparse-bagnet{_q}{_suffix}", **_meta, sparsity_lambda=DEFAULT_SPARSITY_LAMBDA)(_factory)


@register_model("resnet18", interpretable=False, family="resnet")
def resnet18(
    *,
    in_channels: int = 3,
    num_classes: int = 2,
    spatial_dims: int = 2,
    small_input: bool = False,
    width: int = 64,
    attention: str | None = None,
) -> nn.Module:
    """ResNet-18 (plain torch, 2D/3D); ``small_input`` for 28-64 pixel images; ``attention`` "se" or "cbam"."""
    return ResNet18(
        in_channels=in_channels,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        small_input=small_input,
        width=width,
        attention=attention,
    )


@register_model("densenet121", interpretable=False, family="densenet")
def densenet121(*, in_channels: int = 3, num_classes: int = 2, spatial_dims: int = 2) -> nn.Module:
    """MONAI's DenseNet-121 (Huang et al., CVPR 2017), 2D/3D."""
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes)


register_model("concept-bottleneck", interpretable=False, family="bottleneck")(concept_bottleneck)

# Default geometry: 128-pixel images in 16-pixel patches (2D), 32-voxel volumes in 8-voxel patches (3D): 64 tokens.
_VIT_IMG_SIZE = {1: 256, 2: 128, 3: 32}
_VIT_PATCH_SIZE = {1: 16, 2: 16, 3: 8}


def _vit_factory(layout: dict[str, int]):
    def factory(
        *,
        in_channels: int = 3,
        num_classes: int = 2,
        spatial_dims: int = 2,
        img_size: int | Sequence[int] | None = None,
        patch_size: int | Sequence[int] | None = None,
        hidden_size: int = layout["hidden_size"],
        mlp_dim: int = layout["mlp_dim"],
        num_layers: int = layout["num_layers"],
        num_heads: int = layout["num_heads"],
        dropout_rate: float = 0.0,
    ) -> nn.Module:
        return ViTClassifier(
            in_channels=in_channels,
            num_classes=num_classes,
            spatial_dims=spatial_dims,
            img_size=_VIT_IMG_SIZE[spatial_dims] if img_size is None else img_size,
            patch_size=_VIT_PATCH_SIZE[spatial_dims] if patch_size is None else patch_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout_rate=dropout_rate,
        )

    return factory


for _name, _layout in (("vit", PRESETS["vit-small"]), *PRESETS.items()):
    _factory = _vit_factory(_layout)
    _factory.__doc__ = (
        f"MONAI's ViT (Dosovitskiy et al. 2021) as a classifier, 2D/3D; {_layout['num_layers']} blocks of width "
        f"{_layout['hidden_size']}, {_layout['num_heads']} heads unless given; img_size 128 (2D) / 32 (3D) and "
        "patch_size 16 / 8 unless given."
    )
    register_model(_name, interpretable=False, family="vit")(_factory)
