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
