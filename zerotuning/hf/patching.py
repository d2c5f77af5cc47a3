"""apply / remove / applied: put a Profile on a loaded HuggingFace model and take it off again.

``apply`` is idempotent and cheap when repeated: the first call installs the backend (a gamma
buffer per attention module, the sink state, the attention implementation switch); later calls
only copy new log-gammas into the buffers in place, so compiled graphs keep working and the
tuning engine can call it once per gamma candidate.

This module only orchestrates: ``sinks`` owns the per-model sink state, ``backend`` the
per-module gamma buffer, ``families`` where the attention modules and configs are.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..profile import ModelIdentity, Profile
from . import backend, families, sinks

PATCH_ATTRIBUTE = "zerotuning_patch"


@dataclass
class _Patch:
    """What apply() changed on one model, so that remove() can undo exactly that."""

    identity: ModelIdentity
    modules: list[torch.nn.Module]
    previous_implementations: list[tuple[Any, Any]]  # (config, its _attn_implementation before apply)
    sink_attachment: sinks.SinkAttachment
    profile: Profile


def apply(model: torch.nn.Module, profile: Profile, *, strict: bool = False) -> torch.nn.Module:
    """Run ``model``'s attention with ``profile``'s gammas; returns the model.

    Raises ValueError if the profile was made for another model shape, TypeError if the model's
    attention does not go through transformers' AttentionInterface. A profile tuned on a model of
    the same shape but another configuration warns (``ProfileMismatchWarning``), or raises
    ValueError with ``strict`` (which also refuses a profile that records no fingerprint).
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"profile: expected a zerotuning.Profile, got {type(profile).__name__}")
    patch: _Patch | None = getattr(model, PATCH_ATTRIBUTE, None)
    if patch is None:
        modules = families.attention_modules(model)
        identity = ModelIdentity.of(model)
        profile.check_matches(identity, strict=strict)
        patch = _install(model, identity, modules)
    else:
        profile.check_matches(patch.identity, strict=strict)
    _set_gammas(patch, profile)
    return model


def remove(model: torch.nn.Module) -> torch.nn.Module:
    """Undo ``apply``: the previous attention implementation, no buffers, no sink state, no hooks.

    A model that was never patched is returned unchanged, so cleanup code may call it freely.
    """
    patch: _Patch | None = getattr(model, PATCH_ATTRIBUTE, None)
    if patch is None:
        return model
    _restore_implementations(model, patch.previous_implementations)
    for module in patch.modules:
        backend.release_module(module)
    sinks.detach(patch.sink_attachment)
    delattr(model, PATCH_ATTRIBUTE)
    return model


@contextlib.contextmanager
def applied(model: torch.nn.Module, profile: Profile, *, strict: bool = False) -> Iterator[torch.nn.Module]:
    """``with applied(model, profile): ...`` restores the state before entry on exit.

    If the model already carried a profile, that profile is put back; otherwise ZeroTuning is removed.
    """
    before = active_profile(model)
    apply(model, profile, strict=strict)
    try:
        yield model
    finally:
        if before is None:
            remove(model)
        else:
            apply(model, before)


def active_profile(model: torch.nn.Module) -> Profile | None:
    """The profile last applied to ``model``, or None if ZeroTuning is not applied."""
    patch: _Patch | None = getattr(model, PATCH_ATTRIBUTE, None)
    return None if patch is None else patch.profile


def _install(model: torch.nn.Module, identity: ModelIdentity, modules: list[torch.nn.Module]) -> _Patch:
    devices = [families.module_device(module) for module in modules]  # may refuse: before any change
    backend.register_backend()
    configs = families.model_configs(model, modules)
    previous = [(config, config._attn_implementation) for config in configs]
    attachment = sinks.attach(model, configs, modules)  # may refuse a shared config: before any change
    for module, device in zip(modules, devices):
        backend.prepare_module(module, identity.num_heads, device)
    patch = _Patch(identity, modules, previous, attachment, Profile.neutral(model))
    setattr(model, PATCH_ATTRIBUTE, patch)
    try:
        model.set_attn_implementation(backend.BACKEND_NAME)
        not_switched = [type(c).__name__ for c in configs if c._attn_implementation != backend.BACKEND_NAME]
        if not_switched:
            raise TypeError(
                f"{type(model).__name__}: transformers refused to switch {not_switched} to the "
                f"{backend.BACKEND_NAME!r} attention implementation (its attention does not use AttentionInterface)"
            )
    except Exception:
        remove(model)
        raise
    return patch


def _set_gammas(patch: _Patch, profile: Profile) -> None:
    log_gammas = torch.tensor([[math.log(g) for g in row] for row in profile.gammas], dtype=torch.float32)
    for layer, module in enumerate(patch.modules):
        backend.set_log_gammas(module, log_gammas[layer])
    patch.profile = profile


def _restore_implementations(model: torch.nn.Module, previous: list[tuple[Any, Any]]) -> None:
    model.set_attn_implementation(previous[0][1])
    for config, implementation in previous:
        if config._attn_implementation != implementation:
            # A sub-config that set_attn_implementation did not reach: put it back directly.
            config._attn_implementation = implementation
