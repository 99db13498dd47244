"""Deletion AUC of the IDRiD and CXR-TB audits' maps (issue 23). Those two audits were run with localisation
metrics only; this scores every map they stored (each method, the baselines, each method on the randomised model)
with the deletion AUC on the same images and the same class (the metric's defaults: 20 steps, black fill,
the class probability), without re-explaining anything, and compares each method with the random map and the
centre blob on the same images (mean paired difference, 95 % bootstrap over images; negative: deletes faster).

The audits are run first when their folders are missing (``benchmarks/audit_idrid.py`` and
``benchmarks/audit_cxr_tb.py`` with the same size, seeds and work folders; finished parts are reused).

    python benchmarks/audit_deletion.py [--tables idrid,cxr-tb] [--size default] [--seeds 0,1,2]
        [--work-idrid DIR] [--work-cxr-tb DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import audit_cxr_tb
import audit_idrid
from _headline import RESAMPLES, cell
from audit_idrid import paired
from medexplain.files import read_json
from medexplain.metrics.summary import bootstrap_interval
from medexplain.workflows.audit import audit_scores
from medexplain.workflows.evaluate import evaluate_run

METRIC = "deletion-auc"
TABLES = {"idrid": audit_idrid, "cxr-tb": audit_cxr_tb}
REFERENCES = ("baseline-random", "baseline-centre")


def score_deletion(audit: Path, device: str, seed: int) -> dict[str, dict[str, float]]:
    """``{map: {image id: deletion AUC}}`` of every map stored in the audit folder ``audit`` (written once to
    ``audit/deletion/``, reused), the randomised model's maps named with :data:`RANDOM_MODEL` appended."""
    header = read_json(audit / "explanations" / "index.json", format_prefix="medexplain-explanations/")
    for part, scores in (("explanations", "scores"), ("randomised", "scores-randomised")):
        out = audit / "deletion" / scores
        if (audit / part).is_dir() and not (out / "summary.json").is_file():  # the trained model deletes
            evaluate_run(audit / part, header["data"], out, model=header["model"], metrics=[METRIC], batch_size=16,
                         resamples=RESAMPLES, seed=seed, device=device, overwrite=True, progress=False)  # fmt: skip
    return audit_scores(audit / "deletion")[METRIC]


def audits_of(table: str, work: Path, seed: int) -> dict[str, Path]:
    """``{model name: audit folder}`` of one seed's audit(s) of ``table`` in ``work``."""
    return {path.name.removeprefix("audit-").removesuffix(f"-seed{seed}"): path
            for path in sorted(work.glob(f"audit-*-seed{seed}")) if (path / "verdict.json").is_file()}  # fmt: skip


def rows_of(scores: dict[str, dict[str, float]], methods: list[str], seed: int) -> list[dict[str, Any]]:
    """Per map: its mean deletion AUC with interval; per method also the paired differences to the references."""
    rows = []
    for name, per_image in scores.items():
        values = [v for v in per_image.values() if v == v]
        row = {"map": name, "deletion": bootstrap_interval(values, resamples=RESAMPLES, seed=seed), "n": len(values)}
        if name in methods:
            table = {METRIC: scores}
            row.update({f"- {ref}": paired(table, name, ref, METRIC, seed) for ref in REFERENCES})
        rows.append(row)
    return rows


def markdown(table: str, seed: int, model: str, rows: list[dict[str, Any]], seconds: float) -> list[str]:
    lines = [f"**{table}, seed {seed}, {model}** ({rows[0]['n']} images; scored in {seconds:.0f} s)", "",
             "| map | deletion AUC | method - random map | method - centre blob |", "|---|---|---|---|"]  # fmt: skip
    for row in rows:
        differences = [cell(row.get(f"- {ref}"), 3) if f"- {ref}" in row else "" for ref in REFERENCES]
        lines.append(f"| {row['map']} | {cell(row['deletion'], 3)} | " + " | ".join(differences) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="idrid,cxr-tb")
    parser.add_argument("--size", default="default")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work-idrid", type=Path, default=None)
    parser.add_argument("--work-cxr-tb", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    lines = []
    for table in args.tables.split(","):
        module = TABLES[table]
        work = getattr(args, f"work_{table.replace('-', '_')}") or Path("runs") / f"audit-{table}" / args.size
        for seed in (int(s) for s in args.seeds.split(",")):
            found = audits_of(table, work, seed)
            if not found:
                module.run_seed(args.size, module.PRESETS[args.size], seed, args.device, work)
                found = audits_of(table, work, seed)
            for model, folder in found.items():
                methods = read_json(folder / "verdict.json")["ranking"]
                started = time.perf_counter()
                scores = score_deletion(folder, args.device, seed)
                lines += markdown(table, seed, model, rows_of(scores, methods, seed), time.perf_counter() - started)
    command = f"python benchmarks/audit_deletion.py --tables {args.tables} --size {args.size} --seeds {args.seeds}"
    print("\n".join([*lines, "Command:", "", f"    {command}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
