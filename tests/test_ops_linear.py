"""vaekit.ops.linear (products on oneDNN) and vaekit.allocator, against PyTorch's own path and float64."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaekit import VAEConfig, build_vae
from vaekit.errors import ConfigError
from vaekit.models.networks import MLP
from vaekit.ops import linear as ops
from vaekit.ops.linear import Linear, bfloat16_products, cpu_matmul, linear, use_cpu_matmul

needs_onednn = pytest.mark.skipif(cpu_matmul() != "onednn", reason="this PyTorch has no oneDNN")
ACTIVATIONS = {None: lambda t: t, "tanh": torch.tanh, "relu": torch.relu}


def _operands(lead=(7,), n_in=13, n_out=11, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, n_in, generator=g, dtype=torch.float64)
    w = torch.randn(n_out, n_in, generator=g, dtype=torch.float64) / n_in**0.5
    b = torch.randn(n_out, generator=g, dtype=torch.float64) if bias else None
    return x, w, b


def _grads(fn, x, w, b, upstream):
    leaves = [t.detach().clone().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    y = fn(*leaves) if b is not None else fn(*leaves, None)
    y.backward(upstream)
    return y.detach(), [t.grad for t in leaves]


@needs_onednn
@pytest.mark.parametrize("activation", [None, "tanh", "relu"])
@pytest.mark.parametrize("lead", [(7,), (3, 5), (2, 1, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_float32_values_and_gradients_match_float64(activation, lead, bias):
    """Forward and all three gradients in float32 on oneDNN equal the float64 computation to float32
    rounding; an error in the transposes, the bias gradient or σ' would be off by O(1)."""
    x, w, b = _operands(lead, bias=bias)
    upstream = torch.randn(*lead, w.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    act = ACTIVATIONS[activation]
    want_y, want = _grads(lambda x_, w_, b_: act(F.linear(x_, w_, b_)), x, w, b, upstream)
    f32 = [t.float() if t is not None else None for t in (x, w, b)]
    got_y, got = _grads(lambda x_, w_, b_: linear(x_, w_, b_, activation), *f32, upstream.float())
    torch.testing.assert_close(got_y.double(), want_y, rtol=1e-5, atol=1e-5)
    for g, e in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), e, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_float32_runs_on_onednn_and_not_on_torchs_matmul(monkeypatch):
    """The float32 path calls oneDNN's kernel; under use_cpu_matmul("torch") it is F.linear, bit for bit."""
    calls = []
    real = ops._OP
    monkeypatch.setattr(ops, "_OP", lambda *a: calls.append(a[3]) or real(*a))
    x, w, b = (t.float() for t in _operands())
    linear(x, w, b, "tanh")
    assert calls == ["tanh"]
    with use_cpu_matmul("torch"):
        assert cpu_matmul() == "torch"
        got = linear(x, w, b, "tanh")
    assert calls == ["tanh"]
    assert torch.equal(got, torch.tanh(F.linear(x, w, b)))


def test_other_dtypes_and_empty_tensors_use_torchs_path_exactly():
    x, w, b = _operands()
    assert torch.equal(linear(x, w, b), F.linear(x, w, b))                  # float64: untouched
    assert torch.equal(linear(x, w, b, "relu"), torch.relu(F.linear(x, w, b)))
    e = torch.zeros(0, 13)
    assert linear(e, w.float(), b.float()).shape == (0, 11)
    assert linear(x.float(), w.float()[:0], b.float()[:0]).shape == (7, 0)


def test_unknown_activation_and_matmul_names_are_config_errors():
    x, w, b = (t.float() for t in _operands())
    with pytest.raises(ConfigError, match="activation 'gelu' cannot be fused"):
        linear(x, w, b, "gelu")
    with pytest.raises(ConfigError, match="unknown 'mkl'"):
        ops.set_cpu_matmul("mkl")


@needs_onednn
def test_bfloat16_products_round_the_operands_and_keep_float32_elsewhere():
    """Inside bfloat16_products the product is that of the bf16-rounded operands (float32 accumulation),
    returned in float32 with float32 gradients; outside it, the float32 product."""
    x, w, b = (t.float() for t in _operands(n_in=64, n_out=32))
    rounded = F.linear(x.bfloat16().double(), w.bfloat16().double(), b.bfloat16().double())
    x_, w_ = x.clone().requires_grad_(), w.clone().requires_grad_()
    with bfloat16_products():
        y = linear(x_, w_, b)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), rounded, rtol=4e-3, atol=1e-6)    # y itself rounded to bf16 once
    exact = F.linear(x.double(), w.double(), b.double())
    assert (y.double() - exact).abs().max() > 1e-4                            # it is not the float32 product
    y.sum().backward()
    assert x_.grad is not None and w_.grad is not None
    assert x_.grad.dtype == w_.grad.dtype == torch.float32
    torch.testing.assert_close(w_.grad.double(), torch.ones(32, 7, dtype=torch.float64) @ x.double(),
                               rtol=1e-2, atol=5e-2)
    torch.testing.assert_close(linear(x, w, b).double(), exact, rtol=1e-5, atol=1e-5)   # outside: float32 again


