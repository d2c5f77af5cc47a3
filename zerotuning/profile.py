"""The tuned state of ZeroTuning: one gamma per (layer, query head), tied to the model's shape.

A ``Profile`` is plain data: it knows nothing about how gammas reach the attention kernel
(that is ``zerotuning.hf``). It is saved as JSON with a schema version and validated on load,
so a profile tuned for one model cannot silently be applied to another: a model of another
shape is refused, one of the same shape but another configuration (``model_fingerprint``) is
warned about, or refused with ``strict=True``. As a folder with a model card it is saved,
loaded and shared like an adapter (``save_pretrained``, ``from_pretrained``, ``push_to_hub``:
``profile_folder.py``).
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .atomic_files import write_text_atomically
from .model_fingerprint import config_fingerprint, model_name

# Version 2 added the identity's base_model and config_fingerprint; version 1 files still load.
SCHEMA_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_SHAPE_KEYS = ("model_type", "num_layers", "num_heads", "num_kv_heads")
_ORIGIN_KEYS = ("base_model", "config_fingerprint")


class ProfileMismatchWarning(UserWarning):
    """A profile is applied to a model of its shape whose configuration is not the one it was tuned on."""


@dataclass(frozen=True)
class ModelIdentity:
    """The model a profile is tied to: model type and attention layout of the text decoder (its
    shape, which equality compares), plus where it came from and its configuration's fingerprint
    (None when unknown, e.g. in a version 1 file)."""

    model_type: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    base_model: str | None = field(default=None, compare=False)
    config_fingerprint: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model_type, str) or not self.model_type:
            raise ValueError(f"ModelIdentity.model_type must be a non-empty string, got {self.model_type!r}")
        for name in ("num_layers", "num_heads", "num_kv_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelIdentity.{name} must be an integer >= 1, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelIdentity.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        for name in _ORIGIN_KEYS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"ModelIdentity.{name} must be a non-empty string or None, got {value!r}")

    @classmethod
    def of(cls, model: Any) -> "ModelIdentity":
        """The identity of a loaded HuggingFace model (its text decoder for multimodal configs)."""
        config = getattr(model, "config", None)
        if config is None:
            raise TypeError(f"model: expected a HuggingFace PreTrainedModel with a .config, got {type(model).__name__}")
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        num_heads = getattr(text_config, "num_attention_heads", None)
        num_kv_heads = getattr(text_config, "num_key_value_heads", None) or num_heads
        num_layers = getattr(text_config, "num_hidden_layers", None)
        if not all(_is_index(value) for value in (num_heads, num_kv_heads, num_layers)):
            raise TypeError(
                f"{type(model).__name__}: its config {type(text_config).__name__} does not give integer "
                "num_hidden_layers / num_attention_heads / num_key_value_heads; cannot build a profile for it"
            )
        return cls(
            model_type=getattr(text_config, "model_type", None) or type(model).__name__,
            num_layers=int(num_layers),
            num_heads=int(num_heads),
            num_kv_heads=int(num_kv_heads),
            base_model=model_name(model),
            config_fingerprint=config_fingerprint(text_config),
        )

    def describe(self) -> str:
        """One line for error messages: type and [layers x heads] shape."""
        return (
            f"{self.model_type} with {self.num_layers} layers x {self.num_heads} query heads "
            f"({self.num_kv_heads} kv heads)"
        )

    def describe_origin(self) -> str:
        """The base model's name and config fingerprint, for messages."""
        return f"{self.base_model or 'an unnamed model'} (config {self.config_fingerprint or 'fingerprint unknown'})"

    def to_json(self) -> dict:
        return {name: getattr(self, name) for name in (*_SHAPE_KEYS, *_ORIGIN_KEYS)}

    @classmethod
    def from_json(cls, data: Any, schema_version: int = SCHEMA_VERSION) -> "ModelIdentity":
        expected = set(_SHAPE_KEYS) if schema_version == 1 else {*_SHAPE_KEYS, *_ORIGIN_KEYS}
        if not isinstance(data, dict) or set(data) != expected:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"profile identity: expected an object with keys {sorted(expected)} (schema_version {schema_version}), got {got}"
            )
        return cls(**data)


