"""medexplain.explain against Captum, Zennit and pytorch-grad-cam: same model, same batch, one run, as ratios.

    .venv/bin/python benchmarks/explainers.py [--batch 16] [--size 128] [--batch3d 2] [--size3d 32]
                                              [--threads 1] [--repeats 3] [--methods m1,m2] [--device cpu]
                                              [--models resnet18,vit]

Model: ResNet-18 of ``medexplain.models`` (1 input channel, 3 classes), random weights and BatchNorm statistics,
eval mode, float32, on ``--device`` (``cpu`` or ``cuda``). Times are the best of ``--repeats`` interleaved runs:
CPU time of this process on the CPU (robust to other jobs on a shared machine), CUDA event time after
synchronising on a GPU (``_timing.timed``). Columns:
``img/s`` images per second; ``/floor`` our time over the method's cost floor (one forward pass for ``evidence`` on
the BagNets; one forward + backward to the input, ``autograd.grad`` only, for gradient, CAM and LRP methods;
``steps`` / ``samples`` times that for IG and SmoothGrad; ``windows`` forward passes for occlusion; IG, SmoothGrad
and occlusion send as many images per model call as our default memory budget allows
(``medexplain.explain.budget.inputs_per_call``), and Captum gets the same number); ``theory`` the FLOP floor of an
LRP composite over the same cost floor (see :func:`lrp_theory`), and for occlusion the convolution work of exact
cone reuse over the full passes (:func:`occlusion_theory`; 1 / theory bounds its speed-up over Captum); ``peer``
the reference implementation;
``speed-up`` = peer time / our time (Captum's IG is asked for its convergence delta, which ours always returns);
``|diff|`` = largest |ours - peer| over largest |peer| (maps compared as each library defines them;
pytorch-grad-cam's maps are min-max normalised and resized by OpenCV, so ours are normalised the same way before
comparing).
The ViT table (``vit-small`` of ``medexplain.models``: MONAI's ViT, 6 blocks of width 192, 16-pixel patches in 2D
and 8-voxel patches in 3D, random weights) has no peer (Captum and Zennit have no attention support; lxt's
efficient AttnLRP patches torchvision and Hugging Face models only): ``/floor`` is our time over one forward +
input gradient, or over one forward (``no_grad``) for attention rollout, the goals being AttnLRP <= 2x and rollout
<= 1.2x.
Zennit gets the same canonisation as ours: its SequentialMergeBatchNorm plus NamedMergeBatchNorm for the stem
(registered in a different order than it runs) and, for the residual additions, a canonizer written here that
routes each block's addition through Zennit's Sum module (as its torchvision ResNet canonizer does) and gives
the block a separate ReLU after it (Zennit mis-attributes modules that run twice per forward pass), and one
that turns the model's functional global mean into a pooling module (Zennit passes the plain gradient through
functional operations, which splits relevance evenly instead of in proportion). Ours needs none of these.
"""

from __future__ import annotations

import argparse
import itertools
import math
import types
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

import _references  # noqa: F401  (torchvision stub for Zennit and pytorch-grad-cam)
from _timing import timed
from medexplain.explain import create_explainer
from medexplain.explain.budget import inputs_per_call
from medexplain.explain.incremental import cone_evaluation
from medexplain.explain.occlusion import window_starts
from medexplain.models import create_model
from medexplain.models.resnet import BasicBlock, ResNet18

