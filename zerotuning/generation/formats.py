"""How a conversation becomes the tokens the model reads, and which tokens end its answer.

Chosen by ``--chat-template``. ``on`` (the resolved format is named ``chat``): the tokenizer's chat
template (``apply_chat_template`` with the generation prompt); the answer ends with the token that
closes an assistant turn in that template (e.g. ``<|im_end|>``), or the EOS token. ``off`` (named
``plain``), for models without a template: ``Question: ...`` / ``Answer: ...`` lines, ending with
``Answer:``; the answer ends at a newline or the EOS token. ``auto``: ``on`` when the tokenizer has
a template, else ``off`` (the resolved format is recorded).

The sink is the first token of the rendered prompt: a template that writes the BOS itself is
encoded without special tokens (no second BOS); otherwise the tokenizer adds its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tasks.task import Message

CHAT_TEMPLATE_CHOICES = ("auto", "on", "off")
_PROBE_ANSWER = "Zqxjv"  # a string no template writes by itself, to find what follows an answer


@dataclass(frozen=True)
class PromptFormat:
    """A resolved format for one tokenizer: how to render, how to encode, and the stop tokens."""

    name: str  # "chat" or "plain"
    tokenizer: object
    stop_token_ids: tuple[int, ...]
    add_special_tokens: bool
    end_of_turn: str  # the text that closes an answer ("" when only EOS closes it)

    def prompt_text(self, messages: tuple[Message, ...]) -> str:
        """The rendered conversation, ending where the model starts its answer."""
        if self.name == "chat":
            return self.tokenizer.apply_chat_template(_dicts(messages), add_generation_prompt=True, tokenize=False)
        lines = [_plain_line(role, content) for role, content in messages]
        return "\n".join(lines + ["Answer:"])

    def answer_text(self, answer: str) -> str:
        """What follows the prompt when the model gives ``answer`` and ends its turn."""
        return (answer if self.name == "chat" else " " + answer) + self.end_of_turn

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def answer_of(self, generated_ids: list[int]) -> tuple[str, bool, int]:
        """(answer text, whether a stop token ended it, tokens up to and including the stop token)."""
        stops = set(self.stop_token_ids)
        end = next((index for index, token in enumerate(generated_ids) if token in stops), None)
        kept = generated_ids if end is None else generated_ids[:end]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        if self.name == "plain" and end is not None:
            text += self.tokenizer.decode([generated_ids[end]], skip_special_tokens=True).split("\n", 1)[0]
        return text.strip(), end is not None, len(generated_ids) if end is None else end + 1

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "add_special_tokens": self.add_special_tokens,
            "end_of_turn": self.end_of_turn,
            "stop_token_count": len(self.stop_token_ids),
            "stop_tokens_sample": [self.tokenizer.decode([token]) for token in self.stop_token_ids[:8]],
        }


def uses_chat_template(tokenizer, chat_template: str, plain: str) -> bool:
    """Whether ``--chat-template`` ``chat_template`` (auto, on or off) renders through ``tokenizer``'s
    template; ``on`` without one is refused, the message offering ``plain`` (the plain format's name)."""
    if chat_template not in CHAT_TEMPLATE_CHOICES:
        raise ValueError(f"--chat-template: got {chat_template!r}, expected one of {CHAT_TEMPLATE_CHOICES}")
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if chat_template == "on" and not has_template:
        raise ValueError(
            f"--chat-template on: the tokenizer {type(tokenizer).__name__} has no chat template; "
            f"use --chat-template off ({plain}) or a tokenizer with a template"
        )
    return chat_template != "off" and has_template


def resolve_format(tokenizer, chat_template: str, eos_token_ids: tuple[int, ...] = ()) -> PromptFormat:
    """The ``PromptFormat`` for ``--chat-template`` ``chat_template`` (auto, on or off) on ``tokenizer``."""
    chat = uses_chat_template(tokenizer, chat_template, "Question:/Answer: lines")
    eos = tuple(dict.fromkeys([*eos_token_ids, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])]))
    if not chat:
        return PromptFormat("plain", tokenizer, _newline_tokens(tokenizer) + eos, _adds_bos(tokenizer, "Question:"), "\n")
    return _chat_format(tokenizer, eos)


def _chat_format(tokenizer, eos: tuple[int, ...]) -> PromptFormat:
    probe = [{"role": "user", "content": "Hi"}]
    prompt = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(probe + [{"role": "assistant", "content": _PROBE_ANSWER}], tokenize=False)
    if not full.startswith(prompt + _PROBE_ANSWER):
        raise ValueError(
            "--chat-template: the chat template does not write an assistant answer right after its generation "
            f"prompt ({prompt[-40:]!r} then {full[len(prompt) - 40 :]!r}); use --chat-template off"
        )
    end_of_turn = full[len(prompt) + len(_PROBE_ANSWER) :].rstrip()
    stops = eos
    if end_of_turn:
        end_ids = tokenizer(end_of_turn, add_special_tokens=False)["input_ids"]
        if len(end_ids) != 1:
            raise ValueError(
                f"--chat-template: the template closes an answer with {end_of_turn!r}, which is {len(end_ids)} tokens, "
                "not one stop token; use --chat-template off"
            )
        stops = tuple(dict.fromkeys([end_ids[0], *eos]))
    if not stops:
        raise ValueError("--chat-template: the template closes an answer with nothing and the tokenizer has no EOS token")
    return PromptFormat("chat", tokenizer, stops, _adds_bos(tokenizer, prompt), end_of_turn)


def _adds_bos(tokenizer, rendered: str) -> bool:
    """Encode with special tokens unless the rendered text already starts with the BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and rendered.startswith(bos))


def _newline_tokens(tokenizer) -> tuple[int, ...]:
    """Every token whose text holds a newline (any of them ends a plain-format answer); once per run."""
    texts = tokenizer.batch_decode([[token] for token in range(len(tokenizer))])
    newline_tokens = tuple(token for token, text in enumerate(texts) if "\n" in text)
    if not newline_tokens:
        raise ValueError(f"--chat-template off: the tokenizer {type(tokenizer).__name__} has no token holding a newline")
    return newline_tokens


def _plain_line(role: str, content: str) -> str:
    return content if role == "system" else f"Question: {content}" if role == "user" else f"Answer: {content}"


def _dicts(messages: tuple[Message, ...]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in messages]
