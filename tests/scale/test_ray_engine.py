"""The Ray engine on a local 2-CPU cluster: outputs identical to the single-process engine, worker loss survived."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import ray
import torch

from medexplain.cli import main
from medexplain.cli.evaluate import _explainers
from medexplain.cli.explain import _inputs
from medexplain.data import load_dataset
from medexplain.data.synth import write_fundus
from medexplain.explain.store import ExplanationWriter, load_explanations
from medexplain.metrics.evaluate import evaluate_explanations, mean_curves, summary_rows, write_results
from medexplain.models import create_model, save_weights
from medexplain.scale.ray_engine import evaluate_with_ray, explain_with_ray, forget_shards, shard_folder

METHODS = ["gradcam", "saliency"]
METRICS = ["deletion-auc", "entropy", "gini"]


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 7-image dataset, an untrained 5-class BagNet and its single-process explanations (batches of 2)."""
    root = tmp_path_factory.mktemp("scale")
    data = write_fundus(root / "data", n=7, size=48, seed=0, show_progress=False)
    run = root / "run"
    run.mkdir()
    torch.manual_seed(0)
    model_args = {"in_channels": 3, "num_classes": 5, "spatial_dims": 2}
    save_weights(create_model("bagnet9-light", **model_args), run / "model.safetensors")
    (run / "config.json").write_text(json.dumps({"model": "bagnet9-light", "model_args": model_args}))
    args = ["explain", "--model", str(run), "--data", str(data), "--split", "", "--batch-size", "2", "--no-progress",
            "--method", ",".join(METHODS)]  # fmt: skip
    assert main([*args, "--out", str(root / "local")]) == 0
    return {"root": root, "run": run, "data": data, "args": args, "local": root / "local"}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_ray_engine_writes_the_same_bytes_as_the_local_engine(setup, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    assert main([*setup["args"], "--out", str(out), "--engine", "ray", "--workers", "2"]) == 0
    local = _files(setup["local"])
    assert len(local) == 1 + 7 * len(METHODS)  # index.json + one map per item and method
    assert _files(out) == local  # maps and index.json, byte for byte


def test_killed_worker_shard_is_resubmitted_and_every_map_written_once(setup, tmp_path, monkeypatch) -> None:
    writes: dict[tuple[str, str], int] = {}
    original = ExplanationWriter.write

    def counting(self, item_id, index, label, targets, method, maps):
        writes[item_id, method] = writes.get((item_id, method), 0) + 1
        original(self, item_id, index, label, targets, method, maps)

    monkeypatch.setattr(ExplanationWriter, "write", counting)
    killed = []

    def kill_second_shard_worker(actor, shard_number: int) -> None:
        if shard_number == 1 and not killed:  # its shard is in flight: the actor is lost for good
            ray.kill(actor, no_restart=True)
            killed.append(actor)

    out = tmp_path / "ray"
    dataset = load_dataset(setup["data"])
    report = explain_with_ray(
        partial(_inputs, setup["run"], setup["data"], None, "cpu"), len(dataset), METHODS, out,
        {"model": str(setup["run"]), "data": str(setup["data"]), "split": None}, batch_size=2, workers=2,
        shard_batches=1, progress=False, on_dispatch=kill_second_shard_worker,
    )  # fmt: skip
    assert killed and report.resubmitted >= 1 and report.shards == 4
    assert writes == {(str(dataset[i].meta["id"]), m): 1 for i in range(7) for m in METHODS}
    assert _files(out) == _files(setup["local"])


def test_ray_evaluation_rows_equal_the_single_process_rows_and_rerun_skips_shards(setup, tmp_path) -> None:
    model, dataset = _inputs(setup["run"], setup["data"], None, "cpu")
    stored = load_explanations(setup["local"])
    rows, empty = evaluate_explanations(stored, dataset, METRICS, model=model, batch_size=3, progress=False)
    curves = mean_curves(stored, dataset, model, METRICS, batch_size=3)
    write_results(tmp_path / "local", rows, summary_rows(rows, resamples=50), {"curves": curves})

    out = tmp_path / "ray"
    run = partial(
        evaluate_with_ray, setup["local"], partial(_inputs, setup["run"], setup["data"], None, "cpu"), out, METRICS,
        {"model": str(setup["run"])}, make_explainers=_explainers, batch_size=3, workers=2, shard_batches=1,
        progress=False,
    )  # fmt: skip
    result = run()
    assert result.report.shards == 6  # 7 items = 3 batches of 3 per method, one shard each
    assert result.rows == rows and result.empty == empty
    for method, by_mode in curves.items():
        torch.testing.assert_close(torch.tensor(result.curves[method]["deletion"]), torch.tensor(by_mode["deletion"]),
                                   rtol=0, atol=1e-12)  # fmt: skip
    write_results(out, result.rows, summary_rows(result.rows, resamples=50), {"curves": curves})
    for name in ("per_sample.csv", "summary.csv"):
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    again = run(overwrite=True)
    assert again.report.shards == 0 and again.rows == rows  # every shard was kept: nothing is recomputed
    forget_shards(out)
    assert not shard_folder(out).exists()