warnings.filterwarnings("ignore")
from captum.attr import InputXGradient as CaptumInputXGradient  # noqa: E402
from captum.attr import (  # noqa: E402
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from zennit import composites as zcomposites  # noqa: E402
from zennit import layer as zlayer  # noqa: E402
from zennit import rules as zrules  # noqa: E402
from zennit import types as ztypes  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import AttributeCanonizer, NamedMergeBatchNorm, SequentialMergeBatchNorm  # noqa: E402

IG_STEPS, SG_SAMPLES, WINDOW = 16, 8, 16
LRP = {
    "lrp-epsilon": lambda c: zcomposites.LayerMapComposite(
        [*zcomposites.layer_map_base(), (ztypes.Convolution, zrules.Epsilon()), (torch.nn.Linear, zrules.Epsilon())],
        canonizers=c,
    ),
    "lrp-epsilon-plus": lambda c: zcomposites.EpsilonPlus(canonizers=c),
    "lrp-epsilon-plus-flat": lambda c: zcomposites.EpsilonPlusFlat(canonizers=c),
    "lrp-alpha2-beta1": lambda c: zcomposites.EpsilonAlpha2Beta1(canonizers=c),
    "lrp-epsilon-gamma-box": lambda c: zcomposites.EpsilonGammaBox(low=-4.0, high=4.0, canonizers=c),
}


class BlockSumCanonizer(AttributeCanonizer):
    """Zennit canonizer for medexplain's BasicBlock: the residual addition through Zennit's ``Sum`` module, and a
    second ReLU module after it (the block calls ``self.relu`` twice; Zennit's hooks keep one state per module,
    so a module called twice gets the relevance of the wrong call)."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: torch.nn.Module) -> dict | None:
        if not isinstance(module, BasicBlock):
            return None

        def forward(self, x):
            out = self.attention(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
            identity = x if self.downsample is None else self.downsample(x)
            return self.canonizer_relu(self.canonizer_sum(torch.stack([out, identity], dim=-1)))

        return {
            "forward": types.MethodType(forward, module),
            "canonizer_sum": zlayer.Sum(),
            "canonizer_relu": torch.nn.ReLU(),
        }


class GlobalPoolCanonizer(AttributeCanonizer):
    """Zennit canonizer for medexplain's ResNet18 head: its functional spatial mean as an adaptive average pooling
    module, which Zennit explains with its Norm rule (a functional mean gets the plain gradient: R/N each)."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: torch.nn.Module) -> dict | None:
        if not isinstance(module, ResNet18):
            return None
        pool = (torch.nn.AdaptiveAvgPool2d if module.spatial_dims == 2 else torch.nn.AdaptiveAvgPool3d)(1)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.canonizer_pool(x).flatten(1))

        return {"forward": types.MethodType(forward, module), "canonizer_pool": pool}


def canonizers() -> list:
    return [SequentialMergeBatchNorm(), NamedMergeBatchNorm([(("conv1",), "bn1")]), BlockSumCanonizer(),
            GlobalPoolCanonizer()]


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
            module.eps = 0.0  # Zennit's merged BatchNorm keeps eps and scales by 1/sqrt(1 + eps)
    return model.eval()


def rel_diff(ours: torch.Tensor, peer: torch.Tensor) -> float:
    peer = torch.as_tensor(np.asarray(peer) if not isinstance(peer, torch.Tensor) else peer).float().cpu()
    ours = ours.float().cpu()
    return float((ours - peer.reshape(ours.shape)).abs().max() / peer.abs().max().clamp(min=1e-30))


def minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    flat = flat - flat.amin(1, keepdim=True)
    return (flat / (flat.amax(1, keepdim=True) + 1e-7)).view_as(maps)


def lrp_theory(model: torch.nn.Module, x: torch.Tensor, method: str) -> float:
    """The FLOP floor of an LRP composite over the cost floor, from each layer's multiply-adds (MACs).

    The cost floor is 2 MACs-worth per layer (its forward and its input gradient). Per layer, in units of its
    forward pass (a transposed convolution costs the same): epsilon 2 (forward, W^T); z+ 3 (forward, W+ forward,
    W+^T); alpha-beta 4 (W+ forward, W+^T and W^T: W- = W - W+ for inputs >= 0); gamma 3 where no negative
    output carries relevance (a ReLU follows: one Wu^T) else 4; on inputs of both signs, x+ and x- side by
    side double the input channels of the extra convolutions (z+ 5, alpha-beta and gamma 9: W and its
    transposes as 2x2 blocks); z^B 7 ([x, low, high] in, three maps back); flat about 1 (one unit filter).
    The first conv is the model's stem with its input of both signs; "a ReLU follows" holds for the conv1 of
    every block and the stem in medexplain's ResNet-18 (conv2 and the downsample feed the residual sum).
    """
    layers = []

    def record(name):
        def hook(module, args, output):
            macs = output.numel() * module.weight[0].numel()
            layers.append((name, isinstance(module, torch.nn.Linear), bool((args[0] >= 0).all()), macs))
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Conv3d)]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    total = floor = 0.0
    for i, (name, linear, nonneg, macs) in enumerate(layers):
        relu_follows = name.endswith("conv1")
        if linear or method == "lrp-epsilon":
            cost = 2
        elif i == 0 and method == "lrp-epsilon-plus-flat":
            cost = 1
        elif i == 0 and method == "lrp-epsilon-gamma-box":
            cost = 7
        elif method in ("lrp-epsilon-plus", "lrp-epsilon-plus-flat"):
            cost = 3 if nonneg else 5
        elif method == "lrp-alpha2-beta1":
            cost = 4 if nonneg else 9
        else:
            cost = (3 if relu_follows else 4) if nonneg else 9
        total += cost * macs
        floor += 2 * macs
    return total / floor


