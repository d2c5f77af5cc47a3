"""Profile folders (save_pretrained / from_pretrained / push_to_hub, hub mocked) and the profile's model identity."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import huggingface_hub
import pytest

from zerotuning import ModelIdentity, Profile, apply, remove
from zerotuning.model_card import render_model_card
from zerotuning.model_fingerprint import config_fingerprint
from zerotuning.profile import ProfileMismatchWarning
from zerotuning.tuning.run_record import RECORD_KEY, record_held_out

from tiny_models import tiny_config, tiny_model

TUNED_RECORD = {
    "level": 1,
    "gamma": 1.5,
    "heads": None,
    "calibration": {"examples": 40, "accuracy": 0.75},
    "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "task_request": {"source": "sentiment"},
    "shots": 0,
    "seed": 0,
    "settings": {"objective": {"name": "supervised"}, "chat_template": "on", "tuning": {"levels": [1]}},
    "prompt_format": "chat",
}
HELD_OUT = {
    "examples": 50,
    "methods": {
        "baseline": {"accuracy": {"estimate": 0.7, "low": 0.58, "high": 0.82, "level": 0.95}, "nll": 0.6},
        "tuned": {"accuracy": {"estimate": 0.76, "low": 0.64, "high": 0.88, "level": 0.95}, "nll": 0.5},
    },
    "comparisons": {
        "tuned vs baseline": {
            "accuracy_difference": {"estimate": 0.06, "low": -0.02, "high": 0.14, "level": 0.95},
            "mcnemar": {"p_value": 0.25, "only_first_correct": 1, "only_second_correct": 4},
        }
    },
}


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def tuned_profile(model) -> Profile:
    profile = Profile.uniform(model, 1.5, layers=[1])
    profile.metadata[RECORD_KEY] = json.loads(json.dumps(TUNED_RECORD))
    record_held_out(profile, HELD_OUT)
    return profile


def test_the_identity_records_the_model_name_and_a_config_fingerprint(model):
    identity = ModelIdentity.of(model)
    assert identity.config_fingerprint == config_fingerprint(model.config)
    assert identity.config_fingerprint.startswith("sha256:") and len(identity.config_fingerprint) == 7 + 64
    assert identity.base_model is None  # built from a config: no name or path
    # Bookkeeping does not change the fingerprint; a defining field does, even at the same shape.
    assert config_fingerprint(tiny_config("llama", use_cache=False, output_attentions=True)) == identity.config_fingerprint
    assert config_fingerprint(tiny_config("llama", vocab_size=128)) != identity.config_fingerprint
    assert ModelIdentity.of(tiny_model("llama", rms_norm_eps=1e-3)) == identity  # equality is the shape


def test_a_saved_model_folder_gives_its_path_as_the_base_model(model, tmp_path):
    from transformers import AutoModelForCausalLM

    model.save_pretrained(tmp_path / "tiny")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    identity = ModelIdentity.of(loaded)
    assert identity.base_model == str(tmp_path / "tiny")
    assert identity.config_fingerprint == ModelIdentity.of(model).config_fingerprint


def test_save_pretrained_then_from_pretrained(model, tmp_path):
    profile = tuned_profile(model)
    folder = profile.save_pretrained(tmp_path / "profile")
    assert sorted(path.name for path in folder.iterdir()) == ["README.md", "profile.json"]
    loaded = Profile.from_pretrained(folder)
    assert loaded == profile
    assert loaded.identity.config_fingerprint == profile.identity.config_fingerprint
    assert Profile.from_pretrained(str(folder / "profile.json")) == profile  # the single file too
    # Saving again replaces both files, atomically, and leaves no temporary behind.
    Profile.uniform(model, 2.0).save_pretrained(folder)
    assert sorted(path.name for path in folder.iterdir()) == ["README.md", "profile.json"]
    assert Profile.from_pretrained(folder).gammas[0][0] == 2.0


def test_the_model_card_shows_the_base_model_the_run_and_the_held_out_intervals(model):
    profile = tuned_profile(model)
    assert "base_model:" not in render_model_card(profile)  # a model built from a config has no name
    profile.identity = ModelIdentity(**{**profile.identity.to_json(), "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    card = render_model_card(profile)
    assert card.startswith("---\nlibrary_name: zerotuning\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n")
    assert "| shape | 2 layers x 4 query heads (2 kv heads) |" in card
    assert profile.identity.config_fingerprint in card
    assert "| 1.5 | 4 | 1 |" in card  # gamma 1.5 on the 4 heads of layer 1
    assert "| chat template | yes (the tokenizer's chat template) |" in card and "| task | `sentiment` |" in card
    assert "| calibration accuracy | 0.750 on 40 examples |" in card
    assert "| tuned | 0.760 [0.640, 0.880] |" in card and "| baseline | 0.700 [0.580, 0.820] |" in card
    assert "| tuned vs baseline | +0.060 [-0.020, +0.140] | 0.25 |" in card


def test_a_local_path_in_base_model_stays_out_of_the_front_matter(model):
    profile = Profile(ModelIdentity(**{**ModelIdentity.of(model).to_json(), "base_model": "/models/tiny"}), Profile.neutral(model).gammas)
    card = render_model_card(profile)
    assert "base_model:" not in card.split("---")[1] and "`/models/tiny`" in card
    assert "Every gamma is 1.0 (8 heads)" in card and "records no tuning run" in card and "No held-out evaluation" in card


def test_old_single_file_profiles_still_load(tmp_path, model):
    version_1 = {
        "schema_version": 1,
        "identity": {"model_type": "llama", "num_layers": 2, "num_heads": 4, "num_kv_heads": 2},
        "gammas": [[1.0] * 4, [2.0] * 4],
        "metadata": {"note": "written before identities had fingerprints"},
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(version_1), encoding="utf-8")
    profile = Profile.from_pretrained(path)
    assert profile.identity.config_fingerprint is None and profile.gammas[1] == [2.0] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply(model, profile)  # shape matches, nothing to compare: no warning
    remove(model)
    with pytest.raises(ValueError, match="strict=True: the profile records no config fingerprint"):
        apply(model, profile, strict=True)
    assert not hasattr(model, "zerotuning_patch")


def test_a_model_of_the_same_shape_but_another_config_warns_or_is_refused():
    tuned_on, other = tiny_model("llama"), tiny_model("llama", vocab_size=128)
    profile = Profile.uniform(tuned_on, 2.0)
    with pytest.warns(ProfileMismatchWarning, match="the same shape with another configuration"):
        apply(other, profile)
    remove(other)
    with pytest.raises(ValueError, match=r"strict=True: profile was tuned on an unnamed model \(config sha256:"):
        apply(other, profile, strict=True)
    assert not hasattr(other, "zerotuning_patch")  # refused before any change
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply(tuned_on, profile, strict=True)
    remove(tuned_on)


@pytest.mark.parametrize(
    "make, expected, message",
    [
        (lambda root: root / "empty", FileNotFoundError, "has no profile.json"),
        (lambda root: root / "missing" / "profile.json", FileNotFoundError, "does not exist, and is not a hub id"),
        (lambda root: "runs/profile.json", FileNotFoundError, "does not exist, and is not a hub id"),
        (lambda root: "", ValueError, "expected a profile folder"),
    ],
)
def test_from_pretrained_refuses_what_it_cannot_read(tmp_path, make, expected, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(expected, match=message):
        Profile.from_pretrained(make(tmp_path))


def test_hub_options_on_a_local_folder_are_refused_not_ignored(model, tmp_path):
    folder = Profile.neutral(model).save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="revision='v1' applies to hub ids only"):
        Profile.from_pretrained(folder, revision="v1")


def test_from_pretrained_with_a_hub_id_downloads_profile_json(model, tmp_path, monkeypatch):
    profile = tuned_profile(model)
    folder = profile.save_pretrained(tmp_path / "cache")
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        return str(folder / kwargs["filename"])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.chdir(tmp_path)  # "someone/tiny-profile" is no local path here
    assert Profile.from_pretrained("someone/tiny-profile", revision="v2", token="t") == profile
    assert calls == [{
        "repo_id": "someone/tiny-profile", "filename": "profile.json", "repo_type": "model", "revision": "v2",
        "cache_dir": None, "token": "t", "local_files_only": False,
    }]


def test_a_failed_download_names_the_repository_and_revision(monkeypatch, tmp_path):
    def offline(**kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("no network, not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match=r"could not fetch profile.json of hub repository 'someone/p' at revision 'main' \(LocalEntryNotFoundError"):
        Profile.from_pretrained("someone/p", revision="main")


class FakeHfApi:
    """Records the calls push_to_hub makes and what the uploaded folder held at upload time."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def create_branch(self, **kwargs):
        self.calls.append(("create_branch", kwargs))

    def upload_folder(self, **kwargs):
        files = {path.name: path.read_text(encoding="utf-8") for path in Path(kwargs["folder_path"]).iterdir()}
        self.calls.append(("upload_folder", {**kwargs, "folder_path": "<tmp>", "files": files}))
        return "commit-info"


