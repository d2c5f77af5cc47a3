"""Profile: constructors, validation and the JSON round trip."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import pytest

from zerotuning import ModelIdentity, Profile
from zerotuning.profile import SCHEMA_VERSION


def fake_model(model_type="llama", layers=3, heads=4, kv_heads=2):
    """Just what ModelIdentity.of reads: a config with the attention layout."""
    config = SimpleNamespace(
        model_type=model_type, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads
    )
    return SimpleNamespace(config=config)


def test_identity_of_a_model_and_of_a_real_tiny_model():
    assert ModelIdentity.of(fake_model()) == ModelIdentity("llama", 3, 4, 2)
    from tiny_models import tiny_model

    assert ModelIdentity.of(tiny_model("gemma3")) == ModelIdentity("gemma3_text", 2, 4, 2)


def test_identity_without_kv_heads_means_multi_head_attention():
    assert ModelIdentity.of(fake_model(kv_heads=None)).num_kv_heads == 4


def test_neutral_uniform_and_for_heads():
    model = fake_model()
    assert Profile.neutral(model).gammas == [[1.0] * 4] * 3
    assert Profile.uniform(model, 2.5).gammas == [[2.5] * 4] * 3
    assert Profile.uniform(model, 0.5, layers=[0, 2]).gammas == [[0.5] * 4, [1.0] * 4, [0.5] * 4]
    heads = Profile.for_heads(model, 3.0, [(0, 1), (2, 3), (0, 1)]).gammas
    assert heads == [[1.0, 3.0, 1.0, 1.0], [1.0] * 4, [1.0, 1.0, 1.0, 3.0]]
    assert Profile.uniform(model, 2.0, layers=[]).gammas == Profile.neutral(model).gammas


@pytest.mark.parametrize("gamma", [0.0, -1.0, math.inf, math.nan, True, "2"])
def test_gammas_must_be_finite_and_positive(gamma):
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        Profile.uniform(fake_model(), gamma)
    rows = [[1.0] * 4 for _ in range(3)]
    rows[1][2] = gamma
    with pytest.raises(ValueError, match=r"gammas\[1\]\[2\]"):
        Profile(ModelIdentity.of(fake_model()), rows)


def test_out_of_range_layers_and_heads_are_refused():
    model = fake_model()
    with pytest.raises(ValueError, match=r"layers: 3 is not a layer index in \[0, 3\)"):
        Profile.uniform(model, 2.0, layers=[3])
    with pytest.raises(ValueError, match=r"query head 4 .* not in \[0, 4\)"):
        Profile.for_heads(model, 2.0, [(0, 4)])
    with pytest.raises(ValueError, match="pairs"):
        Profile.for_heads(model, 2.0, [0])


def test_gammas_must_match_the_identity_shape():
    identity = ModelIdentity("llama", 2, 4, 2)
    with pytest.raises(ValueError, match=r"one row per layer \(2\)"):
        Profile(identity, [[1.0] * 4])
    with pytest.raises(ValueError, match=r"gammas\[1\] must have one gamma per query head \(4\), got 3"):
        Profile(identity, [[1.0] * 4, [1.0] * 3])


def test_identity_is_validated():
    with pytest.raises(ValueError, match="num_kv_heads"):
        ModelIdentity("llama", 2, 4, 3)
    with pytest.raises(ValueError, match="num_layers"):
        ModelIdentity("llama", 0, 4, 2)


def test_json_round_trip(tmp_path):
    model = fake_model()
    profile = Profile.for_heads(model, 0.3, [(1, 2)])
    profile.metadata.update(task="sentiment", level=2, seeds=[0, 1])
    path = profile.save(tmp_path / "profile.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["identity"] == {
        "model_type": "llama", "num_layers": 3, "num_heads": 4, "num_kv_heads": 2,
        "base_model": None, "config_fingerprint": profile.identity.config_fingerprint,
    }
    loaded = Profile.load(path)
    assert loaded == profile and loaded.identity.config_fingerprint == profile.identity.config_fingerprint


def test_metadata_must_be_json():
    with pytest.raises(ValueError, match="JSON-serialisable"):
        Profile(ModelIdentity.of(fake_model()), Profile.neutral(fake_model()).gammas, {"seed": object()})


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda d: d.pop("gammas"), "expected keys"),
        (lambda d: d.update(extra=1), "expected keys"),
        (lambda d: d["identity"].pop("num_heads"), "identity: expected an object with keys"),
        (lambda d: d["gammas"][0].__setitem__(0, -2.0), r"gammas\[0\]\[0\]"),
        (lambda d: d["gammas"].pop(), "one row per layer"),
    ],
)
def test_load_refuses_bad_files_with_clear_errors(tmp_path, edit, message):
    data = Profile.neutral(fake_model()).to_json()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        Profile.load(path)


def test_load_refuses_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Profile.load(path)


def test_check_matches_names_both_shapes():
    profile = Profile.neutral(fake_model(layers=3))
    with pytest.raises(ValueError, match=r"llama with 3 layers x 4 query heads.*llama with 5 layers x 4 query heads"):
        profile.check_matches(ModelIdentity("llama", 5, 4, 2))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("huge_integer", "gamma must be a finite number > 0"),
        ("utf16", "is not UTF-8 text"),
        ("latin1", "is not UTF-8 text"),
    ],
)
def test_load_errors_name_the_file_for_huge_numbers_and_other_encodings(tmp_path, content, message):
    model = fake_model()
    path = tmp_path / "profile.json"
    text = json.dumps(Profile.uniform(model, 2.0).to_json())
    if content == "huge_integer":
        path.write_text(text.replace("2.0", "1" + "0" * 400, 1), encoding="utf-8")
    elif content == "utf16":
        path.write_bytes(text.encode("utf-16"))
    else:
        path.write_bytes(text.replace('"metadata": {}', '"metadata": {"note": "caf\\u00e9"}').encode("utf-8").replace(b"\\u00e9", "é".encode("latin-1")))
    with pytest.raises(ValueError, match=rf"profile '{re.escape(str(path))}'.*{message}"):
        Profile.load(path)
