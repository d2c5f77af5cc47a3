"""Log-gammas that autograd can see: for head sensitivities and fitted gammas.

``apply`` keeps each layer's log-gammas as an int32 bit pattern in a buffer (model.half() must not
round them), which autograd cannot differentiate. ``trainable_log_gammas`` puts a float32
[num_heads] leaf requiring grad on each attention module instead, starting from the applied
profile's log-gammas; the backend reads it in place of the buffer while the context is active.
Inside, the model's own parameters do not require grad (so no weight gradient is ever computed or
stored), and the model must be in eval mode (no dropout). Everything is put back on exit.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from . import backend
from .patching import PATCH_ATTRIBUTE


@contextlib.contextmanager
def trainable_log_gammas(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """``with trainable_log_gammas(model) as leaves:`` one [num_heads] float32 leaf per layer."""
    patch = getattr(model, PATCH_ATTRIBUTE, None)
    if patch is None:
        raise RuntimeError(f"{type(model).__name__}: zerotuning.apply(model, profile) must be called before trainable_log_gammas")
    if model.training:
        raise ValueError("model: it is in training mode (dropout on); call model.eval() before computing gamma gradients")
    if any(backend.LOG_GAMMA_LEAF in module.__dict__ for module in patch.modules):
        raise RuntimeError(f"{type(model).__name__}: trainable_log_gammas is already active on this model (nested use)")
    frozen = [parameter for parameter in model.parameters() if parameter.requires_grad]
    leaves = [backend.log_gamma_of(module).detach().clone().requires_grad_(True) for module in patch.modules]
    try:
        for parameter in frozen:
            parameter.requires_grad_(False)
        for module, leaf in zip(patch.modules, leaves):
            module.__dict__[backend.LOG_GAMMA_LEAF] = leaf
        yield leaves
    finally:
        for module in patch.modules:
            module.__dict__.pop(backend.LOG_GAMMA_LEAF, None)
        for parameter in frozen:
            parameter.requires_grad_(True)
