"""How an option task's prompt becomes the tokens the model reads: plain text, or the tokenizer's chat template.

Chosen by ``--chat-template`` (``RunSettings.chat_template``). ``off`` (the default for option
tasks, named ``plain``): the paper's prompt (``zerotuning.tasks.prompts.render_prompt``) encoded
with the tokenizer's special tokens, so the BOS is the sink; answers are scored after the cue
``Answer:`` with a leading space. ``on`` (named ``chat``): the same text as chat turns
(``render_messages``) through ``apply_chat_template`` with the generation prompt, and the answer
scored right after it, without a leading space (``answer_tokens(prefix="")``). ``auto``: ``on`` when
the tokenizer has a template, else ``off``; it is never the default for option tasks, so that runs
recorded before the option existed keep their meaning.

The sink is the first token of the rendered prompt, never a second BOS: a template that writes the
BOS itself (SmolLM2's ``<|im_start|>``, Gemma's ``<bos>``) is encoded without special tokens;
otherwise the tokenizer adds its BOS in front of the template's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..generation.formats import PromptFormat, resolve_format, uses_chat_template
from ..tasks.prompts import ANSWER_CUE, render_messages, render_prompt
from ..tasks.task import Example, TaskSpec

OPTION_TASK_DEFAULT = "off"
_PROBE_TURN = (("user", "Hi"),)  # any user turn: the text after it is the template's generation prompt


@dataclass(frozen=True)
class OptionFormat:
    """A resolved format: how prompts are rendered and encoded, and what the answer tokens are read after."""

    name: str  # "plain" or "chat"
    requested: str  # the --chat-template value it was resolved from
    add_special_tokens: bool
    answer_cue: str  # the text the answers' tokens are found after (tokenised in that context)
    answer_prefix: str  # what precedes the answer's word in its canonical form: " " after "Answer:", "" in an assistant turn
    chat: PromptFormat | None = None

    def prompt_text(self, spec: TaskSpec, example: Example, demonstrations: tuple[Example, ...] = ()) -> str:
        """The rendered prompt, ending where the answer starts."""
        if self.chat is None:
            return render_prompt(spec, example, demonstrations)
        return self.chat.prompt_text(render_messages(spec, example, demonstrations))

    def encode(self, prompts: list[str], tokenizer: Any) -> list[list[int]]:
        return tokenizer(prompts, add_special_tokens=self.add_special_tokens)["input_ids"]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "chat_template": self.requested,
            "add_special_tokens": self.add_special_tokens,
            "answer_cue": self.answer_cue,
            "answer_prefix": self.answer_prefix,
        }


def resolve_option_format(tokenizer, chat_template: str = OPTION_TASK_DEFAULT) -> OptionFormat:
    """The ``OptionFormat`` for ``chat_template`` (auto, on or off) on ``tokenizer``."""
    if not uses_chat_template(tokenizer, chat_template, "the plain 'Answer:' prompt"):
        return OptionFormat("plain", chat_template, True, ANSWER_CUE, " ")
    chat = resolve_format(tokenizer, "on")  # checks that an assistant answer follows the generation prompt directly
    return OptionFormat("chat", chat_template, chat.add_special_tokens, chat.prompt_text(_PROBE_TURN), "", chat)
