"""Linear layers y = x Wᵀ + b whose CPU matrix products run on oneDNN.

PyTorch sends a float32 CPU matmul to MKL's sgemm. On CPUs where MKL does not take its AVX-512 path
(AMD's, for one) that runs at about half the speed of oneDNN, the library PyTorch bundles as
``mkldnn``: 103–110 GFLOP/s against 185–231 GFLOP/s at one thread on this project's machine at the
shapes of a VAE (``python benchmarks/cpu_kernels.py``). Both compute IEEE float32 products; only the
summation order differs, so results agree to float32 rounding, not bit for bit.

:class:`Linear` is ``nn.Linear`` (same parameters, same state dict) whose forward calls
:func:`linear`, which on the CPU computes

* float32 inputs: the product in float32 on oneDNN, forward and backward;
* float32 inputs inside :func:`bfloat16_products` (how ``--precision bf16`` trains on the CPU) or
  ``torch.autocast("cpu", dtype=torch.bfloat16)``: x, W and b rounded to bfloat16, the product
  accumulated in float32 by oneDNN's bf16 kernels and rounded once to bfloat16, y returned in
  float32 (the master weights and every other operation stay float32); the backward rounds the
  incoming gradient to bfloat16 the same way and returns float32 gradients. Unlike autocast,
  :func:`bfloat16_products` changes nothing but these products, so the rest of the step pays no
  casts;
* bfloat16 inputs: the product in bfloat16 on oneDNN.

``activation="tanh"`` or ``"relu"`` applies the activation inside oneDNN's kernel (a float32
product only; otherwise after it): y = σ(x Wᵀ + b) in one pass over the output, the backward
using σ'(·) from y (1 - y², or y > 0). :class:`vaekit.models.networks.MLP` fuses its layers so.

Everything else (float64, float16, other devices, empty tensors, PyTorch builds without oneDNN)
goes to ``torch.nn.functional.linear`` unchanged. ``VAEKIT_CPU_MATMUL=torch`` in the environment,
or :func:`set_cpu_matmul` ``("torch")``, sends every product to PyTorch's own path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vaekit.errors import ConfigError

__all__ = ["Linear", "linear", "cpu_matmul", "set_cpu_matmul", "use_cpu_matmul", "bfloat16_products",
           "CPU_MATMULS", "FUSED_ACTIVATIONS"]

#: "onednn": CPU products of float32/bfloat16 on oneDNN; "torch": ``F.linear`` everywhere.
CPU_MATMULS = ("onednn", "torch")


#: Activations :func:`linear` can apply inside oneDNN's kernel, and the modules that compute them.
FUSED_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
_ACTIVATION_FUNCTIONS = {"tanh": torch.tanh, "relu": torch.relu}


def _onednn_op() -> Any:
    try:
        op = torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None
    return op if torch.backends.mkldnn.is_available() else None


_OP = _onednn_op()


def _initial_choice() -> str:
    name = os.environ.get("VAEKIT_CPU_MATMUL", "onednn").strip().lower() or "onednn"
    if name not in CPU_MATMULS:
        raise ConfigError(f"VAEKIT_CPU_MATMUL: unknown {name!r}; choose one of {list(CPU_MATMULS)}")
    return name


_choice = _initial_choice()
_bfloat16 = False     # inside bfloat16_products()


def cpu_matmul() -> str:
    """The CPU matrix-product path in use: "onednn" (when this PyTorch has oneDNN) or "torch"."""
    return _choice if _OP is not None else "torch"


def set_cpu_matmul(name: str) -> str:
    """Choose the CPU matrix-product path ("onednn" or "torch"); returns the previous choice."""
    global _choice
    if name not in CPU_MATMULS:
        raise ConfigError(f"cpu matmul: unknown {name!r}; choose one of {list(CPU_MATMULS)}")
    previous, _choice = _choice, name
    return previous


@contextlib.contextmanager
def use_cpu_matmul(name: str) -> Iterator[None]:
    """Context manager: :func:`set_cpu_matmul` ``(name)`` inside, the previous choice restored after."""
    previous = set_cpu_matmul(name)
    try:
        yield
    finally:
        set_cpu_matmul(previous)


@contextlib.contextmanager
def bfloat16_products(enabled: bool = True) -> Iterator[None]:
    """Context manager: inside, :func:`linear` computes float32 CPU products in bfloat16 (float32
    accumulation and output); ``enabled=False`` is a no-op. Nothing else changes."""
    global _bfloat16
    previous, _bfloat16 = _bfloat16, _bfloat16 or enabled
    try:
        yield
    finally:
        _bfloat16 = previous


def _mm(a: Tensor, b_rows: Tensor, bias: Tensor | None = None, activation: str = "none") -> Tensor:
    """σ(a @ b_rowsᵀ + bias) on oneDNN: a (M, K), b_rows (N, K) -> (M, N), in a's dtype."""
    return _OP(a, b_rows, bias, activation, [], "")


