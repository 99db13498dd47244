from . import resnet

__all__ = ["resnet"]
