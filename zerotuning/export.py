"""``zerotuning export``: a loaded model (GGUF included) as a plain HuggingFace folder, with its profile.

Serving engines such as vLLM load a folder of ``config.json``, safetensors weights and a tokenizer.
transformers cannot ``save_pretrained`` a model loaded from GGUF ("not serializable"), so the
export rebuilds a plain model of the same class from the config (no quantisation settings) and
loads the dequantised state dict into it. The tokenizer is saved with the BOS handling that
``load_model`` chose, so the sink is the same token in the folder as in the loaded model.

Before anything is written: the output folder must not exist and the profile (if any) must be
for this model. The folder is assembled under a temporary name beside the target and renamed into
place only after its weights reload and give the loaded model's logits, so a reader never sees a
half-written folder and a wrong export is never left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from .atomic_files import write_text_atomically
from .models import LOAD_RECORD_ATTRIBUTE, ensure_bos, load_record
from .profile import ModelIdentity, Profile

PROFILE_FILE = "zerotuning_profile.json"
EXPORT_RECORD_FILE = "zerotuning_export.json"
# Short texts of different lengths: the reloaded folder must reproduce the loaded model's logits.
_CHECK_TEXTS = ("The capital of France is", "x", "Water boils at one hundred degrees")
_CHECK_TOLERANCE = 1e-4  # max |logit difference|, in units of the largest |logit| (fp32: bitwise in practice)


def export_model(model, tokenizer, out_dir: str | Path, profile: Profile | None = None) -> Path:
    """Write ``model`` and ``tokenizer`` (from ``zerotuning.models.load_model``) to the new folder ``out_dir``.

    With ``profile``, it is written beside the weights as ``zerotuning_profile.json`` (the file the
    vLLM plugin reads). ``zerotuning_export.json`` records the load record and the check. Returns the folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"export folder {str(out_dir)!r} already exists; expected a new path (nothing is overwritten)")
    if not out_dir.parent.is_dir():
        raise FileNotFoundError(f"export folder {str(out_dir)!r}: its parent folder does not exist")
    identity = ModelIdentity.of(model)
    if profile is not None:
        if not isinstance(profile, Profile):
            raise TypeError(f"profile: expected a zerotuning.Profile, got {type(profile).__name__}")
        profile.check_matches(identity)
    record = load_record(model)

    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        staging.mkdir()
        plain = _plain_copy(model)
        plain.save_pretrained(staging)
        del plain
        tokenizer.save_pretrained(staging)
        check = _check_folder(model, tokenizer, staging, record)
        if profile is not None:
            profile.save(staging / PROFILE_FILE)
        export_record = {"identity": identity.to_json(), "load_record": record, "check": check, "profile": profile is not None}
        write_text_atomically(staging / EXPORT_RECORD_FILE, json.dumps(export_record, indent=1) + "\n")
        # rename() fails rather than replace a folder that appeared meanwhile (unless it is empty).
        if out_dir.exists():
            raise FileExistsError(f"export folder {str(out_dir)!r} appeared during the export; nothing was overwritten")
        os.rename(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def _plain_copy(model):
    """The same architecture built from a clean config, holding the same (dense) weights."""
    config = model.config.__class__.from_dict(_plain_config_dict(model))
    plain = type(model)(config)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or [])
    missing = [name for name in missing if name not in tied]
    if missing or unexpected:
        raise RuntimeError(
            f"export: rebuilding {type(model).__name__} from its config did not take its weights "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return plain.to(next(model.parameters()).dtype).eval()


def _plain_config_dict(model) -> dict[str, Any]:
    data = model.config.to_dict()
    for key in ("quantization_config", LOAD_RECORD_ATTRIBUTE, "_name_or_path"):
        data.pop(key, None)
    data["architectures"] = [type(model).__name__]  # serving engines pick the model class from it
    return data


def _check_folder(model, tokenizer, folder: Path, record: dict) -> dict:
    """Reload the folder and compare: tokens (BOS as the sink) and logits must match the loaded model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    reloaded_tokenizer.padding_side = "left"
    if reloaded_tokenizer.pad_token is None:
        reloaded_tokenizer.pad_token = tokenizer.pad_token
    sink = ensure_bos(reloaded_tokenizer, add=False).sink
    if sink != record["bos"]["sink"]:
        raise RuntimeError(
            f"export: the saved tokenizer's sink is {sink!r}, but the loaded model's is {record['bos']['sink']!r}; "
            "the folder would be served with another initial token"
        )
    for text in _CHECK_TEXTS:
        if reloaded_tokenizer(text)["input_ids"] != tokenizer(text)["input_ids"]:
            raise RuntimeError(f"export: the saved tokenizer encodes {text!r} differently from the loaded one")
    dtype = next(model.parameters()).dtype
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    device = next(model.parameters()).device
    batch = tokenizer(list(_CHECK_TEXTS), return_tensors="pt", padding=True).to(device)
    with torch.no_grad():
        expected = model(**batch).logits.float()
        got = reloaded.to(device)(**batch).logits.float()
    difference = (expected - got).abs().max().item() / max(expected.abs().max().item(), 1e-30)
    if not difference <= _CHECK_TOLERANCE:
        raise RuntimeError(
            f"export: the reloaded folder's logits differ from the loaded model's by {difference:.3g} "
            f"(relative, expected <= {_CHECK_TOLERANCE:g})"
        )
    return {"texts": list(_CHECK_TEXTS), "max_relative_logit_difference": difference, "sink": sink}