class _OneDNNLinear(torch.autograd.Function):
    """y = σ(x Wᵀ + b) for 2-D float32 x on oneDNN's float32 kernels, forward and backward; σ =
    ``activation`` ("tanh", "relu") fused into the forward kernel, or None.

    The weight gradient gᵀx reads both operands transposed; oneDNN runs it faster on contiguous
    copies of gᵀ and xᵀ than on the transposed views (the copies are small: batch × width)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None) -> Tensor:
        with torch.autocast("cpu", enabled=False):
            y = _mm(x, weight, bias, activation or "none")
        ctx.save_for_backward(x, weight, y if activation else None)
        ctx.has_bias = bias is not None
        ctx.activation = activation
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, weight, y = ctx.saved_tensors
        with torch.autocast("cpu", enabled=False):
            if ctx.activation == "tanh":
                grad = torch.ops.aten.tanh_backward(grad, y)
            elif ctx.activation == "relu":
                grad = torch.ops.aten.threshold_backward(grad, y, 0)
            g = grad.contiguous()
            gx = _mm(g, weight.t()) if ctx.needs_input_grad[0] else None                       # g W
            gw = _mm(g.t().contiguous(), x.t().contiguous()) if ctx.needs_input_grad[1] else None  # gᵀ x
            gb = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def _compute_dtype(x: Tensor, weight: Tensor) -> torch.dtype | None:
    """The dtype oneDNN should compute x Wᵀ in, or None to leave the product to PyTorch."""
    if (_choice != "onednn" or _OP is None or x.device.type != "cpu" or weight.device.type != "cpu"
            or x.numel() == 0 or weight.numel() == 0 or x.dtype != weight.dtype):
        return None
    if x.dtype == torch.bfloat16:
        return torch.bfloat16
    if x.dtype != torch.float32:
        return None
    if _bfloat16:
        return torch.bfloat16
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    return torch.float32


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None) -> Tensor:
    """σ(x Wᵀ + b) for x (..., in_features), W (out_features, in_features), b (out_features,) or None,
    σ = ``activation`` (a key of :data:`FUSED_ACTIVATIONS`) or the identity (None); on oneDNN where
    the module docstring says, else ``torch.nn.functional.linear`` then σ."""
    if activation is not None and activation not in FUSED_ACTIVATIONS:
        raise ConfigError(f"linear: activation {activation!r} cannot be fused; "
                          f"choose one of {sorted(FUSED_ACTIVATIONS)}")
    dtype = _compute_dtype(x, weight)
    if dtype is None or x.shape[-1] != weight.shape[-1]:
        y = F.linear(x, weight, bias)
        return y if activation is None else _ACTIVATION_FUNCTIONS[activation](y)
    if dtype == torch.bfloat16:
        # aten's bfloat16 products already run on oneDNN, backward included (no custom function)
        y = F.linear(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)).to(x.dtype)
        return y if activation is None else _ACTIVATION_FUNCTIONS[activation](y)
    lead = x.shape[:-1]
    y = _OneDNNLinear.apply(x.reshape(-1, x.shape[-1]).contiguous(), weight.contiguous(), bias, activation)
    return y.reshape(*lead, weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (the same parameters and state dict) computed by :func:`linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
