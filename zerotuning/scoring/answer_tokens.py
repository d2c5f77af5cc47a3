"""The one token per answer that the model is scored on at the answer position.

The model's next-token distribution after "Answer:" is read once per example. Each answer
(label word or option letter) is represented by the first token the tokenizer produces for
``"Answer: <answer>"`` after the tokens of ``"Answer:"`` — so the leading space is handled the way
the tokenizer handles it in context. A multi-token label is thus scored by its first token: exact
for the prediction among the labels as long as first tokens differ (checked here; otherwise a
clear error asks for other label words), and it keeps scoring at one forward pass per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tasks.prompts import ANSWER_CUE


@dataclass(frozen=True)
class AnswerTokens:
    """Answer strings, their scored token ids, those tokens' text, and each answer's full token count."""

    answers: tuple[str, ...]
    token_ids: tuple[int, ...]
    token_texts: tuple[str, ...]
    token_counts: tuple[int, ...]

    def parse(self, generated_text: str) -> int:
        """The answer a greedily generated token names (case and surrounding space ignored), or -1."""
        normalised = generated_text.strip().casefold()
        keys = [text.strip().casefold() for text in self.token_texts]
        return keys.index(normalised) if normalised and normalised in keys else -1

    def to_json(self) -> list[dict]:
        return [
            {"answer": answer, "token_id": token_id, "token_text": text, "answer_token_count": count}
            for answer, token_id, text, count in zip(self.answers, self.token_ids, self.token_texts, self.token_counts)
        ]


def answer_tokens(tokenizer, answers: tuple[str, ...], cue: str = ANSWER_CUE) -> AnswerTokens:
    """Find the scored token of each answer; raise if two answers would be indistinguishable."""
    cue_ids = tokenizer(cue, add_special_tokens=False)["input_ids"]
    token_ids, token_texts, token_counts = [], [], []
    for answer in answers:
        full_ids = tokenizer(f"{cue} {answer}", add_special_tokens=False)["input_ids"]
        if full_ids[: len(cue_ids)] != cue_ids or len(full_ids) == len(cue_ids):
            raise ValueError(
                f"answer {answer!r}: the tokenizer merges it into the cue {cue!r} ({full_ids} vs {cue_ids}), "
                "so it has no token of its own at the answer position"
            )
        token_ids.append(full_ids[len(cue_ids)])
        token_texts.append(tokenizer.decode([token_ids[-1]]))
        token_counts.append(len(full_ids) - len(cue_ids))
    _check_distinguishable(answers, token_ids, token_texts)
    return AnswerTokens(tuple(answers), tuple(token_ids), tuple(token_texts), tuple(token_counts))


def _check_distinguishable(answers, token_ids: list[int], token_texts: list[str]) -> None:
    keys = [text.strip().casefold() for text in token_texts]
    for first in range(len(answers)):
        if not keys[first]:
            raise ValueError(
                f"answer {answers[first]!r} starts with a whitespace-only token {token_texts[first]!r}: "
                "it cannot be told apart from other answers at the answer position; choose other label words"
            )
        for second in range(first):
            if token_ids[first] == token_ids[second] or keys[first] == keys[second]:
                raise ValueError(
                    f"answers {answers[second]!r} and {answers[first]!r} both start with the token "
                    f"{token_texts[first]!r}, so one forward pass cannot tell them apart; choose label words "
                    "whose first tokens differ (e.g. --labels with other words)"
                )
