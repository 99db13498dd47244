"""BagNet: a ResNet-50-like network whose every output position sees one q x q input patch (2D) or q^3 (3D).

Brendel & Bethge, "Approximating CNNs with Bag-of-local-Features models works surprisingly well on ImageNet",
ICLR 2019. Most 3x3 convolutions of ResNet-50 become 1x1 and no convolution is padded, so the features at
position ``i`` depend only on the input patch ``[8 i, 8 i + q)`` along every axis. Which residual stages
keep a 3x3 convolution in their first block sets ``q``: stages 1-2 (q = 9), 1-3 (q = 17), 1-4 (q = 33).

The class evidence head is a 1x1 convolution ``E = W f + b`` giving ``(B, K, *spatial)``; the logits are its
spatial mean, so the map *is* the decision (Djoumessi et al., "Sparse Activations for Interpretable Disease
Grading", MIDL 2023). Sparsity of ``E`` is a property of the training loss (``medexplain.train.losses``).

``E = b + L`` splits into the per-class bias ``b`` (the prior, the same at every position) and the local
evidence ``L = W f`` computed from each patch. With ``evidence_activation="relu"`` the local evidence is
``relu(W f) >= 0``: a patch can only add evidence for a class, and an image without findings is classified by
the prior alone, which lets the local evidence be exactly zero almost everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.models.layers import batch_norm, check_input, conv, crop, init_weights

# Number of residual stages whose first block keeps a 3x3 convolution, for each patch size q.
STAGES_WITH_3X3 = {9: 2, 17: 3, 33: 4}
STAGE_STRIDES = (2, 2, 2, 1)
EXPANSION = 4


class BagNetBottleneck(nn.Module):
    """1x1 -> kxk (unpadded, strided) -> 1x1 bottleneck; the identity is cropped to the centre of each patch."""

    def __init__(self, in_channels: int, planes: int, *, kernel_size: int, stride: int, spatial_dims: int) -> None:
        super().__init__()
        conv_nd, norm = conv(spatial_dims), batch_norm(spatial_dims)
        out_channels = planes * EXPANSION
        self.kernel_size = kernel_size
        self.conv1 = conv_nd(in_channels, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = conv_nd(planes, planes, kernel_size, stride=stride, padding=0, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = conv_nd(planes, out_channels, 1, bias=False)
        self.bn3 = norm(out_channels)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                conv_nd(in_channels, out_channels, 1, stride=stride, bias=False), norm(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        # Output position i covers inputs [s i, s i + k); its centre s i + (k - 1) / 2 carries the identity.
        identity = crop(x, (self.kernel_size - 1) // 2, x.shape[2:])
        if self.downsample is not None:
            identity = self.downsample(identity)
        identity = crop(identity, 0, out.shape[2:])
        return self.relu(out + identity)


class BagNet(nn.Module):
    """Bag-of-local-features classifier with a class evidence map.

    Args:
        patch_size: receptive field q of every evidence position: 9, 17 or 33.
        in_channels: image channels C.
        num_classes: classes K.
        spatial_dims: 2 for ``(B, C, H, W)`` images, 3 for ``(B, C, D, H, W)`` volumes.
        width: channels of the stem and of the first stage's bottleneck (64 in the paper); stage ``s``
            outputs ``width * 2**s * 4`` channels.
        blocks: bottleneck blocks per stage ((3, 4, 6, 3) in the paper, as ResNet-50).
        evidence_activation: ``"linear"`` (``L = W f``, as published) or ``"relu"`` (``L = relu(W f)``).

    ``evidence_map(x)`` is ``(B, K, *spatial')`` with ``spatial' = floor((n - q) / 8) + 1`` per axis and
    ``forward(x) == evidence_map(x).mean(spatial)`` exactly. Position ``i`` sees input ``[8 i, 8 i + q)``.
    """

    patch_stride = 8

    def __init__(
        self,
        patch_size: int,
        *,
        in_channels: int = 3,
        num_classes: int = 2,
        spatial_dims: int = 2,
        width: int = 64,
        blocks: Sequence[int] = (3, 4, 6, 3),
        evidence_activation: str = "linear",
    ) -> None:
        super().__init__()
        if patch_size not in STAGES_WITH_3X3:
            raise MedexplainError(f"patch_size must be one of {sorted(STAGES_WITH_3X3)}, got {patch_size}")
        if len(blocks) != 4 or min(blocks) < 1 or width < 1:
            raise MedexplainError(f"blocks must be 4 positive counts and width positive, got {blocks}, {width}")
        if evidence_activation not in ("linear", "relu"):
            raise MedexplainError(f"evidence_activation must be 'linear' or 'relu', got {evidence_activation!r}")
        conv_nd, norm = conv(spatial_dims), batch_norm(spatial_dims)
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.evidence_activation = evidence_activation
        self.conv1 = conv_nd(in_channels, width, 1, bias=False)
        self.conv2 = conv_nd(width, width, 3, padding=0, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU()
        channels = width
        stages = []
        for index, (count, stride) in enumerate(zip(blocks, STAGE_STRIDES, strict=True)):
            planes = width * 2**index
            kernel = 3 if index < STAGES_WITH_3X3[patch_size] else 1
            stage = []
            for block in range(count):
                first = block == 0
                stage.append(
                    BagNetBottleneck(
                        channels,
                        planes,
                        kernel_size=kernel if first else 1,
                        stride=stride if first else 1,
                        spatial_dims=spatial_dims,
                    )
                )
                channels = planes * EXPANSION
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        init_weights(self)
        self.num_features = channels
        self.evidence = conv_nd(channels, num_classes, 1, bias=False)
        self.class_bias = nn.Parameter(torch.zeros(num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Local features ``(B, F, *spatial')``, each position computed from one q-sized patch."""
        check_input(x, self.in_channels, self.spatial_dims, self.patch_size)
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def local_evidence(self, x: Tensor) -> Tensor:
        """``L``: the evidence of each patch without the class bias, ``(B, K, *spatial')``."""
        local = self.evidence(self.features(x))
        return local.relu() if self.evidence_activation == "relu" else local

    def evidence_map(self, x: Tensor) -> Tensor:
        """Class evidence ``E = b + L``, ``(B, K, *spatial')``, for ``x`` of shape ``(B, C, *spatial)``."""
        local = self.local_evidence(x)
        return local + self.class_bias.view(1, -1, *[1] * self.spatial_dims)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K)``: the spatial mean of :meth:`evidence_map`."""
        return self.evidence_map(x).flatten(2).mean(2)


class FlipAveraged(nn.Module):
    """Test-time flip augmentation that keeps the model an evidence model: ``E'(x) = mean_f f(E(f(x)))``.

    ``f`` runs over every combination of flips of the given spatial ``axes`` (``2**len(axes)`` maps, the identity
    included); each map of a flipped input is flipped back before averaging, so ``E'`` is again a class evidence
    map ``(B, K, *spatial')`` whose spatial mean is the logits, and ``forward(x)`` equals the mean of the flipped
    inputs' logits. Flipped-back positions align exactly with the unflipped ones when ``(n - q)`` is a multiple
    of the stride 8 along each flipped axis of length ``n`` (e.g. n = 33, 41, 49, 57 for q = 9 or 17); otherwise
    they are shifted by ``(n - q) mod 8`` input pixels. The wrapped model's ``patch_size`` and ``patch_stride``
    are passed through, so the ``evidence`` explainer places the averaged map on the unflipped patches' centres.

    Args:
        model: a model with ``evidence_map(x) -> (B, K, *spatial')`` (a :class:`BagNet`).
        axes: spatial axes to flip (0 = the first spatial axis), e.g. ``(0, 1)`` for both axes of an image.
    """

    def __init__(self, model: nn.Module, axes: Sequence[int]) -> None:
        super().__init__()
        if not hasattr(model, "evidence_map"):
            raise MedexplainError(f"{type(model).__name__} has no evidence map to average over flips")
        spatial_dims = getattr(model, "spatial_dims", 2)
        if not axes or len(set(axes)) != len(axes) or not all(0 <= a < spatial_dims for a in axes):
            raise MedexplainError(f"flip axes must be distinct spatial axes in 0..{spatial_dims - 1}, got {list(axes)}")
        self.model = model
        self.axes = tuple(int(a) for a in axes)

    @property
    def class_bias(self) -> Tensor:
        """The wrapped model's per-class bias ``(K,)`` (flips leave it unchanged)."""
        return self.model.class_bias

    @property
    def patch_size(self) -> int:
        """The wrapped model's patch size q, so explainers place the averaged evidence on the patch centres."""
        return self.model.patch_size

    @property
    def patch_stride(self) -> int:
        """The wrapped model's evidence stride (8 for the BagNets)."""
        return self.model.patch_stride

    def evidence_map(self, x: Tensor) -> Tensor:
        """Mean of the flipped-back evidence maps of all flipped copies of ``x``, ``(B, K, *spatial')``."""
        total = None
        for count in range(2 ** len(self.axes)):
            dims = [2 + axis for bit, axis in enumerate(self.axes) if count >> bit & 1]
            evidence = self.model.evidence_map(x.flip(dims) if dims else x)
            evidence = evidence.flip(dims) if dims else evidence
            total = evidence if total is None else total + evidence
        return total / 2 ** len(self.axes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K)``: the spatial mean of :meth:`evidence_map`."""
        return self.evidence_map(x).flatten(2).mean(2)