def occlusion_theory(model: torch.nn.Module, x: torch.Tensor, window: int) -> float:
    """Convolution multiply-adds of occlusion (``window`` = stride) when every convolution runs on the exact cone of
    its window and nothing else, over those of one full forward pass per window: the ``/floor`` of a perfect cone
    reuse with free bookkeeping. Captum runs the full passes, so ``1 / theory`` bounds the speed-up over Captum at
    equal maps (what stays is the layers that every window reaches)."""
    spatial = x.shape[2:]
    sizes = [min(window, s) for s in spatial]
    origins = itertools.product(*(window_starts(s, w, window) for s, w in zip(spatial, sizes, strict=True)))
    macs = {m: m.out_channels * m.in_channels // m.groups * math.prod(m.kernel_size)
            for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)}  # fmt: skip
    with torch.no_grad(), cone_evaluation(model, x, full_share=1.0) as (_, evaluate):
        for origin in origins:
            copies = x.clone()
            copies[(slice(None), slice(None), *(slice(o, o + w) for o, w in zip(origin, sizes, strict=True)))] = 0
            evaluate(copies, torch.arange(len(x)))
    counted = [(macs[m], positions) for m, positions in evaluate.positions.items() if m in macs]
    return sum(mac * computed for mac, (computed, _) in counted) / sum(mac * full for mac, (_, full) in counted)


