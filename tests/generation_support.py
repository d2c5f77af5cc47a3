"""Download-free stand-ins for the generation tests: a word-level tokenizer with a chat template, toy arithmetic rows."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from scoring_support import FILLER_WORDS, NEGATIVE_WORDS, POSITIVE_WORDS, PROMPT_WORDS, tiny_lm

SPECIALS = ("<unk>", "<pad>", "<s>", "</s>")
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
WORDS = tuple(str(number) for number in range(21)) + (
    "What", "is", "plus", "minus", "times", "Now", "add", "to", "that", "Question", "Answer", "Reply", "with", "a",
    "number", "only", "Be", "brief", "You", "are", "helpful", ":", ".", "?", ",", "!", "\n",
)
# Roles and turn ends as special tokens; the template writes the BOS itself (as SmolLM2's and Gemma's do).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def generation_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """Word-level tokenizer that prepends <s>; newlines are their own token; with ``chat`` a chat template."""
    # The classification test words too, so that one tiny model folder serves both kinds of task.
    vocabulary = list(dict.fromkeys(SPECIALS + WORDS + PROMPT_WORDS + POSITIVE_WORDS + NEGATIVE_WORDS + FILLER_WORDS))
    backend = Tokenizer(models.WordLevel({word: index for index, word in enumerate(vocabulary)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", "removed"), pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Punctuation()])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocabulary.index("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    if chat:
        tokenizer.add_special_tokens({"additional_special_tokens": list(CHAT_TOKENS)})
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def generation_lm(tokenizer, family: str = "llama"):
    return tiny_lm(tokenizer, family)


def arithmetic_rows(count: int, *, multi_turn_every: int = 3) -> list[dict]:
    """Sums as prompts; every ``multi_turn_every``-th row a two-turn conversation whose follow-up uses the first answer."""
    rows = []
    for index in range(count):
        a, b = index % 7, (index * 3) % 5
        if multi_turn_every and index % multi_turn_every == 0:
            messages = [
                {"role": "user", "content": f"What is {a} plus {b} ?"},
                {"role": "assistant", "content": str(a + b)},
                {"role": "user", "content": "Now add 2 to that ."},
            ]
            rows.append({"id": f"g{index}", "messages": messages, "references": [str(a + b + 2)], "pattern": rf"\b{a + b + 2}\b"})
        else:
            rows.append({"id": f"g{index}", "prompt": f"What is {a} plus {b} ?", "references": [str(a + b), f"{a + b} ."]})
    return rows


def save_generation_model_folder(folder):
    """A local model folder (config, weights, tokenizer with its chat template) that ``load_model`` reads."""
    tokenizer = generation_tokenizer()
    generation_lm(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
