"""The LRP engine: one forward pass with rule hooks, one backward pass per explained target.

During the forward pass (inside a :class:`~medexplain.explain.hooks.Hooks` block, so nothing stays on the
model) the output of every layer with a rule is replaced by the same values produced by a small autograd
node whose backward applies the rule; the layer's own backward is then never run. A BatchNorm whose input is
exactly the output of such a layer is folded into it (canonisation without copying the model; the folded and
derived weights are cached across calls until the parameters change, see :mod:`medexplain.explain.lrp.layers`).
Everything else propagates the modified gradient ``c`` with its ordinary gradient (see
:mod:`medexplain.explain.lrp.rules`), so residual additions split relevance in proportion to the summands and
concatenations split it by channel, in any plain-torch model, without a graph tracer.

What Zennit needs canonizers for, this engine does from the data flow: BatchNorm folding wherever a BatchNorm
consumes a convolution's output (Zennit: only in registration order), residual additions written as ``a + b``
(Zennit: only through its ``Sum`` module), functional pooling such as ``x.mean((2, 3))`` (Zennit: plain
gradient, an even split), and modules called more than once per forward pass (Zennit keeps one state per
module). Known differences, by design: relevance is ``t * c`` for every tensor ``t``, so an exactly zero
input of an unfolded BatchNorm receives none (Zennit passes the BatchNorm's bias share on to it); and
element-wise activations written as functions (``F.silu``) propagate their gradient, not the pass rule
(modules such as ``nn.SiLU`` get the pass rule; ReLU, in any form, is exact either way).

Transformers: a composite may give non-affine modules a :class:`~medexplain.explain.lrp.transformer.ModuleRule`
(LayerNorm) and say how relevance crosses attention (``Composite.attention``, applied by the attention taps of
:mod:`medexplain.explain.transformer`); see :mod:`medexplain.explain.lrp.transformer` for AttnLRP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.hooks import Hooks
from medexplain.explain.lrp.composites import Composite
from medexplain.explain.lrp.layers import BATCHNORM_TYPES, Affine, foldable
from medexplain.explain.lrp.rules import Rule, stabilize
from medexplain.explain.lrp.transformer import ModuleRule
from medexplain.explain.targets import ResolvedTarget, Target, resolve_target
from medexplain.explain.transformer import attention_modules, tap_attention

PASS_TYPES: tuple[type[nn.Module], ...] = (
    nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh,
    nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU, nn.PReLU, nn.LogSigmoid, nn.Softsign,
)
"""Element-wise activations through which relevance passes unchanged (ReLU needs no hook: its gradient
already does that)."""


@dataclass
class _Step:
    """What the backward node of one layer needs."""

    rule: Rule
    layer: Affine
    inputs: Tensor
    output: Tensor
    sink: list[Tensor]


RULE_CHUNK_BYTES = 16 * 2**20
"""A layer whose output is larger than its input and than this applies its rule to a few output channels at a
time (see :func:`_output_chunks`)."""


def _output_chunks(layer: Affine, x: Tensor, y: Tensor) -> list[tuple[int, int]]:
    """``(first channel, channel count)`` of the output channels the rule takes at a time.

    A rule builds a few temporaries shaped like the layer's output; every rule's input relevance is a sum over
    output channels, so where the output is much larger than the input (a 3D ResNet stem: 64 channels at an
    eighth of the input's voxels, 8x the input) the rule runs on groups of channels whose outputs are about
    the size of the input (at least :data:`RULE_CHUNK_BYTES`), and their input relevances are added up.
    """
    channels = y.shape[layer.channel_dim(y)]
    limit = max(x.numel() * x.element_size(), RULE_CHUNK_BYTES)
    size = y.numel() * y.element_size()
    if size <= limit or layer.groups != 1:
        return [(0, channels)]
    per_chunk = max(1, channels * limit // size)
    return [(start, min(per_chunk, channels - start)) for start in range(0, channels, per_chunk)]


class _RuleNode(torch.autograd.Function):
    """The layer's output, whose backward applies the rule.

    The node returns a second handle on the output's storage, not ``step.output`` itself: the returned tensor
    refers to the node (its ``grad_fn``), so keeping it in the node would form a reference cycle that holds the
    layer's input and output after the call until the garbage collector runs.
    """

    @staticmethod
    def forward(ctx, inputs: Tensor, step: _Step) -> Tensor:  # type: ignore[override]
        ctx.step = step
        return step.output.detach()

    @staticmethod
    def backward(ctx, c: Tensor) -> tuple[Tensor | None, None]:  # type: ignore[override]
        step: _Step = ctx.step
        layer, x, y = step.layer, step.inputs.detach(), step.output
        chunks = _output_chunks(layer, x, y)
        if len(chunks) == 1:
            result = step.rule.backward(layer, x, y, c)
        else:
            dim = layer.channel_dim(y)
            result = None
            for start, length in chunks:
                part = step.rule.backward(
                    layer.output_channels(start, length), x, y.narrow(dim, start, length),
                    c.narrow(dim, start, length),
                )
                result = part if result is None else result.add_(part)
        if step.rule.returns_relevance:
            step.sink.append(result)
            return None, None
        return result, None


class _PassNode(torch.autograd.Function):
    """Relevance unchanged through an element-wise module: ``c_in = c * y / stab(x)``.

    The output travels inside a list rather than as an argument, so that autograd does not treat it as an input
    returned as-is (a view that a following in-place ReLU could not modify); the node keeps another handle on it
    (see :class:`_RuleNode`).
    """

    @staticmethod
    def forward(ctx, inputs: Tensor, holder: list[Tensor]) -> Tensor:  # type: ignore[override]
        ctx.inputs, ctx.output = inputs.detach(), holder[0].detach()
        return holder[0]

    @staticmethod
    def backward(ctx, c: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return c * ctx.output / stabilize(ctx.inputs, 1e-12), None


@dataclass
class _Tracker:
    """Forward-pass bookkeeping: which tensors are outputs of rule layers (for BatchNorm folding)."""

    inputs: Tensor
    produced: dict[int, tuple[Tensor, _Step, int]] = field(default_factory=dict)
    sink: list[Tensor] = field(default_factory=list)

    def apply_rule(self, rule: Rule, layer: Affine, inputs: Tensor, output: Tensor) -> Tensor:
        if rule.returns_relevance and inputs is not self.inputs:
            name = type(layer.module).__name__
            raise MedexplainError(
                f"{type(rule).__name__} rule on the first {name} needs that layer to take the model input directly"
            )
        step = _Step(rule, layer, inputs, output.detach(), self.sink)
        result = _RuleNode.apply(inputs, step)
        self.produced[id(result)] = (result, step, result._version)
        return result

    def rule_hook(self, rule: Rule):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
            return self.apply_rule(rule, Affine.of(module), args[0], output)

        return hook

    def batchnorm_hook(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        source = self.produced.get(id(args[0]))
        # the very tensor a rule layer produced, not modified in place since (e.g. by ReLU(inplace=True))
        unchanged = source is not None and source[0] is args[0] and source[2] == args[0]._version
        if unchanged and foldable(source[1].layer, module):
            step = source[1]
            del self.produced[id(args[0])]  # the unfolded output is not needed: free it once the BatchNorm is done
            return self.apply_rule(step.rule, step.layer.fold(module), step.inputs, output)
        return _PassNode.apply(args[0], [output.detach()])

    def pass_hook(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return _PassNode.apply(args[0], [output.detach()])


def _install(hooks: Hooks, model: nn.Module, composite: Composite, tracker: _Tracker) -> list[Tensor]:
    """Register the composite's rules on ``hooks``; returns the list the attention taps fill (empty without)."""
    for module, rule in composite.rules(model).items():
        hooks.forward(module, rule.hook if isinstance(rule, ModuleRule) else tracker.rule_hook(rule))
    for module in model.modules():
        if isinstance(module, BATCHNORM_TYPES):
            hooks.forward(module, tracker.batchnorm_hook)
        elif isinstance(module, PASS_TYPES):
            hooks.forward(module, tracker.pass_hook)
    if composite.attention is not None and attention_modules(model):
        return tap_attention(hooks, model, composite.attention)
    return []


def lrp_relevance(
    model: nn.Module, x: Tensor, target: Target | ResolvedTarget, composite: Composite
) -> tuple[Tensor, Tensor, ResolvedTarget]:
    """Input relevance of each explained score under ``composite``.

    The relevance of the output is the explained score itself (the logit for a class index target), so for
    conservative rules the input relevance sums to it.

    Args:
        model: classifier returning ``(B, C)`` logits; never modified (hooks are removed on exit).
        x: ``(B, C_in, *spatial)`` input.
        target: what to explain.
        composite: the rules (see :mod:`medexplain.explain.lrp.composites`).

    Returns:
        ``(relevance (B, K, C_in, *spatial), logits (B, C), resolved target)``.
    """
    if isinstance(model, torch.jit.ScriptModule):
        # its submodules are opaque script modules: no rule would apply and the result would be gradient x input
        raise MedexplainError(
            "LRP needs the model's layers as Python modules (its rules hook convolution and linear layers); "
            "a TorchScript model hides them: load its architecture and state dict"
        )
    inputs = x.detach().requires_grad_(True)
    tracker = _Tracker(inputs)
    with Hooks() as hooks, torch.enable_grad():
        _install(hooks, model, composite, tracker)
        logits = model(inputs)
        tracker.produced.clear()
        resolved = resolve_target(logits, target)
        scores = resolved.scores(logits)
        relevances = []
        for k in range(scores.shape[1]):
            tracker.sink.clear()
            grad = torch.autograd.grad(
                scores[:, k].sum(), inputs, retain_graph=k < scores.shape[1] - 1, allow_unused=True
            )[0]
            relevance = inputs.detach() * grad if grad is not None else torch.zeros_like(inputs)
            for first_layer in tracker.sink:
                relevance = relevance + first_layer
            relevances.append(relevance)
    return torch.stack(relevances, dim=1), logits.detach(), resolved


def attention_relevance(
    model: nn.Module, x: Tensor, target: Target | ResolvedTarget, composite: Composite
) -> list[list[Tensor]]:
    """The relevance ``A * c_A`` of the attention probabilities of every attention call under ``composite``
    (whose ``attention`` rule must let relevance reach them, e.g. AttnLRP's ``"uniform"``).

    Returns:
        ``[k][call]``: per explained target, per attention call in call order, ``(B, H, N_q, N_k)``.
    """
    inputs = x.detach().requires_grad_(True)
    tracker = _Tracker(inputs)
    with Hooks() as hooks, torch.enable_grad():
        attentions = _install(hooks, model, composite, tracker)
        logits = model(inputs)
        tracker.produced.clear()
        scores = resolve_target(logits, target).scores(logits)
        if not attentions or not all(a.requires_grad for a in attentions):
            raise MedexplainError("no attention probabilities carry relevance under this composite")
        result = []
        for k in range(scores.shape[1]):
            grads = torch.autograd.grad(scores[:, k].sum(), attentions, retain_graph=k < scores.shape[1] - 1)
            result.append([a.detach() * g for a, g in zip(attentions, grads, strict=True)])
    return result
