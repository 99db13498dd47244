"""Do a 3D ViT's explanations find the lesion? Pointing game on synthetic lesion volumes, against baselines.

A small 3D ViT (MONAI's, 16^3 volumes in 4-voxel patches: 64 tokens, 2 blocks of width 32, 2 heads) is trained per
seed on ``medexplain.data.synth.blobs`` (noise volumes; class 1 holds one bright ball of radius 2.5 voxels at a
random position) and explained on the lesion volumes of a separate test set (target: the lesion class). A map
"points" at the lesion when its maximum lies inside the ball (``medexplain.metrics.pointing_game``, no tolerance);
its mask AUROC ranks all voxels. Baselines (registered explainers): a centred Gaussian prior (``baseline-centre``,
the map a model that always looks at the middle would give) and uniform noise (``baseline-random``). For AttnLRP
and CP-LRP, "sum / logit" is the input relevance over the explained logit: how much the biases, position
embeddings, class token (and for AttnLRP the softmax) absorb in a trained model. Intervals: 95 % bootstrap over
the pooled test lesions of all seeds.

    python benchmarks/vit_lesions_3d.py [--seeds 5] [--epochs 15]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from medexplain.data.synth import blobs
from medexplain.explain import create_explainer
from medexplain.metrics import mask_auroc, pointing_game
from medexplain.metrics.summary import bootstrap_interval
from medexplain.models import create_model

SIZE, PATCH, TRAIN, TEST = 16, 4, 320, 64
METHODS = ("attnlrp", "cp-lrp", "attention-rollout", "attention-gradient", "gradcam", "saliency")
BASELINES = ("baseline-centre", "baseline-random")


def train_on_blobs(seed: int, epochs: int = 15) -> torch.nn.Module:
    """The small 3D ViT trained on ``TRAIN`` blob volumes of ``seed`` (AdamW 3e-3, batch 32); eval mode."""
    data = blobs(TRAIN, 3, SIZE, seed)
    x, y = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    torch.manual_seed(seed)
    model = create_model("vit", in_channels=1, num_classes=2, spatial_dims=3, img_size=SIZE, patch_size=PATCH,
                         hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2)  # fmt: skip
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 32):
            batch = order[start : start + 32]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def lesion_volumes(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The lesion volumes of the test set of ``seed`` (drawn with another seed than training) and their masks."""
    data = blobs(TEST, 3, SIZE, seed + 1000)
    lesion = data.labels == 1
    return torch.from_numpy(data.images[lesion]), torch.from_numpy(data.masks[lesion])


def scores(model: torch.nn.Module, seed: int, methods=METHODS) -> dict[str, dict[str, np.ndarray]]:
    """Per method and baseline: pointing game and mask AUROC of every test lesion of ``seed``; for the LRP methods
    also the input relevance over the explained logit (1 where relevance is conserved; biases absorb some)."""
    volumes, masks = lesion_volumes(seed)
    result = {}
    for name in (*methods, *BASELINES):
        explanation = create_explainer(name)(model, volumes, 1)
        maps = explanation.maps[:, 0]
        result[name] = _localisation(maps, masks)
        if name.endswith("lrp"):
            result[name]["sum / logit"] = (maps.flatten(1).sum(1) / explanation.logits[:, 1]).numpy()
    return result


def _localisation(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, np.ndarray]:
    return {"pointing game": pointing_game(maps, masks).numpy(), "mask AUROC": mask_auroc(maps, masks).numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.process_time()
    pooled: dict[str, dict[str, list[float]]] = {}
    accuracies = []
    for seed in range(args.seeds):
        model = train_on_blobs(seed, args.epochs)
        data = blobs(TEST, 3, SIZE, seed + 1000)
        with torch.no_grad():
            accuracies.append(float((model(torch.from_numpy(data.images)).argmax(1).numpy() == data.labels).mean()))
        for name, values in scores(model, seed).items():
            for metric, v in values.items():
                pooled.setdefault(name, {}).setdefault(metric, []).extend(v.tolist())
    print(f"{args.seeds} seeds x {TEST // 2} test lesions, {args.epochs} epochs; test accuracy per seed "
          f"{', '.join(f'{a:.3f}' for a in accuracies)}; {time.process_time() - started:.0f} s CPU, 1 thread")
    columns = ("pointing game", "mask AUROC", "sum / logit")
    print("| map | " + " | ".join(columns) + " |\n|---|---|---|---|")
    for name, metrics in pooled.items():
        cells = []
        for metric in columns:
            if metric not in metrics:
                cells.append("-")
                continue
            values = [v for v in metrics[metric] if v == v]
            estimate, low, high = bootstrap_interval(values, resamples=1000, seed=0)
            refused = len(metrics[metric]) - len(values)
            cells.append(f"{estimate:.3f} [{low:.3f}, {high:.3f}]" + (f" ({refused} constant maps left out)"
                                                                       if refused else ""))  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
