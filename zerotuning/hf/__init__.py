"""ZeroTuning on loaded HuggingFace decoders: an attention backend plus apply / remove / applied."""

from .backend import BACKEND_NAME, register_backend
from .families import TESTED_FAMILIES
from .loading import from_pretrained
from .patching import active_profile, applied, apply, remove

__all__ = ["apply", "remove", "applied", "from_pretrained", "active_profile", "register_backend", "BACKEND_NAME", "TESTED_FAMILIES"]
