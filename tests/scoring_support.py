"""Tiny, download-free stand-ins for the engine tests: a word-level tokenizer, a matching random model, toy data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tiny_models import tiny_model

POSITIVE_WORDS = ("good", "great", "fine", "lovely", "superb")
NEGATIVE_WORDS = ("bad", "awful", "poor", "dull", "boring")
FILLER_WORDS = ("the", "movie", "film", "was", "is", "very", "plot", "acting", "and", "a")
PROMPT_WORDS = ("Classify", "sentence", "into", "one", "of", "following", "categories", "positive", "or", "negative",
                "Sentence", "Answer", "Review", "Which", "word", "A", "B", "C", "D", ":", ".", ",", "?")
SPECIALS = ("<unk>", "<pad>", "<s>", "</s>")


def word_tokenizer(extra_words: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A whitespace/punctuation word-level tokenizer that prepends <s> (like a BOS-adding Llama tokenizer)."""
    words = list(dict.fromkeys(SPECIALS + PROMPT_WORDS + POSITIVE_WORDS + NEGATIVE_WORDS + FILLER_WORDS + extra_words))
    backend = Tokenizer(models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", words.index("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def tiny_lm(tokenizer: PreTrainedTokenizerFast, family: str = "llama") -> torch.nn.Module:
    """A seeded random decoder of ``family`` (``tests/tiny_models.py``) sized for ``tokenizer``'s vocabulary."""
    return tiny_model(
        family,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def sentiment_rows(count: int, seed: int = 0) -> list[dict]:
    """Toy sentences labelled by which sentiment words they hold more of (lengths vary, to exercise padding)."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = rng.choice(("positive", "negative"))
        cue_words = POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS
        words = [rng.choice(FILLER_WORDS) for _ in range(rng.randint(2, 9))] + [rng.choice(cue_words)]
        rng.shuffle(words)
        rows.append({"id": f"s{index}", "text": " ".join(words), "label": label})
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def save_tiny_model_folder(folder: Path) -> Path:
    """A local HuggingFace model folder (config, weights, tokenizer) that ``load_model`` can read."""
    tokenizer = word_tokenizer()
    tiny_lm(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
