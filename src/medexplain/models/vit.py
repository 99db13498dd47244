"""Vision transformers for 2D images and 3D volumes: MONAI's ``ViT`` as a classifier that returns logits.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021.
MONAI's network (``monai.networks.nets.ViT``) cuts the input into non-overlapping patches with one strided
convolution (``vit.patch_embedding.patch_embeddings``), adds learnt position embeddings, prepends a class token
and runs pre-norm transformer blocks (``vit.blocks[i]``: ``norm1``, ``attn``, ``norm2``, ``mlp``); the class
token's final state goes through ``vit.norm`` and a linear head. Its forward returns ``(logits, hidden states)``;
:class:`ViTClassifier` returns the logits alone, as every medexplain model does.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.models.layers import check_input


def _per_axis(value: int | Sequence[int], spatial_dims: int, what: str) -> tuple[int, ...]:
    values = (value,) * spatial_dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != spatial_dims or min(values) < 1:
        raise MedexplainError(f"ViT {what} must be a positive int or {spatial_dims} positive ints, got {value!r}")
    return values


class ViTClassifier(nn.Module):
    """MONAI's ViT with a class token and a linear head (no output activation): ``(B, C, *img_size) -> (B, K)``.

    Args:
        img_size: input size per spatial axis (the learnt position embeddings fix it).
        patch_size: patch side per axis; every ``img_size`` side must be a multiple of it.
        hidden_size: token width; a multiple of ``num_heads``.
        mlp_dim: width of the hidden layer of each block's MLP.
        num_layers: number of transformer blocks.
        num_heads: attention heads per block.
        dropout_rate: dropout in the patch embedding, attention and MLPs (training only).
        qkv_bias: biases on the query, key and value projections (as in the published ViT).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        img_size: int | Sequence[int],
        patch_size: int | Sequence[int],
        hidden_size: int,
        mlp_dim: int,
        num_layers: int,
        num_heads: int,
        dropout_rate: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        self.img_size = _per_axis(img_size, spatial_dims, "img_size")
        self.patch_size = _per_axis(patch_size, spatial_dims, "patch_size")
        if any(s % p for s, p in zip(self.img_size, self.patch_size, strict=True)):
            raise MedexplainError(f"ViT img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        if hidden_size % num_heads:
            raise MedexplainError(f"ViT hidden_size {hidden_size} must be a multiple of num_heads {num_heads}")
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.vit = ViT(
            in_channels=in_channels,
            img_size=self.img_size,
            patch_size=self.patch_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            classification=True,
            num_classes=num_classes,
            dropout_rate=dropout_rate,
            spatial_dims=spatial_dims,
            post_activation=None,
            qkv_bias=qkv_bias,
        )
        nn.init.trunc_normal_(self.vit.cls_token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, self.spatial_dims)
        if tuple(x.shape[2:]) != self.img_size:
            raise MedexplainError(
                f"input of shape {tuple(x.shape)} does not fit a ViT built for img_size {self.img_size}; "
                "build the model with the data's image size"
            )
        logits, _ = self.vit(x)
        return logits


PRESETS: dict[str, dict[str, int]] = {
    "vit-tiny": {"hidden_size": 64, "mlp_dim": 128, "num_layers": 4, "num_heads": 4},
    "vit-small": {"hidden_size": 192, "mlp_dim": 384, "num_layers": 6, "num_heads": 3},
}
"""Small layouts that train on a CPU: ``vit-tiny`` (about 0.15 M parameters in the blocks) and ``vit-small``
(DeiT-Ti's width, half its depth)."""
