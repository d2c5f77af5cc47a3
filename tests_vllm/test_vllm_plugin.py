"""The vLLM plugin on the default model: stock behaviour with a neutral profile, transformers +
zerotuning's tokens and log-probabilities with a tuned one, with prefix caching and chunked prefill.

Prompts are passed as token ids (BOS first) so that both engines see the same tokens. Sixteen
prompts of mixed lengths share a long instruction (several full KV blocks, so the prefix cache is
hit), and ``max_num_batched_tokens`` is smaller than the longer prompts (chunked prefill).
"""

from __future__ import annotations

import gc

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

from conftest import ENGINE_SETTINGS
from zerotuning import Profile, apply, remove
from zerotuning.vllm import WORKER_EXTENSION, swap_profile

NEW_TOKENS = 32
INSTRUCTION = (
    "You are a careful assistant. Answer each question with one short sentence, using plain words, "
    "no lists and no formatting. If a question has several parts, answer the first part only. "
    "Keep names and numbers exactly as a reference book would give them. "
    "Do not apologise, do not repeat the question, and do not add a greeting or a closing line. "
    "When you are not sure, give the answer most reference books agree on, without saying that you are unsure. "
    "Write numbers as digits, dates as day, month and year, and measurements in metric units. "
    "Prefer the common English name of a place or a person to its local name, and spell it the usual way. "
    "Questions follow, one per request; treat each one on its own, as if no other question had been asked. "
)
QUESTIONS = [
    "What is the capital of France?", "Water boils at", "Name a primary colour.", "Who wrote Hamlet?",
    "How many legs does a spider have?", "What gas do plants take in?", "The largest ocean is",
    "What is seven times eight?", "Which planet is called the red planet?", "Translate 'merci' to English.",
    "What is the opposite of cold?", "The chemical symbol for gold is",
]
STANDALONE = ["Hello", "Once upon a time, in a small village by the sea, there lived an old fisherman who",
              "1, 2, 3, 4,", "The quick brown fox"]
# Chunked prefill: prompts longer than this are prefilled in several steps.
CHUNK_TOKENS = 64
# Stock vLLM's CPU build itself returns log-probabilities that differ by up to ~5e-6 between two
# identical calls on one engine (measured here: one short prompt of the sixteen), so runs are
# compared token for token and log-probability within this bound, not bit for bit.
RUN_TO_RUN = 2e-5


def tuned_profile(identity) -> Profile:
    profile = Profile.uniform(identity, 1.8, layers=range(0, 12))
    rows = [list(row) for row in profile.gammas]
    for layer in range(20, 30):
        rows[layer] = [0.5 if head % 2 else 1.0 for head in range(identity.num_heads)]
    return Profile(profile.identity, rows)


@pytest.fixture(scope="module")
def tokenizer(exported_model):
    return AutoTokenizer.from_pretrained(exported_model)


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    texts = [INSTRUCTION + question for question in QUESTIONS] + STANDALONE
    ids = [tokenizer(text).input_ids for text in texts]
    assert all(row[0] == tokenizer.bos_token_id for row in ids), "the exported tokenizer must prepend the BOS (the sink)"
    assert len({len(row) for row in ids}) > 8 and max(len(row) for row in ids) > 2 * CHUNK_TOKENS
    return ids


@pytest.fixture(scope="module")
def hf_model(exported_model):
    model = AutoModelForCausalLM.from_pretrained(exported_model, dtype=torch.float32)
    return model.eval()


def engine(exported_model, **extra) -> LLM:
    return LLM(
        str(exported_model), **ENGINE_SETTINGS, enable_prefix_caching=True, enable_chunked_prefill=True,
        max_num_batched_tokens=CHUNK_TOKENS, **extra,
    )


def generate(llm: LLM, prompts: list[list[int]]) -> list[tuple[list[int], list[float]]]:
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, logprobs=1, ignore_eos=True)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=row) for row in prompts], params, use_tqdm=False)
    result = []
    for output in outputs:
        completion = output.outputs[0]
        tokens = list(completion.token_ids)
        result.append((tokens, [step[token].logprob for step, token in zip(completion.logprobs, tokens)]))
    return result


