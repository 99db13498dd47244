"""The BUSI audit benchmark (issues 21, 23) at its smoke size, on real BUSI images: a plain-PyTorch MONAI DenseNet
audited through the command line, run as ``medexplain benchmark busi-audit --size smoke``. Its printed audit
command reproduces its verdict, its tables have the format recorded in RESULTS.md, and the TorchScript export
explains identically with every method that needs no named layer while the layer-bound methods are refused, not
silently changed."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from medexplain.cli import main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import audit_busi  # noqa: E402

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
    recorded = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    section = recorded[recorded.index("<!-- audit:busi -->") : recorded.index("<!-- /audit:busi -->")]
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
