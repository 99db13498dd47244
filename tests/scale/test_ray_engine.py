"""The Ray engine on a local 2-CPU cluster: outputs identical to the single-process engine, worker loss survived."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import pytest
import ray
import torch

from medexplain.cli import main
from medexplain.cli.evaluate import _explainers
from medexplain.cli.explain import _inputs
from medexplain.data.synth import write_fundus
from medexplain.explain.store import ExplanationWriter, load_explanations
from medexplain.metrics.evaluate import evaluate_explanations
from medexplain.models import create_model, save_run
from medexplain.scale import ray_engine
from medexplain.scale.ray_engine import evaluate_with_ray, shard_folder

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
    torch.manual_seed(0)
    model_args = {"in_channels": 3, "num_classes": 5, "spatial_dims": 2}
    run = save_run(create_model("bagnet9-light", **model_args), root / "run", "bagnet9-light", model_args)
    args = ["explain", "--model", str(run), "--data", str(data), "--split", "", "--batch-size", "2", "--no-progress",
            "--method", ",".join(METHODS)]  # fmt: skip
    assert main([*args, "--out", str(root / "local")]) == 0
    return {"root": root, "run": run, "data": data, "args": args, "local": root / "local"}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_ray_engine_resumes_survives_a_killed_worker_and_writes_the_local_bytes_once(
    setup, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "ray"
    shutil.copytree(setup["local"], out)  # an interrupted earlier run: some maps are missing
    stored = load_explanations(out)
    missing = {(item.id, method) for item in stored.items for method in METHODS if item.index >= 3}
    missing.add((stored.items[0].id, "gradcam"))
    for item in stored.items:
        for method in METHODS:
            if (item.id, method) in missing:
                item.maps[method].unlink()

    writes: dict[tuple[str, str], int] = {}
    original_write = ExplanationWriter.write

    def counting_write(self, item_id, index, label, targets, method, maps):
        writes[item_id, method] = writes.get((item_id, method), 0) + 1
        original_write(self, item_id, index, label, targets, method, maps)

    killed = []

    def kill_on_third_shard(actor, shard_number: int) -> None:
        # Shard 2 goes to an actor that has finished a shard, so it is running: Ray ignores a kill that reaches a
        # worker before its actor is created there, and that worker would keep its CPU from the replacement.
        if shard_number == 2 and not killed:  # its shard is in flight: the actor is lost for good
            ray.kill(actor, no_restart=True)
            killed.append(actor)

    reports = []
    original_run_shards = ray_engine.run_shards

    def run_shards_with_fault(*args, **kwargs):
        reports.append(original_run_shards(*args, **{**kwargs, "on_dispatch": kill_on_third_shard}))
        return reports[-1]

    monkeypatch.setattr(ExplanationWriter, "write", counting_write)
    monkeypatch.setattr(ray_engine, "run_shards", run_shards_with_fault)
    assert main([*setup["args"], "--out", str(out), "--engine", "ray", "--workers", "2"]) == 0
    assert killed and reports[0].resubmitted >= 1
    assert reports[0].shards == 4  # batches (0, 1) (2, 3) (4, 5) (6), each with a missing map
    assert writes == dict.fromkeys(missing, 1)  # only the missing maps, each written once
    local = _files(setup["local"])
    assert len(local) == 1 + 7 * len(METHODS)  # index.json + one map per item and method
    assert _files(out) == local  # maps and index.json, byte for byte


def test_ray_evaluation_writes_the_same_tables_as_the_local_engine_and_rerun_skips_shards(
    setup, tmp_path, monkeypatch
) -> None:
    model, dataset = _inputs(setup["run"], setup["data"], None, "cpu")
    rows, _, curves = evaluate_explanations(load_explanations(setup["local"]), dataset, METRICS, model=model,
                                            batch_size=3, progress=False)  # fmt: skip
    out = tmp_path / "ray"
    inputs = partial(_inputs, setup["run"], setup["data"], None, "cpu")
    fingerprint = {"model": str(setup["run"]), "data": str(setup["data"]), "split": None, "device": "cpu"}
    first = evaluate_with_ray(setup["local"], inputs, out, METRICS, fingerprint, make_explainers=_explainers,
                              batch_size=3, workers=2, progress=False)  # fmt: skip
    assert first.report.shards == 6  # 7 items = 3 batches of 3 per method, one shard each
    assert first.evaluation.rows == rows
    assert len(list(shard_folder(out).iterdir())) == 6

    def no_work(*args, **kwargs):
        raise AssertionError("a kept shard was computed again")

    monkeypatch.setattr(ray_engine, "run_shards", no_work)  # the CLI re-run below must find every shard kept
    args = ["evaluate", "--explanations", str(setup["local"]), "--data", str(setup["data"]), "--model",
            str(setup["run"]), "--metrics", ",".join(METRICS), "--batch-size", "3", "--resamples", "50",
            "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(out), "--engine", "ray", "--workers", "2"]) == 0
    for name in ("per_sample.csv", "summary.csv"):  # per-sample rows and the bootstrap summary, byte for byte
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    local, scaled = (json.loads((folder / "summary.json").read_text()) for folder in (tmp_path / "local", out))
    assert scaled["summary"] == local["summary"] and scaled["curves"].keys() == local["curves"].keys() == set(METHODS)
    assert local["curves"] == curves  # the library's one-pass curves, bit for bit
    for method, curves in local["curves"].items():  # mean curves: summed per shard, equal up to rounding
        torch.testing.assert_close(torch.tensor(scaled["curves"][method]["deletion"]),
                                   torch.tensor(curves["deletion"]), rtol=0, atol=1e-12)  # fmt: skip
    assert not shard_folder(out).exists()  # kept shards are removed once the output is complete
