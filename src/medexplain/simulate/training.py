"""Training a simulator against a frozen classifier (Liu et al., IPMI 2021, objective of section 2).

For each image ``x`` and a random direction ``d``: ``x' = G(x, d)``, ``x'' = G(x', -d)`` and

    loss = hinge(F(x), F(x'), d, margin) + cycle_weight * ||x'' - x||^2
           + smoothness_weight * |grad u_forward|_1 + cycle_smoothness_weight * |grad u_backward|_1
           [+ magnitude_weight * ReLU(|u_forward| - magnitude_bound)] [+ displacement_weight * |u_forward|]

(means over the batch and the voxels; ``|u|`` is the Euclidean length of a displacement in voxels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from medexplain.errors import MedexplainError
from medexplain.progress import progress_bar
from medexplain.simulate.losses import (
    cycle_loss,
    disease_logit,
    displacement_loss,
    frozen,
    hinge_loss,
    magnitude_loss,
    smoothness_loss,
)
from medexplain.simulate.network import Simulator, SimulatorConfig


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings; loss weights default to the paper's (smoothness 0.04, cycle field 0.01).

    ``displacement_weight`` (0: off) weights the minimal-change penalty :func:`~medexplain.simulate.displacement_loss`,
    which is not in the paper: it keeps the deformation where the classifier is sensitive (see the simulator section
    of benchmarks/RESULTS.md; 0.5 with margin 5 in the 3D benchmark).
    """

    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 3e-4
    margin: float = 10.0
    cycle_weight: float = 1.0
    smoothness_weight: float = 0.04
    cycle_smoothness_weight: float = 0.01
    magnitude_bound: float | None = None
    magnitude_weight: float = 1.0
    displacement_weight: float = 0.0
    disease_class: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0 or self.margin < 0
                or self.displacement_weight < 0):
            raise MedexplainError(f"invalid simulator training settings {self}")

    def to_dict(self) -> dict:
        return asdict(self)


def image_of(item: object) -> Tensor:
    """The image ``(C, *spatial)`` of a dataset item: a tensor, a tuple ``(image, ...)`` or a ``Sample``."""
    if isinstance(item, Tensor):
        return item
    if isinstance(item, (tuple, list)):
        return item[0]
    return item.image  # type: ignore[attr-defined]


def _stack_images(items: list[object]) -> Tensor:
    return torch.stack([image_of(item) for item in items])


def simulator_loss(
    simulator: Simulator, classifier: Callable[[Tensor], Tensor], image: Tensor, direction: Tensor,
    settings: TrainingConfig,
) -> tuple[Tensor, dict[str, float]]:
    """The training objective for one batch ``image (B, C, *spatial)``, ``direction (B,)`` and its parts."""
    forward = simulator.simulate(image, direction)
    backward = simulator.simulate(forward.image, -direction)
    original_logit = disease_logit(classifier(image), settings.disease_class).detach()
    simulated_logit = disease_logit(classifier(forward.image), settings.disease_class)
    parts = {
        "hinge": hinge_loss(original_logit, simulated_logit, direction, settings.margin),
        "cycle": settings.cycle_weight * cycle_loss(image, forward.displacement, backward.displacement),
        "smoothness": settings.smoothness_weight * smoothness_loss(forward.displacement),
        "cycle_smoothness": settings.cycle_smoothness_weight * smoothness_loss(backward.displacement),
    }
    if settings.magnitude_bound is not None:
        parts["magnitude"] = settings.magnitude_weight * magnitude_loss(forward.displacement, settings.magnitude_bound)
    if settings.displacement_weight:
        parts["displacement"] = settings.displacement_weight * displacement_loss(forward.displacement)
    total = sum(parts.values())
    logs = {name: float(value.detach()) for name, value in parts.items()}
    logs["logit_shift"] = float(((simulated_logit - original_logit) * direction).mean().detach())
    return total, logs


def train_simulator(
    classifier: nn.Module,
    data: Dataset,
    config: SimulatorConfig,
    settings: TrainingConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[Simulator, list[dict[str, float]]]:
    """Train a :class:`Simulator` to explain ``classifier``; returns it (eval mode) and per-epoch mean losses.

    ``data`` yields images ``(C, *spatial)`` (tensors, tuples or ``medexplain.data.Sample``) already in the
    classifier's input space. The classifier is never modified (see :func:`~medexplain.simulate.frozen`).
    Each image gets a random direction per step, so both directions are learnt by the one network.
    """
    settings = settings or TrainingConfig()
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    simulator = Simulator(config).to(device)
    optimizer = torch.optim.Adam(simulator.parameters(), lr=settings.learning_rate)
    loader = DataLoader(data, batch_size=settings.batch_size, shuffle=True, generator=generator,
                        collate_fn=_stack_images, drop_last=len(data) > settings.batch_size)
    history: list[dict[str, float]] = []
    with frozen(classifier), progress_bar(progress, transient=True) as bar:
        task = bar.add_task("simulator", total=settings.epochs * len(loader))
        for epoch in range(settings.epochs):
            simulator.train()
            sums: dict[str, float] = {}
            for images in loader:
                images = images.to(device)
                direction = torch.randint(0, 2, (images.shape[0],), generator=generator).to(device) * 2.0 - 1.0
                loss, logs = simulator_loss(simulator, classifier, images, direction, settings)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for name, value in {"loss": float(loss.detach()), **logs}.items():
                    sums[name] = sums.get(name, 0.0) + value
                bar.update(task, advance=1, description=f"simulator epoch {epoch + 1} loss {float(loss.detach()):.3f}")
            history.append({"epoch": epoch + 1, **{k: v / len(loader) for k, v in sums.items()}})
    return simulator.eval(), history