def cases(model, x, target, dims):
    """``(method, ours, floor multiple, peer name, peer callable, compare(ours_maps, peer_out))``."""
    b = x.shape[0]
    per_call = inputs_per_call(model, x)  # inputs per model call of our IG, SmoothGrad and occlusion by default
    onehot = F.one_hot(target, 3)
    mode = "bilinear" if dims == 2 else "trilinear"
    windows = int(np.prod([-(-s // WINDOW) for s in x.shape[2:]]))
    saliency = Saliency(model)
    yield ("saliency", create_explainer("saliency"), 1, "captum Saliency",
           lambda: saliency.attribute(x, target=target, abs=True).amax(1))
    yield ("input-x-gradient", create_explainer("input-x-gradient"), 1, "captum InputXGradient",
           lambda: CaptumInputXGradient(model).attribute(x, target=target).sum(1))
    per_pass = max(1, per_call // b)  # noise draws / windows per model call, for both libraries
    yield ("integrated-gradients", create_explainer("integrated-gradients", steps=IG_STEPS),
           IG_STEPS, "captum IntegratedGradients",
           lambda: IntegratedGradients(model).attribute(x, target=target, n_steps=IG_STEPS,
                                                        internal_batch_size=per_call,
                                                        return_convergence_delta=True)[0].sum(1))
    yield ("smoothgrad", create_explainer("smoothgrad", samples=SG_SAMPLES), SG_SAMPLES,
           "captum NoiseTunnel(Saliency)",
           lambda: NoiseTunnel(saliency).attribute(x, target=target, nt_type="smoothgrad", nt_samples=SG_SAMPLES,
                                                   nt_samples_batch_size=per_pass, stdevs=0.15).amax(1),
           "random")
    window = (1, *[WINDOW] * dims)
    yield ("occlusion", create_explainer("occlusion", window=WINDOW, stride=WINDOW),
           ("forward", windows), "captum Occlusion",
           lambda: Occlusion(model).attribute(x, sliding_window_shapes=window, strides=window, target=target,
                                              perturbations_per_eval=per_pass).sum(1))
    layer_gradcam = LayerGradCam(model, model.layer4)
    yield ("gradcam", create_explainer("gradcam"), 1, "captum LayerGradCam",
           lambda: LayerAttribution.interpolate(
               layer_gradcam.attribute(x, target=target, relu_attributions=True), tuple(x.shape[2:]), mode)[:, 0])
    if dims == 2:
        for name, peer in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus), ("hirescam", HiResCAM),
                           ("layercam", LayerCAM)):
            cam = peer(model=model, target_layers=[model.layer4])
            targets = [ClassifierOutputTarget(int(t)) for t in target]
            yield (name, create_explainer(name), 1, f"pytorch-grad-cam {peer.__name__}",
                   lambda cam=cam, targets=targets: torch.from_numpy(cam(input_tensor=x, targets=targets)),
                   "minmax")
    for name, composite in LRP.items():
        explainer = create_explainer(name, low=-4.0, high=4.0) if name == "lrp-epsilon-gamma-box" else create_explainer(
            name
        )

        def zennit(composite=composite):
            with Gradient(model, composite(canonizers())) as attributor:
                return attributor(x, lambda out: out * onehot)[1].sum(1)

        yield (name, explainer, 1, f"zennit {composite(None).__class__.__name__}", zennit)


def cost_floors(model, x, target) -> tuple[Callable[[], None], Callable[[], None]]:
    """The two cost floors: one forward + input gradient of the explained scores, and one forward (no_grad)."""

    def floor():
        leaf = x.detach().requires_grad_(True)
        torch.autograd.grad(model(leaf).gather(1, target[:, None]).sum(), leaf)

    def forward_only():
        with torch.no_grad():
            model(x)

    return floor, forward_only


def run(model, x, repeats: int, methods: set[str] | None = None) -> list[dict]:
    dims = x.ndim - 2
    target = torch.arange(x.shape[0], device=x.device) % 3
    floor, forward_only = cost_floors(model, x, target)

    rows = []
    all_cases = [case for case in cases(model, x, target, dims) if methods is None or case[0] in methods]
    best: dict[str, float] = {"floor": float("inf"), "forward": float("inf")}
    outputs: dict[int, tuple] = {}
    for repeat in range(repeats):
        best["floor"] = min(best["floor"], timed(floor, x.device)[0])
        best["forward"] = min(best["forward"], timed(forward_only, x.device)[0])
        for i, (_, explainer, _, _, peer, *_) in enumerate(all_cases):
            if repeat % 2:  # alternate who runs first
                peer_time, peer_out = timed(peer, x.device)
            ours_time, ours = timed(lambda explainer=explainer: explainer(model, x, target), x.device)
            if not repeat % 2:
                peer_time, peer_out = timed(peer, x.device)
            previous = outputs.get(i, (float("inf"), None, float("inf"), None))
            outputs[i] = (min(previous[0], ours_time), ours.maps[:, 0], min(previous[2], peer_time), peer_out)
    for i, (name, _, floor_multiple, peer_name, _, *compare) in enumerate(all_cases):
        ours_time, ours_maps, peer_time, peer_out = outputs[i]
        if isinstance(floor_multiple, tuple):
            floor_time = best["forward"] * floor_multiple[1]
        else:
            floor_time = best["floor"] * floor_multiple
        if compare == ["random"]:
            diff = float("nan")  # different noise draws: not comparable sample by sample
        else:
            diff = rel_diff(minmax(ours_maps) if compare else ours_maps, peer_out)
        theory = lrp_theory(model, x, name) if name.startswith("lrp") else \
            occlusion_theory(model, x[:1], WINDOW) if name == "occlusion" else float("nan")  # fmt: skip
        rows.append({"dims": dims, "method": name, "img/s": x.shape[0] / ours_time, "/floor": ours_time / floor_time,
                     "theory": theory, "peer": peer_name, "peer img/s": x.shape[0] / peer_time,
                     "speed-up": peer_time / ours_time, "|diff|": diff})
    return rows


def evidence_rows(repeats: int, device: torch.device) -> list[dict]:
    """The ``evidence`` explainer of an evidence model against one forward pass (its floor: the network runs once;
    the peer is the former two-pass explainer, ``model(x)`` then ``model.evidence_map(x)``)."""
    rows = []
    for dims, name, batch, size in ((2, "sparse-bagnet17-light", 16, 128), (3, "bagnet9-light", 2, 32)):
        model = randomize(create_model(name, in_channels=1, num_classes=3, spatial_dims=dims)).to(device)
        x = torch.randn(batch, 1, *[size] * dims).to(device)
        explainer = create_explainer("evidence")

        def forward(model=model, x=x):
            with torch.no_grad():
                model(x)

        def two_passes(model=model, x=x):
            with torch.no_grad():
                model(x)
                return model.evidence_map(x)

        times = {"forward": float("inf"), "ours": float("inf"), "peer": float("inf")}
        for _ in range(repeats):
            times["forward"] = min(times["forward"], timed(forward, device)[0])
            times["ours"] = min(times["ours"], timed(lambda explainer=explainer, model=model, x=x:
                                                     explainer(model, x, "predicted"), device)[0])  # fmt: skip
            times["peer"] = min(times["peer"], timed(two_passes, device)[0])
        rows.append({"dims": dims, "method": f"evidence ({name}, {size}px)", "img/s": batch / times["ours"],
                     "/floor": times["ours"] / times["forward"], "theory": float("nan"),
                     "peer": "two passes (model + evidence_map)", "peer img/s": batch / times["peer"],
                     "speed-up": times["peer"] / times["ours"], "|diff|": float("nan")})  # fmt: skip
    return rows


VIT_METHODS = {  # method -> cost floor: "gradient" (forward + input gradient) or "forward"
    "attnlrp": "gradient", "cp-lrp": "gradient", "attention-gradient": "gradient", "gradcam": "gradient",
    "saliency": "gradient", "attention-rollout": "forward",
}  # fmt: skip


def vit_run(model, x, repeats: int, methods: set[str] | None = None) -> list[dict]:
    """Our ViT explainers over their cost floors, best of ``repeats`` interleaved runs (``_timing.timed``)."""
    target = torch.arange(x.shape[0], device=x.device) % 3
    floor, forward_only = cost_floors(model, x, target)

    chosen = [m for m in VIT_METHODS if methods is None or m in methods]
    best = dict.fromkeys(["gradient", "forward", *chosen], float("inf"))
    for _ in range(repeats):
        best["gradient"] = min(best["gradient"], timed(floor, x.device)[0])
        best["forward"] = min(best["forward"], timed(forward_only, x.device)[0])
        for name in chosen:
            explainer = create_explainer(name)
            best[name] = min(best[name], timed(lambda explainer=explainer: explainer(model, x, target), x.device)[0])
    return [{"dims": x.ndim - 2, "method": name, "img/s": x.shape[0] / best[name], "floor": VIT_METHODS[name],
             "/floor": best[name] / best[VIT_METHODS[name]]} for name in chosen]  # fmt: skip


def vit_table(args: argparse.Namespace, methods: set[str] | None, device: torch.device) -> None:
    rows = []
    for dims, batch, size, patch in ((2, args.batch, args.size, 16), (3, args.batch3d, args.size3d, 8)):
        model = create_model("vit-small", in_channels=1, num_classes=3, spatial_dims=dims, img_size=size,
                             patch_size=patch).eval().to(device)  # fmt: skip
        rows += vit_run(model, torch.randn(batch, 1, *[size] * dims, device=device), args.repeats, methods)
    header = ["dims", "method", "img/s", "floor", "/floor"]
    print(f"ViT-small, 2D batch {args.batch} x 1 x {args.size}^2 (16-px patches), 3D batch {args.batch3d} x 1 x "
          f"{args.size3d}^3 (8-voxel patches), {args.threads} thread(s), best of {args.repeats}, "
          f"{'CPU time' if device.type == 'cpu' else 'CUDA event time'}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{row[h]:.3g}" if isinstance(row[h], float) else str(row[h]) for h in header) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch3d", type=int, default=2)
    parser.add_argument("--size3d", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", help="comma-separated subset of the methods (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--models", default="resnet18,vit", help="tables to run: resnet18 and/or vit")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to this torch build")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    methods = set(args.methods.split(",")) if args.methods else None
    if "vit" in args.models.split(","):
        vit_table(args, methods, device)
    if "resnet18" not in args.models.split(","):
        return
    rows = []
    for dims, batch, size in ((2, args.batch, args.size), (3, args.batch3d, args.size3d)):
        model = randomize(create_model("resnet18", in_channels=1, num_classes=3, spatial_dims=dims)).to(device)
        x = torch.randn(batch, 1, *[size] * dims).to(device)
        rows += run(model, x, args.repeats, methods)
    if not methods or "evidence" in methods:
        rows += evidence_rows(args.repeats, device)
    header = ["dims", "method", "img/s", "/floor", "theory", "peer", "peer img/s", "speed-up", "|diff|"]
    clock = "CPU time" if device.type == "cpu" else f"CUDA event time on {torch.cuda.get_device_name(device)}"
    print(f"ResNet-18, 2D batch {args.batch} x 1 x {args.size}^2, 3D batch {args.batch3d} x 1 x {args.size3d}^3, "
          f"{args.threads} thread(s), best of {args.repeats}, {clock}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [f"{row[h]:.3g}" if isinstance(row[h], float) else str(row[h]) for h in header]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
