"""The BUSI audit benchmark (issues 21, 23) at its smoke size, on real BUSI images: a plain-PyTorch MONAI DenseNet
audited through the command line, run as ``medexplain benchmark busi-audit --size smoke``. Its printed audit
command reproduces its verdict, its tables have the format recorded in RESULTS.md, and the TorchScript export
explains identically with every method that needs no named layer while the layer-bound methods are refused, not
silently changed."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

import audit_busi
from _headline import recorded_section
from medexplain.cli import main

LAYERLESS = {"saliency", "integrated-gradients"}  # the smoke preset's methods that need no named layer
CAM_AND_LRP = {"gradcam", "lrp-epsilon-plus-flat"}
CRITERION = re.compile(r"^((pass|fail) \(\d+/\d+\)|n/a)$")
RANDOMISATION = re.compile(r"^((pass|fail) \(-?\d\.\d\d, upper -?\d\.\d\d\)|n/a)$")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("audit-busi")
    # ``medexplain benchmark busi-audit`` runs benchmarks/audit_busi.py --size smoke --seeds 1
    assert main(["benchmark", "busi-audit", "--size", "smoke", "--seed", "1", "--work", str(work)]) == 0
    [result] = json.loads((work / "audit_busi.json").read_text())["results"]
    return work, result


def test_the_printed_audit_command_reproduces_the_verdict(smoke, tmp_path: Path) -> None:
    work, result = smoke
    command = shlex.split(result["commands"]["localisation"])
    assert command[:2] == ["medexplain", "audit"] and command[command.index("--model") + 1].endswith("card.json")
    out = Path(command[command.index("--out") + 1])
    command[command.index("--out") + 1] = str(tmp_path / "again")
    assert main(command[1:]) == 0
    first, again = (json.loads((folder / "verdict.json").read_text()) for folder in (out, tmp_path / "again"))
    assert again["verdict"] == first["verdict"] and again["baselines"] == first["baselines"]
    assert f"    {result['commands']['localisation']}" in (work / "table.md").read_text()


def test_the_tables_have_the_recorded_format(smoke) -> None:
    work, result = smoke
    table = (work / "table.md").read_text()
    section = recorded_section("audit:busi")
    headers = [line for line in table.splitlines() if line.startswith("| map |") or line.startswith("| method |")]
    assert len(headers) == 2 and all(header in section for header in headers)
    rows = {r["map"]: r for r in result["verdict_table"]}
    methods = [r["method"] for r in json.loads((work / "out-localisation-seed1" / "verdict.json").read_text())
               ["verdict"]]  # fmt: skip
    assert set(methods) == LAYERLESS | CAM_AND_LRP
    for method in methods:
        assert CRITERION.match(rows[method]["localises"]) and CRITERION.match(rows[method]["faithful"])
        assert RANDOMISATION.match(rows[method]["randomisation"]), rows[method]["randomisation"]
        assert rows[method]["shortcuts"] != "n/a"  # the audit's shortcut check ran on every method
        assert rows[f"{method} (random model)"]["localises"] == "baseline"
        assert set(result["differences"][method]) == set(audit_busi.DIFFERENCE_METRICS)
    assert {m for m in rows if m.startswith("baseline-")} == set(audit_busi.BASELINES)
    for estimate, low, high in result["accuracy"].values():
        assert 0 <= low <= estimate <= high <= 1
    assert result["images"] == {"localisation": 3, "full": 1}


def test_torchscript_maps_equal_the_state_dict_maps_and_layer_methods_are_refused(smoke) -> None:
    _, result = smoke
    compared = result["torchscript"]
    assert set(compared["max_abs_difference"]) == LAYERLESS
    assert set(compared["not_applicable"]) == CAM_AND_LRP
    assert "TorchScript model hides them" in compared["not_applicable"]["lrp-epsilon-plus-flat"]
    for method, difference in compared["max_abs_difference"].items():
        assert difference <= 1e-5 * compared["max_abs_map"][method], method


def _seed_result(seed: int, saliency: tuple[float, float], gradcam: tuple[float, float], verdict: str) -> dict:
    def row(name: str, values: tuple[float, float], criterion: str) -> dict:
        metrics = {"mask-auroc": [values[0], 0.0, 1.0], "pointing-game": [values[1], 0.0, 1.0]}
        randomisation = "fail (0.62, upper 0.70)" if criterion != "baseline" else "baseline"
        return {"map": name, "localises": criterion, "faithful": criterion, "randomisation": randomisation,
                "metrics": metrics}  # fmt: skip

    return {"seed": seed, "accuracy": {"balanced accuracy": (0.5 + seed / 10, 0, 1), "AUROC": (0.8, 0, 1)},
            "beats_every_baseline": {"saliency": ["pointing-game"]} if seed else {},
            "verdict_table": [row("gradcam", gradcam, verdict), row("saliency", saliency, verdict),
                              row("baseline-prior", (0.9, 0.3), "baseline"),
                              row("saliency (random model)", (0.1, 0.1), "baseline")]}  # fmt: skip


def test_the_seeds_summary_averages_each_map_over_seeds_and_keeps_every_seeds_verdict() -> None:
    summary = audit_busi.seeds_summary([_seed_result(0, (0.8, 0.5), (0.7, 0.25), "fail (0/5)"),
                                        _seed_result(2, (0.6, 0.75), (0.9, 0.0), "pass (1/5)")])  # fmt: skip
    lines = summary.splitlines()
    assert lines[0] == "#### 2 seeds (0, 2): mean over seeds (seed 0 / 2)"
    assert "balanced accuracy 0.500 / 0.700" in summary and "seed 0 / 2: none / saliency." in summary
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| map |")]
    assert rows == [  # gradcam first: mean mask AUROC 0.80 > saliency's 0.70; random-model maps left out
        "| gradcam | 0.80 (0.70 / 0.90) | 0.12 (0.25 / 0.00) | fail (0/5) / pass (1/5) | fail (0/5) / pass (1/5) "
        "| fail / fail |",
        "| saliency | 0.70 (0.80 / 0.60) | 0.62 (0.50 / 0.75) | fail (0/5) / pass (1/5) | fail (0/5) / pass (1/5) "
        "| fail / fail |",
        "| baseline-prior | 0.90 (0.90 / 0.90) | 0.30 (0.30 / 0.30) | - | - | - |",
    ]
