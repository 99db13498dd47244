"""Peak memory of every explainer and model-bound metric on a 3D ResNet-18, each measured in its own process.

    .venv/bin/python benchmarks/memory.py [--sizes 64,128] [--threads 1] [--methods m1,m2]

Model: ResNet-18 of ``medexplain.models`` (3D, 1 input channel, 2 classes, random weights and BatchNorm statistics,
eval mode, float32, CPU), one volume of ``size^3``. Every measurement is a fresh subprocess that imports the same
libraries (medexplain, Captum, Zennit, Quantus), builds the model and the volume, notes its resident set (the
*set-up*, ``ru_maxrss``), runs one method once and reports its peak resident set (``ru_maxrss`` again: the
high-water mark, in MiB). The *floor* is a process that runs one forward + backward to the input
(``autograd.grad`` of the target score) on the volume. Ours run at their default memory budget (``max_memory``);
peers at their defaults. Columns: ``peak / floor`` (whole process) and ``extra / floor extra`` (peak less set-up,
over the floor's; the set-up holds the libraries and the 133 MB of weights).

Method settings keep the run short while every chunked method runs more than one chunk: integrated gradients 8
steps, SmoothGrad 8 noise draws, occlusion with windows of half the volume (8 windows), deletion, insertion and
pixel flipping 8 steps, region perturbation 8 regions of 16^3, faithfulness correlation 8 runs of 224 voxels,
sensitivity 4 noisy copies, noise SSIM 2, model randomisation 4 layers (Quantus's MPRT with ``skip_layers``: it
randomises every layer and explains once). Metrics get random maps (their values do not change the memory).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import warnings
from collections.abc import Callable

import numpy as np
import torch

import _references  # noqa: F401  (torchvision stub for Zennit and Quantus)
from explainers import LRP, canonizers, randomize
from medexplain import metrics
from medexplain.explain import create_explainer
from medexplain.models import create_model

warnings.filterwarnings("ignore")
import quantus  # noqa: E402
from captum.attr import InputXGradient, IntegratedGradients, LayerGradCam, NoiseTunnel, Occlusion, Saliency  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402

STEPS, DRAWS, RUNS, SAMPLES, LAYERS = 8, 8, 8, 4, 4
EXPLAINERS = ["saliency", "input-x-gradient", "integrated-gradients", "smoothgrad", "occlusion", "gradcam",
              "gradcam++", "hirescam", "layercam", *LRP]
METRICS = ["deletion-auc", "insertion-auc", "pixel-flipping", "region-perturbation", "faithfulness-correlation",
           "max-sensitivity", "avg-sensitivity", "noise-ssim", "model-randomisation"]
PEERS = {"saliency", "input-x-gradient", "integrated-gradients", "smoothgrad", "occlusion", "gradcam", *LRP,
         "faithfulness-correlation", "region-perturbation", "pixel-flipping", "max-sensitivity", "avg-sensitivity",
         "model-randomisation"}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def explainer_params(name: str, size: int) -> dict:
    return {
        "integrated-gradients": {"steps": STEPS},
        "smoothgrad": {"samples": DRAWS},
        "occlusion": {"window": size // 2, "stride": size // 2},
        "lrp-epsilon-gamma-box": {"low": -4.0, "high": 4.0},
    }.get(name, {})


def metric_params(name: str) -> dict:
    return {
        "deletion-auc": {"steps": STEPS},
        "insertion-auc": {"steps": STEPS},
        "pixel-flipping": {"steps": STEPS},
        "region-perturbation": {"patch_size": 16, "regions": STEPS},
        "faithfulness-correlation": {"runs": RUNS, "subset_size": 224},
        "max-sensitivity": {"samples": SAMPLES},
        "avg-sensitivity": {"samples": SAMPLES},
        "noise-ssim": {"samples": 2},
        "model-randomisation": {"layers": LAYERS},
    }.get(name, {})


def ours(name: str, model, x, target, maps) -> Callable[[], object]:
    if name in metrics.available():
        extra = {"explainer": create_explainer("saliency")} if metrics.metric_info(name).category in (
            "robustness", "sanity") else {}
        return lambda: metrics.get_metric(name)(maps, model=model, x=x, target=target, **metric_params(name), **extra)
    explainer = create_explainer(name, **explainer_params(name, x.shape[-1]))
    return lambda: explainer(model, x, target)


def peer(name: str, model, x, target, maps) -> tuple[str, Callable[[], object]]:
    """The peer library's implementation of a method in :data:`PEERS` at its defaults (Captum, Zennit, Quantus)."""
    size = x.shape[-1]
    if name == "saliency":
        return "captum Saliency", lambda: Saliency(model).attribute(x, target=target, abs=True)
    if name == "input-x-gradient":
        return "captum InputXGradient", lambda: InputXGradient(model).attribute(x, target=target)
    if name == "integrated-gradients":
        return "captum IntegratedGradients", lambda: IntegratedGradients(model).attribute(x, target=target,
                                                                                          n_steps=STEPS)
    if name == "smoothgrad":
        return "captum NoiseTunnel(Saliency)", lambda: NoiseTunnel(Saliency(model)).attribute(
            x, target=target, nt_type="smoothgrad", nt_samples=DRAWS, stdevs=0.15)
    if name == "occlusion":
        window = (1, *[size // 2] * 3)
        return "captum Occlusion", lambda: Occlusion(model).attribute(x, sliding_window_shapes=window,
                                                                      strides=window, target=target)
    if name == "gradcam":
        return "captum LayerGradCam", lambda: LayerGradCam(model, model.layer4).attribute(x, target=target)
    if name in LRP:
        def zennit():
            with Gradient(model, LRP[name](canonizers())) as attributor:
                return attributor(x, lambda out: out * torch.nn.functional.one_hot(target, 2))[1]
        return f"zennit {LRP[name](None).__class__.__name__}", zennit
    kwargs = {"model": model, "x_batch": x.numpy(), "y_batch": target.numpy(), "a_batch": maps[:, None].numpy(),
              "device": "cpu", "channel_first": True}
    quiet = {"normalise": False, "disable_warnings": True}
    if name == "faithfulness-correlation":
        metric = quantus.FaithfulnessCorrelation(nr_runs=RUNS, subset_size=224, perturb_baseline=0.0,
                                                 return_aggregate=False, **quiet)
        return "quantus FaithfulnessCorrelation", lambda: metric(softmax=False, **kwargs)
    if name == "region-perturbation":
        metric = quantus.RegionPerturbation(patch_size=16, regions_evaluation=STEPS, perturb_baseline=0.0, **quiet)
        return "quantus RegionPerturbation", lambda: metric(softmax=True, **kwargs)
    if name == "pixel-flipping":
        metric = quantus.PixelFlipping(features_in_step=size**3 // STEPS, perturb_baseline=0.0, **quiet)
        return "quantus PixelFlipping", lambda: metric(softmax=True, **kwargs)
    saliency = create_explainer("saliency")

    def explain(model, inputs, targets, **_):
        inputs = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        return saliency(model, inputs, torch.as_tensor(np.asarray(targets))).maps.detach().numpy()

    if name in ("max-sensitivity", "avg-sensitivity"):
        kind = quantus.MaxSensitivity if name == "max-sensitivity" else quantus.AvgSensitivity
        metric = kind(nr_samples=SAMPLES, lower_bound=0.2, abs=False, **quiet)
        return f"quantus {kind.__name__}", lambda: metric(explain_func=explain, **kwargs)
    metric = quantus.MPRT(skip_layers=True, **quiet)
    return "quantus MPRT (skip_layers)", lambda: metric(explain_func=explain, **kwargs)


def child(kind: str, name: str, size: int, threads: int) -> dict:
    """One measurement (``kind`` ``floor``, ``ours`` or ``peer``), in this process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = randomize(create_model("resnet18", in_channels=1, num_classes=2, spatial_dims=3))
    x = torch.randn(1, 1, size, size, size, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([1])
    maps = torch.rand(1, size, size, size, generator=torch.Generator().manual_seed(2))
    if kind == "floor":
        label = "forward + backward"

        def run():
            leaf = x.clone().requires_grad_(True)
            return torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)
    elif kind == "ours":
        label, run = f"medexplain {name}", ours(name, model, x, target, maps)
    else:
        label, run = peer(name, model, x, target, maps)
    setup = peak_mib()
    try:
        run()
        error = None
    except Exception as exc:  # a peer that cannot run in 3D is a row of the table, not the end of the benchmark
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
    return {"label": label, "setup": setup, "peak": peak_mib(), "error": error}


def measure(kind: str, name: str, size: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", kind, name, str(size), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"label": kind, "setup": float("nan"), "peak": float("nan"), "error": done.stderr.strip()[-200:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cells(result: dict, floor: dict) -> list[str]:
    if result["error"]:
        return [result["label"], "-", "-", f"fails ({result['error']})"]
    ratio = result["peak"] / floor["peak"]
    extra = (result["peak"] - result["setup"]) / (floor["peak"] - floor["setup"])
    return [result["label"], f"{result['peak']:.0f}", f"{ratio:.2f}", f"{extra:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", help="comma-separated subset (default: every explainer and model-bound metric)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "NAME", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, name, size = args.child
        print(json.dumps(child(kind, name, int(size), args.threads)))
        return
    names = args.methods.split(",") if args.methods else EXPLAINERS + METRICS
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f} at the start")
    header = ["size", "method", "ours MiB", "peak / floor", "extra / floor extra",
              "peer", "peer MiB", "peer peak / floor", "peer extra / floor extra"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for size in [int(s) for s in args.sizes.split(",")]:
        floor = measure("floor", "-", size, args.threads)
        print(f"{size}^3 floor: set-up {floor['setup']:.0f} MiB, peak {floor['peak']:.0f} MiB", flush=True)
        lines.append(f"| {size}^3 | forward + backward (floor) | {floor['peak']:.0f} | 1.00 | 1.00 | | | | |")
        for name in names:
            row = cells(measure("ours", name, size, args.threads), floor)[1:]
            theirs = cells(measure("peer", name, size, args.threads), floor) if name in PEERS else ["-"] * 4
            lines.append(f"| {size}^3 | {name} | " + " | ".join(row + theirs) + " |")
            print(lines[-1], flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
