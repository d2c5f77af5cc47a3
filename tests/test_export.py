"""``zerotuning export``: a loaded model as a plain HuggingFace folder with its profile, checked and atomic."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from zerotuning import ModelIdentity, Profile, export
from zerotuning.cli import main
from zerotuning.models import load_model

from scoring_support import PROMPT_WORDS, SPECIALS, save_tiny_model_folder, tiny_lm, word_tokenizer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model_folder(tmp_path_factory.mktemp("export") / "tiny-llama")


def _folder_logits(folder, texts):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = [tokenizer(text)["input_ids"] for text in texts]
    with torch.no_grad():
        return ids, [model(torch.tensor([row])).logits for row in ids]


def test_export_writes_a_folder_that_reloads_to_the_same_model_with_the_profile(tiny_folder, tmp_path):
    model, tokenizer = load_model(str(tiny_folder))
    profile = Profile.uniform(model, 1.5, layers=[1])
    out = export.export_model(model, tokenizer, tmp_path / "exported", profile)

    assert Profile.load(out / export.PROFILE_FILE) == profile
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "zerotuning_load" not in config
    record = json.loads((out / export.EXPORT_RECORD_FILE).read_text())
    assert record["profile"] is True and record["identity"]["num_layers"] == 2 and record["check"]["sink"] == "bos"
    texts = ["the movie was good", "bad"]
    ids, logits = _folder_logits(out, texts)
    assert all(row[0] == tokenizer.bos_token_id for row in ids)
    with torch.no_grad():
        for row, got in zip(ids, logits):
            torch.testing.assert_close(got, model(torch.tensor([row])).logits, rtol=0, atol=0)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exported"]  # no staging folder left


def test_export_keeps_the_bos_that_load_model_had_to_add(tmp_path):
    words = list(dict.fromkeys(SPECIALS + PROMPT_WORDS + ("movie", "good")))
    backend = Tokenizer(models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # no post-processor: no BOS prepended
    bare = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    assert bare("movie good")["input_ids"][0] != bare.bos_token_id
    source = tmp_path / "source"
    tiny_lm(word_tokenizer()).save_pretrained(source)
    bare.save_pretrained(source)
    model, tokenizer = load_model(str(source))
    assert tokenizer("movie good")["input_ids"][0] == tokenizer.bos_token_id  # load_model added it

    out = export.export_model(model, tokenizer, tmp_path / "exported")
    assert not (out / export.PROFILE_FILE).exists()
    assert AutoTokenizer.from_pretrained(out)("movie good")["input_ids"] == tokenizer("movie good")["input_ids"]


def test_export_refuses_an_existing_folder_and_a_profile_for_another_model(tiny_folder, tmp_path):
    model, tokenizer = load_model(str(tiny_folder))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_model(model, tokenizer, existing)
    assert [path.name for path in existing.iterdir()] == ["keep.txt"]

    other = Profile.uniform(ModelIdentity("llama", 3, 4, 2), 2.0)
    with pytest.raises(ValueError, match="3 layers"):
        export.export_model(model, tokenizer, tmp_path / "new", other)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["existing"]


def test_a_failed_check_leaves_no_folder(tiny_folder, tmp_path, monkeypatch):
    model, tokenizer = load_model(str(tiny_folder))

    def failing_check(*args):
        raise RuntimeError("export: the reloaded folder's logits differ")

    monkeypatch.setattr(export, "_check_folder", failing_check)
    with pytest.raises(RuntimeError, match="logits differ"):
        export.export_model(model, tokenizer, tmp_path / "exported")
    assert list(tmp_path.iterdir()) == []


def test_the_check_catches_a_tokenizer_that_loses_the_sink(tiny_folder, tmp_path, monkeypatch):
    model, tokenizer = load_model(str(tiny_folder))
    save = tokenizer.save_pretrained

    def save_without_bos(folder, *args, **kwargs):
        written = save(folder, *args, **kwargs)
        data = json.loads((folder / "tokenizer.json").read_text())
        data["post_processor"] = None
        (folder / "tokenizer.json").write_text(json.dumps(data))
        return written

    monkeypatch.setattr(tokenizer, "save_pretrained", save_without_bos)
    with pytest.raises(RuntimeError, match="sink is 'first_prompt_token'"):
        export.export_model(model, tokenizer, tmp_path / "exported")
    assert list(tmp_path.iterdir()) == []


def test_cli_export(tiny_folder, tmp_path, capsys):
    model, _ = load_model(str(tiny_folder))
    profile_path = Profile.uniform(model, 0.5).save(tmp_path / "profile.json")
    assert main(["export", "--model", str(tiny_folder), "--profile", str(profile_path), "--out", str(tmp_path / "out")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert Profile.load(tmp_path / "out" / export.PROFILE_FILE) == Profile.load(profile_path)

    assert main(["export", "--model", str(tiny_folder), "--out", str(tmp_path / "out")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["export", "--model", str(tiny_folder), "--profile", str(tmp_path / "none.json"), "--out", str(tmp_path / "x")]) == 2
    assert "--profile" in capsys.readouterr().err and not (tmp_path / "x").exists()