def test_push_to_hub_uploads_the_profile_and_its_card(model, monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    profile = tuned_profile(model)
    assert profile.push_to_hub("someone/tiny-profile", revision="exp", private=True, token="t") == "commit-info"
    names = [name for name, _ in FakeHfApi.calls]
    assert names == ["init", "create_repo", "create_branch", "upload_folder"]
    assert FakeHfApi.calls[1][1] == {"repo_id": "someone/tiny-profile", "repo_type": "model", "private": True, "exist_ok": True}
    upload = FakeHfApi.calls[3][1]
    assert upload["revision"] == "exp" and upload["allow_patterns"] == ["profile.json", "README.md"]
    assert sorted(upload["files"]) == ["README.md", "profile.json"]
    assert Profile.from_json(json.loads(upload["files"]["profile.json"])) == profile
    assert upload["files"]["README.md"] == render_model_card(profile)


def test_push_to_hub_needs_an_owner_and_name(model):
    with pytest.raises(ValueError, match="repo_id must read owner/name, got 'just-a-name'"):
        Profile.neutral(model).push_to_hub("just-a-name")


@pytest.mark.parametrize(
    "family, fingerprint",
    [
        ("llama", "sha256:6ac97e86b5a7a38b24e53f4febc706ca6679961141be9508448556e36f29d5a5"),
        ("gemma3", "sha256:021157b87b21ae30e4c13f97938ec065751ffaf03f53d55e57ff1cd1b6d20f55"),
    ],
)
def test_the_fingerprint_is_the_same_under_every_transformers_version(family, fingerprint):
    """Recorded under transformers 5.18 and checked under 4.57.6 (.venv-tf4): a saved profile keeps matching its model."""
    assert config_fingerprint(tiny_config(family)) == fingerprint


def test_the_card_summarises_fitted_per_head_gammas_per_layer():
    identity = ModelIdentity("llama", 3, 8, 2)
    gammas = [[1.0] * 8, [1 + 0.1 * head for head in range(1, 9)], [0.5 + 0.05 * head for head in range(8)]]
    profile = Profile(identity, gammas)
    profile.metadata[RECORD_KEY] = {**json.loads(json.dumps(TUNED_RECORD)), "level": 3, "gamma": 1.2, "heads": "all"}
    card = render_model_card(profile)
    assert "16 of 24 heads have a gamma other than 1.0" in card
    assert "| 1 | 1.1 | 1.8 | 8 |" in card and "| 2 | 0.5 | 0.85 | 8 |" in card  # one row per changed layer, not per value
    assert "level 3, a gamma per head fitted on every head of the tunable layers (geometric mean 1.2)" in card
    profile.metadata[RECORD_KEY].update(level=1, gamma=1.5)
    assert "level 1, gamma 1.5 on every head of the tunable layers" in render_model_card(profile)  # "all" is every head, not 3


def test_the_card_of_a_generation_run_says_answers_are_not_scored():
    profile = Profile(ModelIdentity("llama", 3, 8, 2), [[1.5] * 8] * 3)
    settings = {**TUNED_RECORD["settings"], "generation": {"max_new_tokens": 32, "chat_template": "off"}}
    profile.metadata[RECORD_KEY] = {**json.loads(json.dumps(TUNED_RECORD)), "settings": settings}
    profile.metadata[RECORD_KEY].pop("answer_scoring", None)
    assert "| answer scoring | none: a generation task (answers are generated, then matched) |" in render_model_card(profile)
