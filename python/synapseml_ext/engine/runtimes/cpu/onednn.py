"""bf16 linear layers on oneDNN with weights packed once at load, GELU fused into its matmul.

``F.linear`` in bf16 re-lays-out the weight on every call and runs the feed-forward GELU as
a separate pass over a 4x-wide activation. PyTorch's CPU build ships the oneDNN ops that its
own compiler (inductor) uses for both: a weight reordered once into oneDNN's blocked layout
and a linear with a GELU post-op. Measured on a 2-core Zen 4 (avx512_bf16), one thread,
all-MiniLM-L6-v2 in bf16: +7% rows/s on ~177-token rows (packing alone about +5%), +4% on
~96-token rows (tools/bench/cpu_onednn.py, docs/cpu-precision.md). These are steps inductor
takes too, without its compile (27 s per worker, measured).

These are private ops (``torch.ops.mkldnn``), so each rewrite is checked on a random input
against the layer it replaces, and anything that does not run or does not match is left as
it was: the model then runs as before, never differently.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

log = logging.getLogger("synapseml_ext.engine")

# "0" runs the plain layers: to compare the two, or to rule this step out when diagnosing.
SWITCH_ENV = "SYNAPSEML_EXT_ONEDNN_PACK"

# Per-row cosine a rewritten layer must reach against the original on a random bf16 input.
# bf16 rounding of the same sums gives >= 0.9999; a wrong rewrite gives far less.
_MATCH = 0.999


class PackedLinear(nn.Module):
    """``nn.Linear`` (+ optional GELU) as one oneDNN call on a weight packed at load."""

    def __init__(self, linear: nn.Linear, gelu: str | None = None) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, None))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())
        # oneDNN post-op names: "gelu" with algorithm "none" (erf) or "tanh"; "none" = no post-op
        self.post_op, self.algorithm = ("gelu", gelu) if gelu else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.ops.mkldnn._linear_pointwise(flat, self.packed_weight, self.bias,
                                               self.post_op, [], self.algorithm)
        return y.reshape(*x.shape[:-1], self.out_features)


class _LinearThenAct(nn.Module):
    """The reference a fused layer is checked against: the original linear, then the act."""

    def __init__(self, linear: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.linear, self.act = linear, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


def pack_bf16_linears(module: nn.Module) -> int:
    """Rewrite the bf16 ``nn.Linear`` layers of ``module`` in place as :class:`PackedLinear`,
    fusing a feed-forward GELU where the model has one; returns how many were rewritten
    (0 where this PyTorch lacks the ops, or with ``SYNAPSEML_EXT_ONEDNN_PACK=0``)."""
    if os.environ.get(SWITCH_ENV) == "0":
        return 0
    if not (hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()):
        return 0
    rewritten = 0
    with torch.inference_mode():
        for parent in list(module.modules()):
            rewritten += _fuse_intermediate(parent)
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and child.weight.dtype == torch.bfloat16:
                    packed = _checked(child, lambda c=child: PackedLinear(c), child.in_features)
                    if packed is not None:
                        setattr(parent, name, packed)
                        rewritten += 1
    return rewritten


def _fuse_intermediate(parent: nn.Module) -> int:
    """transformers' ``*Intermediate`` blocks (BERT, RoBERTa, XLM-R, MPNet, ...) compute
    ``intermediate_act_fn(dense(x))``: one oneDNN call when the act is a GELU."""
    dense = getattr(parent, "dense", None)
    act = getattr(parent, "intermediate_act_fn", None)
    algorithm = _gelu_algorithm(act)
    if not (type(parent).__name__.endswith("Intermediate") and isinstance(dense, nn.Linear)
            and dense.weight.dtype == torch.bfloat16 and isinstance(act, nn.Module)
            and algorithm is not None):
        return 0
    fused = _checked(_LinearThenAct(dense, act), lambda: PackedLinear(dense, gelu=algorithm),
                     dense.in_features)
    if fused is None:
        return 0
    parent.dense, parent.intermediate_act_fn = fused, nn.Identity()
    return 1


def _gelu_algorithm(act: object) -> str | None:
    """oneDNN's algorithm for an activation that is exactly GELU (erf: "none", tanh: "tanh")."""
    if isinstance(act, nn.GELU):
        return {"none": "none", "tanh": "tanh"}.get(act.approximate)
    # transformers.activations.GELUActivation with its default C implementation
    if type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is nn.functional.gelu:
        return "none"
    return None


def _checked(original: nn.Module, build, in_features: int) -> nn.Module | None:
    """``build()`` when it runs and matches ``original`` on a random input, else ``None``."""
    try:
        candidate = build()
        x = torch.randn(3, 5, in_features, dtype=torch.bfloat16)
        want, got = original(x).float().flatten(0, 1), candidate(x).float().flatten(0, 1)
        cosine = nn.functional.cosine_similarity(want, got, dim=-1).min().item()
    except Exception as error:  # a PyTorch whose private ops differ: keep the layer as it was
        log.debug("oneDNN packing skipped: %s: %s", type(error).__name__, error)
        return None
    if not cosine >= _MATCH:
        log.debug("oneDNN packing skipped: cosine %.6f to the original layer", cosine)
        return None
    return candidate

