"""Small plain-torch test models (2D/3D through ``dims``): CNN, ResNet-like, DenseNet-like, BagNet-like."""

from __future__ import annotations

import torch
from torch import Tensor, nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
ADAPTIVE = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


def conv_bn_relu(dims: int, cin: int, cout: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [CONV[dims](cin, cout, 3, stride=stride, padding=1), BATCHNORM[dims](cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (eval-mode behaviour)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def without_batchnorm_eps(model: nn.Module) -> nn.Module:
    """``eps = 0`` in every BatchNorm (eval only): Zennit's BatchNorm merging leaves ``eps`` in the BatchNorm it
    resets to the identity, which scales its output by ``1 / sqrt(1 + eps)``; Zennit would differ by ~1e-5."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = 0.0
    return model


def plain_cnn(dims: int = 2, in_channels: int = 2, num_classes: int = 3) -> nn.Module:
    return randomize_batchnorm(nn.Sequential(
        conv_bn_relu(dims, in_channels, 6), MAXPOOL[dims](2), conv_bn_relu(dims, 6, 8),
        ADAPTIVE[dims](2), nn.Flatten(), nn.Linear(8 * 2**dims, 10), nn.ReLU(), nn.Linear(10, num_classes),
    ))


class Add(nn.Module):
    """A residual addition as a module (our LRP needs no module; Zennit's reference replaces it by its Sum)."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b


class BasicBlock(nn.Module):
    def __init__(self, dims: int, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(dims, cin, cout, stride), conv_bn_relu(dims, cout, cout, relu=False))
        self.shortcut = (
            nn.Identity() if stride == 1 and cin == cout
            else nn.Sequential(CONV[dims](cin, cout, 1, stride=stride), BATCHNORM[dims](cout))
        )
        self.add = Add()
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.add(self.body(x), self.shortcut(x)))


class ResNetLike(nn.Module):
    def __init__(self, dims: int = 2, in_channels: int = 2, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn_relu(dims, in_channels, 6)
        self.layer1 = BasicBlock(dims, 6, 6)
        self.layer2 = BasicBlock(dims, 6, 8, stride=2)
        self.pool = ADAPTIVE[dims](1)
        self.fc = nn.Linear(8, num_classes)
        randomize_batchnorm(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layer2(self.layer1(self.stem(x)))).flatten(1))


class DenseLayer(nn.Module):
    def __init__(self, dims: int, cin: int, growth: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(dims, cin, growth)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(x)], dim=1)


class DenseNetLike(nn.Module):
    """Dense block (concatenations of earlier features with new conv-BN-ReLU features), then a transition."""

    def __init__(self, dims: int = 2, in_channels: int = 2, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn_relu(dims, in_channels, 4)
        self.block = nn.Sequential(DenseLayer(dims, 4, 3), DenseLayer(dims, 7, 3))
        self.transition = nn.Sequential(CONV[dims](10, 8, 1), BATCHNORM[dims](8), nn.ReLU(), AVGPOOL[dims](2))
        self.head = nn.Sequential(ADAPTIVE[dims](1), nn.Flatten(), nn.Linear(8, num_classes))
        randomize_batchnorm(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.transition(self.block(self.stem(x))))


class BagNetLike(nn.Module):
    """Local features (3x3 then 1x1 convolutions), class evidence per position, logits = mean evidence."""

    def __init__(self, dims: int = 2, in_channels: int = 2, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            CONV[dims](in_channels, 8, 3, stride=2), nn.ReLU(), CONV[dims](8, 8, 1), nn.ReLU()
        )
        self.classifier = CONV[dims](8, num_classes, 1)

    def evidence_map(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.evidence_map(x).flatten(2).mean(dim=2)


MODELS = {"resnet": ResNetLike, "densenet": DenseNetLike, "bagnet": BagNetLike}


def tiny_vit(dims: int = 2, in_channels: int = 2, num_classes: int = 3, size: int = 9, patch: int = 3) -> nn.Module:
    """MONAI's ViT through the model registry: 2 blocks of width 12 (3 heads); every bias, the position
    embeddings and the class token random (non-zero), so that no rule can rely on zeros."""
    from medexplain.models import create_model

    model = create_model(
        "vit", in_channels=in_channels, num_classes=num_classes, spatial_dims=dims, img_size=size, patch_size=patch,
        hidden_size=12, mlp_dim=24, num_layers=2, num_heads=3,
    )
    generator = torch.Generator().manual_seed(dims)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "position" in name or "cls_token" in name:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
            elif "norm" in name:
                parameter.copy_(1 + 0.3 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


class MHABlock(nn.Module):
    """A pre-norm transformer block written with ``nn.MultiheadAttention`` (as a user would)."""

    def __init__(self, width: int, heads: int, hidden: int, batch_first: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=batch_first)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MHAViT(nn.Module):
    """A user's ViT from plain torch modules: convolutional patch embedding, position embeddings, ``MHABlock`` s,
    then the class token (``class_token``) or the mean of all tokens, a LayerNorm and a linear head. Tokens are
    ``(N, B, D)`` unless ``batch_first``."""

    def __init__(
        self, dims: int = 2, in_channels: int = 2, num_classes: int = 3, size: int = 9, patch: int = 3,
        width: int = 12, heads: int = 3, layers: int = 2, class_token: bool = False, batch_first: bool = False,
    ) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.patch_embedding = CONV[dims](in_channels, width, patch, stride=patch)
        tokens = (size // patch) ** dims
        self.position = nn.Parameter(0.3 * torch.randn(1, tokens, width))
        self.cls_token = nn.Parameter(0.3 * torch.randn(1, 1, width)) if class_token else None
        self.blocks = nn.ModuleList(MHABlock(width, heads, 2 * width, batch_first) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2) + self.position
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        if not self.batch_first:
            tokens = tokens.transpose(0, 1)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        if not self.batch_first:
            tokens = tokens.transpose(0, 1)
        return self.head(tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1))


def encoder_layer(width: int, heads: int, hidden: int, batch_first: bool) -> nn.TransformerEncoderLayer:
    """PyTorch's own pre-norm block, laid out like MONAI's (GELU as a module, so LRP's identity rule applies)."""
    return nn.TransformerEncoderLayer(
        width, heads, hidden, dropout=0.0, activation=nn.GELU(), batch_first=batch_first, norm_first=True
    )


def mha_copy(vit: nn.Module, batch_first: bool = False, torch_encoder: bool = False) -> MHAViT:
    """The ``MHAViT`` computing exactly what the registry's MONAI ``vit`` computes, from its weights; its blocks
    are ``MHABlock`` s or, with ``torch_encoder``, ``nn.TransformerEncoderLayer`` s."""
    monai_vit = vit.vit
    first = monai_vit.blocks[0]
    width = first.norm1.normalized_shape[0]
    dims = vit.spatial_dims
    copy = MHAViT(
        dims, vit.in_channels, monai_vit.classification_head.out_features, vit.img_size[0], vit.patch_size[0], width,
        first.attn.num_heads, len(monai_vit.blocks), class_token=True, batch_first=batch_first,
    )
    block = encoder_layer if torch_encoder else MHABlock
    copy.blocks = nn.ModuleList(block(width, first.attn.num_heads, first.mlp.linear1.out_features, batch_first)
                                for _ in monai_vit.blocks)
    with torch.no_grad():
        copy.patch_embedding.load_state_dict(monai_vit.patch_embedding.patch_embeddings.state_dict())
        copy.position.copy_(monai_vit.patch_embedding.position_embeddings)
        copy.cls_token.copy_(monai_vit.cls_token)
        for ours, theirs in zip(copy.blocks, monai_vit.blocks, strict=True):
            ours.norm1.load_state_dict(theirs.norm1.state_dict())
            ours.norm2.load_state_dict(theirs.norm2.state_dict())
            attention = ours.self_attn if torch_encoder else ours.attn
            attention.in_proj_weight.copy_(theirs.attn.qkv.weight)
            attention.in_proj_bias.copy_(theirs.attn.qkv.bias)
            attention.out_proj.load_state_dict(theirs.attn.out_proj.state_dict())
            linear1, linear2 = (ours.linear1, ours.linear2) if torch_encoder else (ours.mlp[0], ours.mlp[2])
            linear1.load_state_dict(theirs.mlp.linear1.state_dict())
            linear2.load_state_dict(theirs.mlp.linear2.state_dict())
        copy.norm.load_state_dict(monai_vit.norm.state_dict())
        copy.head.load_state_dict(monai_vit.classification_head.state_dict())
    return copy.to(next(vit.parameters()).dtype).eval()


TRANSFORMERS = {"vit": tiny_vit, "mha-vit": MHAViT}
"""Transformers for the contract tests: MONAI's ViT (class token) and a user's ``nn.MultiheadAttention`` ViT
(sequence-first tokens, mean-pooled, no class token)."""
