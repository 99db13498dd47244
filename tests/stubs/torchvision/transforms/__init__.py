"""Placeholders for names imported at module level by reference libraries."""


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"torchvision stub: {type(self).__name__} is not available in medexplain tests")


class Compose(_Unavailable):
    pass


class Normalize(_Unavailable):
    pass


class ToTensor(_Unavailable):
    pass


class Resize(_Unavailable):
    pass