@needs_onednn
@pytest.mark.parametrize("activation", [None, "tanh", "relu"])
@pytest.mark.parametrize("lead", [(9,), (2, 5)])
def test_bfloat16_products_forward_and_backward_are_those_of_the_rounded_operands(activation, lead):
    """y = σ(bf16(x) bf16(W)ᵀ + bf16(b)), the product rounded once to bf16; backward: g through σ' in
    float32, then g W, gᵀ x and Σ g from the bf16-rounded g, x and W."""
    x, w, b = _operands(lead=lead, n_in=48, n_out=24, seed=3)
    upstream = torch.randn(*lead, 24, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def bf(t):
        return t.bfloat16().double()

    pre = F.linear(bf(x), bf(w), bf(b))
    with bfloat16_products():
        y, (gx, gw, gb) = _grads(lambda *t: linear(*t, activation=activation), x.float(), w.float(), b.float(),
                                 upstream.float())
    assert y.dtype == gx.dtype == gw.dtype == gb.dtype == torch.float32
    expected = ACTIVATIONS[activation](pre)
    torch.testing.assert_close(y.double(), expected, rtol=8e-3, atol=1e-5)
    derivative = {None: torch.ones_like(pre), "tanh": 1 - y.double() ** 2, "relu": (y.double() > 0).double()}
    g = upstream * derivative[activation]
    torch.testing.assert_close(gb.double(), bf(g).reshape(-1, 24).sum(0), rtol=8e-3, atol=1e-4)
    torch.testing.assert_close(gx.double(), bf(g) @ bf(w), rtol=8e-3, atol=1e-4)
    torch.testing.assert_close(gw.double(), bf(g).reshape(-1, 24).T @ bf(x).reshape(-1, 48), rtol=8e-3, atol=1e-3)
    assert (gw.double() - g.reshape(-1, 24).T @ x.reshape(-1, 48)).abs().max() > 1e-4    # not the float32 product


@needs_onednn
def test_bfloat16_products_skip_the_gradient_of_an_input_that_needs_none():
    x, w, b = (t.float() for t in _operands(n_in=16, n_out=8))
    w_ = w.clone().requires_grad_()
    with bfloat16_products():
        linear(x, w_, b, "tanh").sum().backward()
    assert w_.grad is not None and w_.grad.shape == w.shape and x.grad is None


def test_mlp_fuses_its_activations_and_matches_the_layer_by_layer_result():
    for activation in ("tanh", "relu", "elu"):
        mlp = MLP(12, (9, 8), 5, activation=activation)
        x = torch.randn(4, 3, 12)
        manual = mlp.layers(x)                                       # nn.Sequential: one module at a time
        torch.testing.assert_close(mlp(x), manual, rtol=1e-5, atol=1e-6)
        assert all(isinstance(m, Linear) and isinstance(m, nn.Linear)
                   for m in mlp.layers if isinstance(m, nn.Linear))


def test_state_dict_is_that_of_nn_linear():
    """Linear changes no parameter name: checkpoints of earlier versions load."""
    model = build_vae(VAEConfig((1, 4, 4), latent_dim=2, hidden=(6,)))
    names = set(model.state_dict())
    assert {"encoder.trunk.layers.0.weight", "encoder.mean.weight", "decoder.f.layers.2.bias"} <= names
    plain = nn.Linear(3, 2)
    ours = Linear(3, 2)
    ours.load_state_dict(plain.state_dict())
    torch.testing.assert_close(ours(torch.ones(1, 3)), plain(torch.ones(1, 3)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_sets_the_thresholds_once_and_can_be_turned_off():
    code = "import vaekit.allocator as a; print(a.keep_freed_memory(), a.keep_freed_memory())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "VAEKIT_KEEP_FREED_MEMORY": "0"})
    assert on.stdout.split() == ["True", "True"]
    assert off.stdout.split() == ["False", "False"]


def test_bad_cpu_matmul_environment_is_a_one_line_error():
    proc = subprocess.run([sys.executable, "-c", "import vaekit.ops.linear"], capture_output=True, text=True,
                          env={**os.environ, "VAEKIT_CPU_MATMUL": "blas"})
    assert proc.returncode != 0
    assert "VAEKIT_CPU_MATMUL: unknown 'blas'; choose one of ['onednn', 'torch']" in proc.stderr