def assert_same_run(outputs, expected) -> None:
    assert [tokens for tokens, _ in outputs] == [tokens for tokens, _ in expected]
    worst = max(abs(a - b) for (_, ours), (_, theirs) in zip(outputs, expected) for a, b in zip(ours, theirs))
    assert worst <= RUN_TO_RUN, f"log-probabilities differ by {worst:.2e}"


def shutdown(llm: LLM) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


@pytest.fixture(scope="module")
def stock_outputs(exported_model, prompts):
    llm = engine(exported_model)
    generate(llm, prompts)  # fills the prefix cache: the second call hits it
    outputs = generate(llm, prompts)
    shutdown(llm)
    return outputs


@pytest.fixture(scope="module")
def plugin_engine(exported_model, stock_outputs, tmp_path_factory, hf_model):
    neutral = tmp_path_factory.mktemp("profiles") / "neutral.json"
    Profile.neutral(hf_model).save(neutral)
    llm = engine(exported_model, additional_config={"zerotuning_profile": str(neutral)}, worker_extension_cls=WORKER_EXTENSION)
    yield llm
    shutdown(llm)


def transformers_reference(model, profile, prompts, outputs):
    """Per prompt: the greedy token and log-probability transformers + zerotuning give after the
    prompt and vLLM's tokens so far (teacher forcing over vLLM's continuation)."""
    apply(model, profile)
    try:
        reference = []
        with torch.no_grad():
            for row, (tokens, _) in zip(prompts, outputs):
                logits = model(torch.tensor([row + tokens])).logits[0, len(row) - 1 : -1].double()
                logprobs = logits.log_softmax(-1)
                greedy = logprobs.argmax(-1)
                reference.append((greedy.tolist(), logprobs.gather(-1, torch.tensor(tokens)[:, None])[:, 0].tolist()))
        return reference
    finally:
        remove(model)


def test_a_neutral_profile_gives_exactly_stock_tokens_and_logprobs(plugin_engine, prompts, stock_outputs):
    generate(plugin_engine, prompts)
    assert_same_run(generate(plugin_engine, prompts), stock_outputs)


def test_a_tuned_profile_gives_the_tokens_and_logprobs_of_transformers_with_zerotuning(plugin_engine, prompts, hf_model, stock_outputs):
    profile = tuned_profile(Profile.neutral(hf_model).identity)
    swap_profile(plugin_engine, profile)
    first = generate(plugin_engine, prompts)
    second = generate(plugin_engine, prompts)  # now through the prefix cache filled under the tuned profile
    assert_same_run(second, first)
    assert [t for t, _ in first] != [t for t, _ in stock_outputs], "the profile changed nothing: the plugin path did not run"
    reference = transformers_reference(hf_model, profile, prompts, first)
    worst = 0.0
    for (tokens, logprobs), (greedy, reference_logprobs) in zip(first, reference):
        assert tokens == greedy
        worst = max(worst, max(abs(a - b) for a, b in zip(logprobs, reference_logprobs)))
    assert worst < 1e-3, f"log-probabilities differ from transformers + zerotuning by {worst:.2e}"


def test_swapping_back_to_neutral_restores_stock_outputs(plugin_engine, prompts, hf_model, stock_outputs):
    swap_profile(plugin_engine, tuned_profile(Profile.neutral(hf_model).identity))
    generate(plugin_engine, prompts)
    swap_profile(plugin_engine, Profile.neutral(hf_model))
    assert_same_run(generate(plugin_engine, prompts), stock_outputs)


def test_a_swap_to_another_models_profile_is_refused(plugin_engine, prompts, hf_model, stock_outputs):
    from zerotuning import ModelIdentity

    wrong = Profile.uniform(ModelIdentity("llama", 30, 12, 3), 2.0)
    with pytest.raises(Exception, match="swap to a profile for llama with 30 layers x 12"):
        swap_profile(plugin_engine, wrong)
    swap_profile(plugin_engine, Profile.neutral(hf_model))
    assert_same_run(generate(plugin_engine, prompts), stock_outputs)
