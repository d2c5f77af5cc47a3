"""``zerotuning.from_pretrained``: load a causal LM with the ``"zerotuning"`` attention and apply a profile, in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..profile import Profile
from .backend import BACKEND_NAME, register_backend
from .patching import apply


def from_pretrained(
    pretrained_model_name_or_path: str | Path,
    *model_args: Any,
    profile: Profile | str | Path | None = None,
    profile_revision: str | None = None,
    strict: bool = False,
    **kwargs: Any,
):
    """``AutoModelForCausalLM.from_pretrained(..., attn_implementation="zerotuning")``, then ``apply(model, profile)``.

    ``profile`` is a ``Profile`` or what ``Profile.from_pretrained`` reads (a folder, a file, a hub
    id at ``profile_revision``); it is read before the model loads, so a bad one fails fast. Without
    a profile the model gives exactly the stock (sdpa) outputs until one is applied. Every other
    argument goes to transformers' ``from_pretrained``; an ``attn_implementation`` other than
    ``"zerotuning"`` is refused.
    """
    implementation = kwargs.pop("attn_implementation", BACKEND_NAME)
    if implementation != BACKEND_NAME:
        raise ValueError(
            f"zerotuning.from_pretrained: attn_implementation={implementation!r}, but this loads the model with "
            f"{BACKEND_NAME!r}; use transformers' own from_pretrained for another implementation"
        )
    if profile is None and profile_revision is not None:
        raise ValueError(f"zerotuning.from_pretrained: profile_revision={profile_revision!r} given without a profile")
    if profile is not None and not isinstance(profile, Profile):
        profile = Profile.from_pretrained(profile, profile_revision)
    elif profile_revision is not None:
        raise ValueError("zerotuning.from_pretrained: profile_revision applies to a profile read by name, not to a Profile object")
    from transformers import AutoModelForCausalLM

    register_backend()
    model = AutoModelForCausalLM.from_pretrained(pretrained_model_name_or_path, *model_args, attn_implementation=BACKEND_NAME, **kwargs)
    if profile is not None:
        apply(model, profile, strict=strict)
    return model
