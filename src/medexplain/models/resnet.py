"""ResNet-18 for 2D images and 3D volumes (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

A plain baseline beside the BagNets. The last residual stage is ``layer4`` (the usual Grad-CAM target).
"""

from __future__ import annotations

from torch import Tensor, nn

from medexplain.models.attention import attention_block
from medexplain.models.layers import batch_norm, check_input, conv, init_weights, max_pool


class BasicBlock(nn.Module):
    """Two padded 3x3 convolutions with a (projected) identity shortcut.

    ``attention`` (``"se"`` or ``"cbam"``, :mod:`medexplain.models.attention`) gates the residual branch before
    the addition, as in SE-ResNet and CBAM-ResNet.
    """

    def __init__(
        self, in_channels: int, planes: int, *, stride: int, spatial_dims: int, attention: str | None = None
    ) -> None:
        super().__init__()
        conv_nd, norm = conv(spatial_dims), batch_norm(spatial_dims)
        self.conv1 = conv_nd(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = conv_nd(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU()
        self.attention = attention_block(attention, planes, spatial_dims)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != planes:
            self.downsample = nn.Sequential(conv_nd(in_channels, planes, 1, stride=stride, bias=False), norm(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.attention(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18, ``(B, C, *spatial) -> (B, K)`` logits.

    Args:
        small_input: a 3x3 stride-1 stem without max pooling (for 28-64 pixel inputs such as MedMNIST)
            instead of the 7x7 stride-2 stem and max pooling of the ImageNet model.
        width: channels of the first stage (64 as published); stage ``s`` has ``width * 2**s``.
        attention: ``None``, ``"se"`` or ``"cbam"``: an attention block on every residual branch.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 2,
        spatial_dims: int = 2,
        small_input: bool = False,
        width: int = 64,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        conv_nd, norm = conv(spatial_dims), batch_norm(spatial_dims)
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        if small_input:
            self.conv1 = conv_nd(in_channels, width, 3, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = conv_nd(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = max_pool(spatial_dims)(3, stride=2, padding=1)
        self.bn1 = norm(width)
        self.relu = nn.ReLU()
        channels = width
        stages = []
        for index in range(4):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            stages.append(
                nn.Sequential(
                    BasicBlock(channels, planes, stride=stride, spatial_dims=spatial_dims, attention=attention),
                    BasicBlock(planes, planes, stride=1, spatial_dims=spatial_dims, attention=attention),
                )
            )
            channels = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, self.spatial_dims)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.flatten(2).mean(2))
