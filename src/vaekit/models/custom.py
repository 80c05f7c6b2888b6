"""Networks of the user's own, named in a configuration as ``MODULE:FUNCTION``.

``MODULE`` is an importable module name (``my_package.nets``) or the path of a ``.py`` file
(stored absolute). ``FUNCTION(data_shape=..., latent_dim=..., **arch_args)`` returns
``(encoder_trunk, decoder_net)``:

* ``encoder_trunk`` maps x (N, *data_shape) to features (N, H); vaekit adds the heads g and h
  (H is found by a dry run on two zero examples);
* ``decoder_net`` maps z (N, latent_dim) to (N, *data_shape) or (N, prod(data_shape)): the mean
  f(z) of a Gaussian decoder, or the logits of a Bernoulli one. A likelihood with P > 1 values per
  data dimension (the discretized logistics) calls ``FUNCTION(..., params_per_dim=P)``; the decoder
  then returns (N, P, *data_shape), (N, P·C, *rest) or (N, P·prod(data_shape)) (:mod:`vaekit.models.decoders`).

Importing a module executes it, so nothing is imported unless the caller passes
``trust_code=True`` (the command line's ``--trust-code``); otherwise :class:`UntrustedCodeError`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit.errors import ConfigError, ShapeError, UntrustedCodeError

__all__ = ["is_custom_arch", "normalise_builder", "load_builder", "build_custom"]


def is_custom_arch(arch: str) -> bool:
    """Whether ``arch`` names user code (``MODULE:FUNCTION``) rather than a built-in architecture."""
    return ":" in arch


def _split(arch: str) -> tuple[str, str]:
    module, _, function = arch.rpartition(":")
    if not module or not function.isidentifier():
        raise ConfigError(f"arch: {arch!r} is not MODULE:FUNCTION (a module name or .py path, a colon, "
                          "a function name)")
    return module, function


def _is_path(module: str) -> bool:
    return module.endswith(".py") or "/" in module or "\\" in module


def normalise_builder(arch: str) -> str:
    """``arch`` with a ``.py`` path made absolute (so a saved run finds it from any directory)."""
    module, function = _split(arch)
    if _is_path(module):
        module = str(Path(module).expanduser().resolve())
    return f"{module}:{function}"


def load_builder(arch: str, *, trust_code: bool) -> Callable[..., Any]:
    """Import ``MODULE`` and return ``FUNCTION``; refuses (importing nothing) without ``trust_code``."""
    module_name, function = _split(arch)
    if not trust_code:
        raise UntrustedCodeError(f"arch: {arch!r} names Python code, and importing it would run it; "
                                 "pass --trust-code (Python: trust_code=True) if you trust it")
    try:
        if _is_path(module_name):
            path = Path(module_name)
            if not path.is_file():
                raise ConfigError(f"arch: the module file {path} does not exist")
            name = "vaekit_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    raise ConfigError(f"arch: cannot load {path} as a Python module")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported in one line
        raise ConfigError(f"arch: importing {module_name!r} failed ({type(exc).__name__}: {exc})") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise ConfigError(f"arch: module {module_name!r} has no function {function!r}")
    return builder


def build_custom(arch: str, args: dict[str, Any], data_shape: tuple[int, ...], latent_dim: int, *,
                 trust_code: bool, params_per_dim: int = 1) -> tuple[nn.Module, int, nn.Module]:
    """(encoder trunk, its feature count H, decoder network) from the user's builder; ``params_per_dim``
    is passed to it only when > 1."""
    builder = load_builder(arch, trust_code=trust_code)
    extra = {"params_per_dim": int(params_per_dim)} if params_per_dim > 1 else {}
    try:
        built = builder(data_shape=tuple(data_shape), latent_dim=int(latent_dim), **args, **extra)
    except TypeError as exc:
        given = "data_shape, latent_dim" + (", params_per_dim (the likelihood's)" if extra else "")
        raise ConfigError(f"arch: calling {arch} with {given} and arch_args "
                          f"{sorted(args)} failed ({exc})") from None
    if not (isinstance(built, tuple) and len(built) == 2 and all(isinstance(m, nn.Module) for m in built)):
        raise ConfigError(f"arch: {arch} must return (encoder_trunk, decoder_net), two nn.Modules; "
                          f"got {type(built).__name__}")
    trunk, decoder_net = built
    with torch.no_grad():
        probe = torch.zeros((2, *data_shape), dtype=next(trunk.parameters(), torch.zeros(())).dtype)
        try:
            features = trunk(probe)
        except Exception as exc:  # noqa: BLE001 - the user's network: report its failure in one line
            raise ShapeError(f"arch: the encoder trunk of {arch} fails on input of shape (2, *{tuple(data_shape)}) "
                             f"({type(exc).__name__}: {exc})") from None
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ShapeError(f"arch: the encoder trunk of {arch} must map (N, *{tuple(data_shape)}) to (N, H); "
                         f"it returned {shape} for N = 2")
    return trunk, int(features.shape[1]), decoder_net
