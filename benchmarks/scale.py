"""Scale-out throughput: explain + evaluate on 1, 2, 4 Ray workers (local cluster), training on 1 vs 2 processes.

    .venv/bin/python benchmarks/scale.py [--items 48] [--workers 1,2,4] [--epochs 2]

Explain (gradcam, saliency) and evaluate (deletion-auc, entropy) run on a synthetic fundus set with an untrained
BagNet-9-light, through the single-process engine and through the Ray engine (local cluster with as many CPUs as
the largest worker count); wall times include the actors' start (each loads torch and the model once). Training
runs ``medexplain.train.train`` in one process and as a 2-process gloo job (same global batch). Prints a table of
seconds and ratios to the single-process engine.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

METHODS = ["gradcam", "saliency"]
METRICS = ["deletion-auc", "entropy"]


def _explain_evaluate(run: Path, data: Path, work: Path, engine: str, workers: int | None) -> float:
    from medexplain.cli import main

    started = time.perf_counter()
    common = ["--data", str(data), "--split", "", "--batch-size", "4", "--no-progress"]
    extra = ["--engine", engine] + (["--workers", str(workers)] if workers else [])
    explanations, scores = work / f"maps-{engine}-{workers}", work / f"scores-{engine}-{workers}"
    assert main(["explain", "--model", str(run), "--method", ",".join(METHODS), "--out", str(explanations),
                 *common, *extra]) == 0  # fmt: skip
    assert main(["evaluate", "--explanations", str(explanations), "--model", str(run), "--metrics", ",".join(METRICS),
                 "--out", str(scores), "--resamples", "200", *common[:2], *common[4:], *extra]) == 0  # fmt: skip
    return time.perf_counter() - started


def _rank(rank: int, world: int, port: int, data: Path, out: Path, epochs: int) -> None:
    import torch.distributed as dist

    from medexplain.train import TrainConfig, train

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    try:
        train(TrainConfig("bagnet9-light", epochs=epochs, batch_size=16, seed=0), data, out, device="cpu",
              progress=False)  # fmt: skip
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(data: Path, out: Path, world: int, epochs: int) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    mp.spawn(_rank, args=(world, port, data, out, epochs), nprocs=world, join=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--epochs", type=int, default=2)
    options = parser.parse_args()
    counts = [int(w) for w in options.workers.split(",")]
    torch.set_num_threads(1)

    import ray

    from medexplain.data.synth import write_fundus
    from medexplain.models import create_model, save_run

    with tempfile.TemporaryDirectory(prefix="medexplain-scale-") as folder:
        work = Path(folder)
        data = write_fundus(work / "data", options.items, 48, seed=0, show_progress=False)
        torch.manual_seed(0)
        model_args = {"in_channels": 3, "num_classes": 5, "spatial_dims": 2}
        run = save_run(create_model("bagnet9-light", **model_args), work / "run", "bagnet9-light", model_args)

        rows = [("explain+evaluate", "local engine, 1 process", _explain_evaluate(run, data, work, "local", None))]
        ray.init(num_cpus=max(counts), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            for count in counts:
                rows.append(("explain+evaluate", f"ray, {count} worker(s)", _explain_evaluate(run, data, work, "ray",
                                                                                             count)))  # fmt: skip
        finally:
            ray.shutdown()
        train_data = write_fundus(work / "train-data", 64, 48, seed=1, show_progress=False)
        for world in (1, 2):
            rows.append(("train", f"{world} process(es), gloo", _train(train_data, work / f"train-{world}", world,
                                                                       options.epochs)))  # fmt: skip

    base = {"explain+evaluate": rows[0][2], "train": next(s for t, _, s in rows if t == "train")}
    print(f"| task | engine | seconds | speed-up vs 1 process |  (items={options.items}, cpus={os.cpu_count()})")
    print("|---|---|---:|---:|")
    for task, engine, seconds in rows:
        print(f"| {task} | {engine} | {seconds:.1f} | {base[task] / seconds:.2f}x |")
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
