"""Placeholders for the block classes Zennit's ResNet canonizer names; never instantiated by our tests."""

from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision stub: BasicBlock is not available in medexplain tests")


class Bottleneck(BasicBlock):
    pass
