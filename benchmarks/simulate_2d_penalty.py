"""Does the minimal-change penalty shorten the simulator's fields in 2D? Mean |u| per classifier and simulator seed.

The 2D acceptance test's set-up (``tests/simulate/test_simulate_acceptance.py``: 224 synthetic 48 px brains,
its small CNN, 5 simulator epochs, margin 5, bound 1.5) for several classifier seeds (``torch.manual_seed`` before
the classifier is trained), simulator seeds and penalty weights; prints flip rate, AUROC of ``-d log det J``
against the atrophy mask and mean displacement length per direction. One torch thread.

    .venv/bin/python benchmarks/simulate_2d_penalty.py --classifier-seeds 0,1,2 --simulator-seeds 0,1 --weights 0,0.5,2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from medexplain.data import load_dataset
from medexplain.data.synth import write_deformation
from medexplain.data.transforms import ScaleIntensity
from medexplain.simulate import SimulatorConfig, TrainingConfig, train_simulator
from medexplain.simulate.apply import apply_simulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "simulate"))
from test_simulate_acceptance import fit, small_cnn


def numbers(text: str, kind: type) -> list:
    return [kind(value) for value in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier-seeds", default="0,1,2")
    parser.add_argument("--simulator-seeds", default="0,1")
    parser.add_argument("--weights", default="0,0.5,2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_deformation(Path(tmp) / "data", 224, 2, 48, seed=0, show_progress=False)
        scale = ScaleIntensity((0, 255))
        train = load_dataset(data, "train", transform=scale)
        test = load_dataset(data, "test", transform=scale)
        images = torch.stack([train[i].image for i in range(len(train))])
        config = SimulatorConfig(spatial_dims=2, in_channels=1, channels=(8, 16, 32))
        plain = TrainingConfig(epochs=5, batch_size=16, learning_rate=1e-3, margin=5.0, magnitude_bound=1.5)
        print("| classifier seed | simulator seed | weight | flip inject / remove | AUROC inject / remove "
              "| mean abs u inject / remove |")
        print("|---|---|---|---|---|---|")
        for classifier_seed in numbers(args.classifier_seeds, int):
            torch.manual_seed(classifier_seed)
            classifier = fit(small_cnn(), images, train.labels)
            for simulator_seed in numbers(args.simulator_seeds, int):
                for weight in numbers(args.weights, float):
                    settings = replace(plain, displacement_weight=weight, seed=simulator_seed)
                    simulator, _ = train_simulator(classifier, TensorDataset(images), config, settings, progress=False)
                    runs = [
                        apply_simulator(simulator, classifier, test, direction,
                                        Path(tmp) / f"{classifier_seed}_{simulator_seed}_{weight}_{direction}",
                                        progress=False)
                        for direction in ("inject", "remove")
                    ]  # fmt: skip
                    cells = [" / ".join(f"{run[key]:.3f}" for run in runs)
                             for key in ("flip_rate", "auroc_atrophy", "mean_displacement")]  # fmt: skip
                    row = [str(classifier_seed), str(simulator_seed), str(weight), *cells]
                    print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
