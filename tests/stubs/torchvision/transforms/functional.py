"""Placeholder for functions imported at module level by reference libraries."""


def resize(*args, **kwargs):
    raise RuntimeError("torchvision stub: transforms.functional.resize is not available in medexplain tests")
