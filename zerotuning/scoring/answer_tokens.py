"""The tokens an answer can start with at the answer position, and how a greedy token is read as an answer.

The model's next-token distribution after "Answer:" is read once per example. An answer (label
word or option letter) can be written in several *surface forms*: with or without the leading
space, and, for a word, lower-case, capitalised or as given. Each form is tokenised after the cue
(``"Answer: <form>"`` / ``"Answer:<form>"``, minus the cue's tokens, so spaces are tokenised as in
context) and its first token kept; an answer's probability is the total probability of its forms'
distinct first tokens (``ANSWER_FORMS = "surface"``). ``"first_token"`` keeps only the canonical
form (``" <answer>"`` as given), the scorer before surface forms.

A multi-token answer is thus scored by its first tokens: exact for the prediction among answers as
long as no first token is shared between answers. A shared canonical first token (``very good`` /
``very bad``) is refused with a clear error (full-sequence likelihood scoring is not implemented);
a non-canonical form whose first token another answer's form also starts with is dropped from both (recorded).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tasks.prompts import ANSWER_CUE

ANSWER_FORMS = ("surface", "first_token")


@dataclass(frozen=True)
class AnswerTokens:
    """Per answer: the canonical token (``token_ids``), every scored first token (``forms``) and their text."""

    answers: tuple[str, ...]
    token_ids: tuple[int, ...]
    token_texts: tuple[str, ...]
    token_counts: tuple[int, ...]
    forms: tuple[tuple[int, ...], ...] = ()
    form_texts: tuple[tuple[str, ...], ...] = ()
    mode: str = "first_token"
    dropped_forms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.forms:  # canonical tokens only
            object.__setattr__(self, "forms", tuple((token,) for token in self.token_ids))
            object.__setattr__(self, "form_texts", tuple((text,) for text in self.token_texts))

    def parse(self, generated_text: str) -> int:
        """The answer a greedily generated token names (any of its forms; case and surrounding space ignored), or -1."""
        normalised = generated_text.strip().casefold()
        if not normalised:
            return -1
        for index, texts in enumerate(self.form_texts):
            if normalised in {text.strip().casefold() for text in texts}:
                return index
        return -1

    def to_json(self) -> list[dict]:
        return [
            {
                "answer": answer,
                "token_id": token_id,
                "token_text": text,
                "answer_token_count": count,
                "form_token_ids": list(form_ids),
                "form_token_texts": list(form_texts),
            }
            for answer, token_id, text, count, form_ids, form_texts in zip(
                self.answers, self.token_ids, self.token_texts, self.token_counts, self.forms, self.form_texts
            )
        ]

    def describe(self) -> dict:
        """How answers are scored, for the results file."""
        return {"mode": self.mode, "dropped_forms": list(self.dropped_forms)}


def answer_tokens(tokenizer, answers: tuple[str, ...], cue: str = ANSWER_CUE, forms: str = "surface") -> AnswerTokens:
    """Find each answer's scored first tokens; raise if two answers would be indistinguishable."""
    if forms not in ANSWER_FORMS:
        raise ValueError(f"forms: got {forms!r}, expected one of {ANSWER_FORMS}")
    cue_ids = tokenizer(cue, add_special_tokens=False)["input_ids"]
    token_ids, token_texts, token_counts = [], [], []
    for answer in answers:
        full_ids = _after_cue(tokenizer, cue, cue_ids, f" {answer}")
        if full_ids is None:
            raise ValueError(
                f"answer {answer!r}: the tokenizer merges it into the cue {cue!r}, "
                "so it has no token of its own at the answer position"
            )
        token_ids.append(full_ids[0])
        token_texts.append(tokenizer.decode([token_ids[-1]]))
        token_counts.append(len(full_ids))
    _check_distinguishable(answers, token_ids, token_texts)
    if forms == "first_token":
        return AnswerTokens(tuple(answers), tuple(token_ids), tuple(token_texts), tuple(token_counts))
    candidates = [_form_tokens(tokenizer, cue, cue_ids, answer, canonical) for answer, canonical in zip(answers, token_ids)]
    kept, dropped = _drop_shared_forms(tokenizer, answers, candidates, token_ids)
    return AnswerTokens(
        tuple(answers),
        tuple(token_ids),
        tuple(token_texts),
        tuple(token_counts),
        forms=tuple(tuple(ids) for ids in kept),
        form_texts=tuple(tuple(tokenizer.decode([i]) for i in ids) for ids in kept),
        mode="surface",
        dropped_forms=tuple(dropped),
    )


def surface_forms(answer: str) -> list[str]:
    """The ways a model may write ``answer`` after the cue: the canonical ``" answer"`` first."""
    words = [answer] if len(answer) == 1 else [answer, answer.lower(), answer[:1].upper() + answer[1:].lower()]  # "a" is no option letter
    words = list(dict.fromkeys(words))
    return [f" {word}" for word in words] + words


def _after_cue(tokenizer, cue: str, cue_ids: list[int], form: str) -> list[int] | None:
    """The tokens of ``form`` after the cue, or None if the tokenizer merges it into the cue."""
    full_ids = tokenizer(f"{cue}{form}", add_special_tokens=False)["input_ids"]
    if full_ids[: len(cue_ids)] != cue_ids or len(full_ids) == len(cue_ids):
        return None
    return full_ids[len(cue_ids) :]


def _form_tokens(tokenizer, cue: str, cue_ids: list[int], answer: str, canonical: int) -> list[int]:
    ids = [canonical]
    for form in surface_forms(answer)[1:]:
        tokens = _after_cue(tokenizer, cue, cue_ids, form)
        if tokens is None or not tokenizer.decode([tokens[0]]).strip() or tokens[0] in ids:
            continue  # merged into the cue, or a whitespace-only first token: says nothing about the answer
        ids.append(tokens[0])
    return ids


def _drop_shared_forms(tokenizer, answers, candidates: list[list[int]], canonical: list[int]) -> tuple[list[list[int]], list[str]]:
    """Remove a non-canonical first token that two answers share (canonical ones differ, checked before)."""
    owners: dict[int, int] = {}
    for ids in candidates:
        for token in ids:
            owners[token] = owners.get(token, 0) + 1
    kept, dropped = [], []
    for index, ids in enumerate(candidates):
        keep = [token for token in ids if token == canonical[index] or owners[token] == 1]
        dropped += [f"{answers[index]}: {tokenizer.decode([token])!r}" for token in ids if token not in keep]
        kept.append(keep)
    return kept, dropped


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
