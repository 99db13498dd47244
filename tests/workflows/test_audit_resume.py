"""An audit killed (SIGKILL: no clean-up, no exception handler) while explaining, then again while scoring, and
run again with the same arguments, skips what was finished and writes the same verdict, scores and maps as an
audit that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.workflows.test_audit import write_lesions

SCRIPT = textwrap.dedent('''
    """Audit with one method of the caller's that kills its own process when told to (argv: data run out when)."""
    import os, signal, sys
    from dataclasses import dataclass, field
    from pathlib import Path

    import torch
    from medexplain.explain import Explanation
    from medexplain.explain.targets import resolve_target
    from medexplain.workflows.audit import AuditSettings, audit_run

    data, run, out, when = sys.argv[1:5]
    calls = Path(out).parent / (Path(out).name + ".calls")


    scoring_calls = []


    @dataclass(frozen=True)
    class Brightness:
        """A map of the image's own intensity; logs each call, and kills the process at the moment ``when``:
        ``explaining`` once a batch of maps is written; ``scoring`` at its third call while the maps are scored,
        the first of its second batch (the sanity metric calls it once per re-drawn layer, two layers)."""

        name: str = field(default="brightness", init=False)

        def __call__(self, model, x, target=None):
            with calls.open("a") as log:
                log.write("call\\n")
            explaining = (Path(out) / "explanations" / ".progress.json").is_file()
            scoring = (Path(out) / "randomised" / "index.json").is_file()
            scoring_calls.extend([None] * scoring)
            if (when == "explaining" and explaining) or (when == "scoring" and len(scoring_calls) == 3):
                os.kill(os.getpid(), signal.SIGKILL)
            with torch.no_grad():
                logits = model(x)
            resolved = resolve_target(logits, target)
            return Explanation(x[:, :1].abs(), resolved.indices.cpu(), self.name, {}, logits)


    settings = AuditSettings(methods=("saliency",), metrics=("pointing-game", "mask-auroc", "deletion-auc",
                             "model-randomisation"), metric_params={"model-randomisation": {"layers": 2}},
                             resamples=100)
    audit_run(run, data, out, settings=settings, explainers={"brightness": Brightness()}, batch_size=4,
              progress=False)
''')


def _audit(tmp: Path, data: Path, run: Path, out: Path, when: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(tmp / "audit.py"), str(data), str(run), str(out), when], env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_killed_audit_resumes_to_the_same_output(tmp_path: Path) -> None:
    import torch

    from medexplain.models import create_model, save_run

    (tmp_path / "audit.py").write_text(SCRIPT)
    data = write_lesions(tmp_path / "data", n_train=4, n_test=16)
    torch.manual_seed(0)
    args = {"in_channels": 1, "num_classes": 2, "width": 4, "small_input": True}
    run = save_run(create_model("resnet18", **args), tmp_path / "run", "resnet18", args)

    reference = _audit(tmp_path, data, run, tmp_path / "reference", "never")
    assert reference.returncode == 0, reference.stderr
    killed = tmp_path / "killed"
    first = _audit(tmp_path, data, run, killed, "explaining")
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert (killed / "explanations" / ".progress.json").is_file() and not (killed / "verdict.json").exists()
    second = _audit(tmp_path, data, run, killed, "scoring")
    assert second.returncode == -signal.SIGKILL, second.stderr
    assert not (killed / "verdict.json").exists() and not (killed / "scores").exists()
    assert (killed / "explanations" / "index.json").is_file()  # explaining finished in the second run
    written = {p: p.stat().st_mtime_ns for p in (killed / "explanations").rglob("*.npy")}
    final = _audit(tmp_path, data, run, killed, "never")
    assert final.returncode == 0, final.stderr

    assert {p: p.stat().st_mtime_ns for p in written} == written  # finished maps were not computed again
    calls = {name: len((tmp_path / f"{name}.calls").read_text().splitlines()) for name in ("reference", "killed")}
    # what the three runs did more than one: two probes of the methods, and the two calls that were killed
    assert calls["killed"] == calls["reference"] + 4, calls
    verdicts = [json.loads((folder / "verdict.json").read_text()) for folder in (tmp_path / "reference", killed)]
    for document in verdicts:
        document.pop("data"), document.pop("model")
    assert verdicts[0] == verdicts[1] and set(verdicts[0]["ranking"]) == {"brightness", "saliency"}
    for part in ("explanations", "scores", "scores-randomised", "randomised"):
        assert _files(tmp_path / "reference" / part) == _files(killed / part), part
    assert not list(tmp_path.glob("killed/.*shards"))  # the scoring caches are gone once the scores are written