def _checked_gamma(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not _finite_as_float(value) or value <= 0:
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:20]}...({len(repr(value))} characters)"
        raise ValueError(f"{where}: gamma must be a finite number > 0, got {shown}")
    return float(value)


def _finite_as_float(value: numbers.Real) -> bool:
    """True when ``value`` is finite once converted to the float the kernel uses (a huge JSON integer is not)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _identity_of(model: Any) -> ModelIdentity:
    return model if isinstance(model, ModelIdentity) else ModelIdentity.of(model)


def _is_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass
class Profile:
    """Per-layer, per-query-head gammas (1.0 = head untouched) for one model shape.

    ``gammas[layer][head]`` scales the attention that query head ``head`` of layer ``layer``
    pays to the row's sink key (docs/method.md). ``metadata`` is free-form JSON-able data
    (task, objective, level, seeds, ...).
    """

    identity: ModelIdentity
    gammas: list[list[float]]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.identity, ModelIdentity):
            raise TypeError(f"Profile.identity must be a ModelIdentity, got {type(self.identity).__name__}")
        rows = self.gammas
        if not isinstance(rows, (list, tuple)) or len(rows) != self.identity.num_layers:
            got = len(rows) if isinstance(rows, (list, tuple)) else type(rows).__name__
            raise ValueError(
                f"Profile.gammas must have one row per layer ({self.identity.num_layers}) of "
                f"{self.identity.describe()}, got {got}"
            )
        checked = []
        for layer, row in enumerate(rows):
            if not isinstance(row, (list, tuple)) or len(row) != self.identity.num_heads:
                got = len(row) if isinstance(row, (list, tuple)) else type(row).__name__
                raise ValueError(
                    f"Profile.gammas[{layer}] must have one gamma per query head ({self.identity.num_heads}), got {got}"
                )
            checked.append([_checked_gamma(g, f"Profile.gammas[{layer}][{head}]") for head, g in enumerate(row)])
        self.gammas = checked
        if not isinstance(self.metadata, dict):
            raise TypeError(f"Profile.metadata must be a dict, got {type(self.metadata).__name__}")
        try:
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Profile.metadata must be JSON-serialisable: {error}") from None

    # The constructors take a loaded model or the ModelIdentity of one.

    @classmethod
    def neutral(cls, model: Any) -> "Profile":
        """Every gamma 1.0: applying it leaves the model's outputs unchanged."""
        identity = _identity_of(model)
        return cls(identity, [[1.0] * identity.num_heads for _ in range(identity.num_layers)])

    @classmethod
    def uniform(cls, model: Any, gamma: float, layers: Iterable[int] | None = None) -> "Profile":
        """``gamma`` on every head of ``layers`` (None: all layers), 1.0 elsewhere."""
        identity = _identity_of(model)
        gamma = _checked_gamma(gamma, "Profile.uniform")
        chosen = set(range(identity.num_layers)) if layers is None else set(_checked_layers(layers, identity))
        rows = [[gamma if layer in chosen else 1.0] * identity.num_heads for layer in range(identity.num_layers)]
        return cls(identity, rows)

    @classmethod
    def for_heads(cls, model: Any, gamma: float, heads: Iterable[tuple[int, int]]) -> "Profile":
        """``gamma`` on the given (layer, query_head) pairs, 1.0 elsewhere."""
        identity = _identity_of(model)
        gamma = _checked_gamma(gamma, "Profile.for_heads")
        rows = [[1.0] * identity.num_heads for _ in range(identity.num_layers)]
        for pair in heads:
            layer, head = _checked_head(pair, identity)
            rows[layer][head] = gamma
        return cls(identity, rows)

    def check_matches(self, identity: ModelIdentity, *, strict: bool = False) -> None:
        """Raise ValueError naming both shapes unless this profile was made for a model of ``identity``'s shape.

        Of the same shape but another configuration fingerprint: a ``ProfileMismatchWarning``, or
        ValueError with ``strict``; ``strict`` also refuses a profile that records no fingerprint.
        """
        if self.identity != identity:
            raise ValueError(
                f"profile is for {self.identity.describe()}, but the model is {identity.describe()}; "
                "build or tune a profile for this model"
            )
        ours, theirs = self.identity.config_fingerprint, identity.config_fingerprint
        if strict and ours is None:
            raise ValueError(
                "strict=True: the profile records no config fingerprint (a schema_version 1 file or a hand-made "
                f"identity), so it cannot be checked against {identity.describe_origin()}; pass strict=False to apply it"
            )
        if ours is None or theirs is None or ours == theirs:
            return
        message = (
            f"profile was tuned on {self.identity.describe_origin()}, but the model is {identity.describe_origin()}: "
            "the same shape with another configuration, so its gammas may not fit this model"
        )
        if strict:
            raise ValueError(f"strict=True: {message}")
        warnings.warn(message + " (strict=True refuses this)", ProfileMismatchWarning, stacklevel=3)

    def to_json(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "identity": self.identity.to_json(),
            "gammas": [list(row) for row in self.gammas],
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: Any) -> "Profile":
        if not isinstance(data, dict):
            raise ValueError(f"profile: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if isinstance(version, bool) or version not in _READABLE_VERSIONS:
            raise ValueError(f"profile: schema_version {version!r} is not supported (expected one of {_READABLE_VERSIONS})")
        unknown = set(data) - {"schema_version", "identity", "gammas", "metadata"}
        if unknown or "identity" not in data or "gammas" not in data:
            raise ValueError(
                "profile: expected keys schema_version, identity, gammas and optional metadata, "
                f"got {sorted(data)}"
            )
        return cls(ModelIdentity.from_json(data["identity"], version), data["gammas"], data.get("metadata", {}))

    def save(self, path: str | Path) -> Path:
        """Write the profile as UTF-8 JSON, atomically (an earlier file survives a failed write); returns the path."""
        path = Path(path)
        write_text_atomically(path, json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Profile":
        """Read and validate a profile written by ``save``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"profile {str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start})") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"profile {str(path)!r} is not valid JSON: {error}") from None
        except RecursionError:
            raise ValueError(f"profile {str(path)!r}: JSON nested too deeply") from None
        try:
            return cls.from_json(data)
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"profile {str(path)!r}: {error}") from None

    # Folders like adapters: profile.json plus a README.md model card (profile_folder.py).

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``directory``/profile.json and ``directory``/README.md (the model card), each atomically; returns the folder."""
        from .profile_folder import save_folder

        return save_folder(self, directory)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, revision: str | None = None, *, cache_dir: str | Path | None = None,
        token: str | bool | None = None, local_files_only: bool = False,
    ) -> "Profile":
        """Load a profile folder, a single-file profile (``save``), or a hub repository's profile.json at ``revision``."""
        from .profile_folder import load_folder

        return load_folder(name_or_path, revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)

    def push_to_hub(
        self, repo_id: str, *, revision: str | None = None, private: bool | None = None, token: str | bool | None = None,
        commit_message: str | None = None,
    ):
        """Upload profile.json and README.md to a hub model repository (created if missing); returns the commit info."""
        from .profile_folder import push_folder

        return push_folder(self, repo_id, revision=revision, private=private, token=token, commit_message=commit_message)


def _checked_layers(layers: Iterable[int], identity: ModelIdentity) -> list[int]:
    checked = []
    for layer in layers:
        if not _is_index(layer) or not 0 <= layer < identity.num_layers:
            raise ValueError(f"layers: {layer!r} is not a layer index in [0, {identity.num_layers})")
        checked.append(int(layer))
    return checked


def _checked_head(pair: Any, identity: ModelIdentity) -> tuple[int, int]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"heads: expected (layer, query_head) pairs, got {pair!r}")
    layer, head = pair
    (layer,) = _checked_layers([layer], identity)
    if not _is_index(head) or not 0 <= head < identity.num_heads:
        raise ValueError(f"heads: query head {head!r} of pair {tuple(pair)} is not in [0, {identity.num_heads})")
    return layer, int(head)
