"""The Ray engine on a local 2-CPU cluster: outputs identical to the single-process engine, worker loss survived."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import ray
import torch

from medexplain.cli import main
from medexplain.data.synth import write_fundus
from medexplain.files import LOCK_FILE
from medexplain.models import create_model, load_run, save_run
from medexplain.scale import ray_engine
from medexplain.scale.ray_engine import RayExecutor
from medexplain.workflows import evaluate as evaluate_workflow
from medexplain.workflows.evaluate import evaluate_explanations, evaluate_run
from medexplain.workflows.explain import explain_run
from medexplain.workflows.explanations import ExplanationWriter, load_explanations

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
    """Every file of ``folder`` but the (empty) lock file that runs hold."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}  # fmt: skip


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

    monkeypatch.setattr(ExplanationWriter, "write", counting_write)
    executor = RayExecutor(workers=2, on_dispatch=kill_on_third_shard)
    explain_run(setup["run"], setup["data"], METHODS, out, split=None, batch_size=2, executor=executor, progress=False)
    assert killed and executor.report.resubmitted >= 1
    assert executor.report.shards == 4  # batches (0, 1) (2, 3) (4, 5) (6), each with a missing map
    assert writes == dict.fromkeys(missing, 1)  # only the missing maps, each written once
    local = _files(setup["local"])
    assert len(local) == 1 + 7 * len(METHODS)  # index.json + one map per item and method
    assert _files(out) == local  # maps and index.json, byte for byte


def test_ray_evaluation_writes_the_same_tables_as_the_local_engine_and_rerun_skips_batches(
    setup, tmp_path, monkeypatch
) -> None:
    model, _config, dataset = load_run(setup["run"], setup["data"], None)
    rows, _, _, curves, _ = evaluate_explanations(load_explanations(setup["local"]), dataset, METRICS, model=model,
                                               batch_size=3, progress=False)  # fmt: skip
    out = tmp_path / "ray"
    executor = RayExecutor(workers=2)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the run were killed once every batch is scored, before the tables

    with monkeypatch.context() as patch:
        patch.setattr(evaluate_workflow, "write_scores", killed)
        with pytest.raises(KeyboardInterrupt):
            evaluate_run(setup["local"], setup["data"], out, model=setup["run"], metrics=METRICS, batch_size=3,
                         executor=executor, progress=False)  # fmt: skip
    assert executor.report.shards == 6  # 7 items = 3 batches of 3 per method, one shard each
    kept = out.parent / f".{out.name}.shards"
    assert len(list(kept.iterdir())) == 6 and not out.exists()

    def no_work(*args, **kwargs):
        raise AssertionError("a kept batch was computed again")

    monkeypatch.setattr(ray_engine, "run_shards", no_work)  # the CLI re-run below must find every batch kept
    args = ["evaluate", "--explanations", str(setup["local"]), "--data", str(setup["data"]), "--model",
            str(setup["run"]), "--metrics", ",".join(METRICS), "--batch-size", "3", "--resamples", "50",
            "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(out), "--engine", "ray", "--workers", "2"]) == 0
    for name in ("per_sample.csv", "summary.csv", "summary.json"):  # byte for byte, mean curves included
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    local = json.loads((tmp_path / "local" / "summary.json").read_text())
    assert local["curves"] == curves and set(curves) == set(METHODS)  # the library's one-pass curves, bit for bit
    assert [row["score"] for row in rows] == [float(r.split(",")[-1] or "nan")
                                             for r in (out / "per_sample.csv").read_text().splitlines()[1:]]
    assert not kept.exists()  # kept batches are removed once the output is complete
