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
_STOCK = "sdpa"


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

    All or nothing, inside or outside ``torch.inference_mode()``: when it raises, the model runs
    as before the call. Raises ValueError if the profile was made for another model shape or the
    model's attention is already under a ZeroTuning applied to a module enclosing it or inside
    it, TypeError if the model's attention does not go through transformers' AttentionInterface.
    A profile tuned on a model of the same shape but another configuration warns
    (``ProfileMismatchWarning``), or raises ValueError with ``strict`` (which also refuses a
    profile that records no fingerprint).
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"profile: expected a zerotuning.Profile, got {type(profile).__name__}")
    log_gammas = _log_gammas(profile)
    patch: _Patch | None = getattr(model, PATCH_ATTRIBUTE, None)
    if patch is not None:
        profile.check_matches(patch.identity, strict=strict)
        _set_gammas(patch, profile, log_gammas)
        return model
    modules = families.attention_modules(model)
    identity = ModelIdentity.of(model)
    profile.check_matches(identity, strict=strict)
    _refuse_nesting(model, modules)
    patch = _install(model, identity, modules)
    try:
        _set_gammas(patch, profile, log_gammas)
    except BaseException:
        remove(model)
        raise
    return model


def remove(model: torch.nn.Module) -> torch.nn.Module:
    """Undo ``apply``: the previous attention implementation, no buffers, no sink state, no hooks.

    A model without ZeroTuning anywhere in its module tree is returned unchanged, so cleanup
    code may call it freely; ZeroTuning applied to a module inside ``model`` is removed from it.
    Raises ValueError, changing nothing, when ZeroTuning was applied to a model enclosing this
    one (remove it from that model).
    """
    patch: _Patch | None = getattr(model, PATCH_ATTRIBUTE, None)
    if patch is None:
        if not isinstance(model, torch.nn.Module):
            return model
        inner = [module for _, module in model.named_modules() if getattr(module, PATCH_ATTRIBUTE, None) is not None]
        if not inner:
            _refuse_enclosed_remove(model)
            return model
        for module in inner:
            remove(module)
        return model
    delattr(model, PATCH_ATTRIBUTE)
    # Each step runs even if an earlier one fails, so that the model always runs again afterwards.
    failures: list[BaseException] = []
    for step in (
        lambda: _restore_implementations(model, patch.previous_implementations),
        lambda: sinks.detach(patch.sink_attachment),
        *(lambda module=module: backend.release_module(module) for module in patch.modules),
    ):
        try:
            step()
        except Exception as error:  # noqa: PERF203 - collect, finish the undo, then report
            failures.append(error)
    if failures:
        raise failures[0]
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
    # A model loaded with attn_implementation="zerotuning" goes back to sdpa, not to a backend that needs apply().
    previous = [(config, _STOCK if config._attn_implementation == backend.BACKEND_NAME else config._attn_implementation) for config in configs]
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


def _log_gammas(profile: Profile) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor, usable in and out of inference mode
        return torch.tensor([[math.log(g) for g in row] for row in profile.gammas], dtype=torch.float32)


def _set_gammas(patch: _Patch, profile: Profile, log_gammas: torch.Tensor) -> None:
    """Every layer's gammas or, if one copy fails, none (the previous ones are put back)."""
    previous = [backend.log_gamma_of(module).clone() for module in patch.modules]
    try:
        for layer, module in enumerate(patch.modules):
            backend.set_log_gammas(module, log_gammas[layer])
    except BaseException:
        for module, old in zip(patch.modules, previous):
            backend.set_log_gammas(module, old)
        raise
    patch.profile = profile


def _refuse_nesting(model: torch.nn.Module, modules: list[torch.nn.Module]) -> None:
    """Refuse, before any change, a model whose attention layers another application already holds."""
    inner = [name for name, module in model.named_modules() if getattr(module, PATCH_ATTRIBUTE, None) is not None]
    if inner:
        raise ValueError(
            f"{type(model).__name__}: ZeroTuning is already applied to its submodule {inner[0]!r} "
            f"({type(model.get_submodule(inner[0])).__name__}); apply profiles to one module of a model only "
            "(remove it from the submodule first, or keep applying to the submodule)"
        )
    owners = {sinks.owner_name(module) for module in modules} - {None}
    if owners or any(hasattr(module, backend.LOG_GAMMA_BITS) for module in modules):
        raise ValueError(
            f"{type(model).__name__}: its attention layers are already under ZeroTuning applied to an enclosing "
            f"model ({', '.join(sorted(owners)) or 'unknown'}); apply profiles to and remove them from that model"
        )


def _refuse_enclosed_remove(model: torch.nn.Module) -> None:
    """``remove`` on a module inside a patched model would leave that model half patched: refuse it."""
    owners = {sinks.owner_name(module) for module in model.modules()} - {None}
    if owners:
        raise ValueError(
            f"zerotuning.remove({type(model).__name__}): ZeroTuning was applied to an enclosing model "
            f"({', '.join(sorted(owners))}), not to this module; call remove() on that model"
        )


def _restore_implementations(model: torch.nn.Module, previous: list[tuple[Any, Any]]) -> None:
    try:
        model.set_attn_implementation(previous[0][1])
    finally:
        for config, implementation in previous:
            if config._attn_implementation != implementation:
                # A sub-config that set_attn_implementation did not reach (or a failed switch): put it back directly.
                config._attn_implementation = implementation
