"""The tokens an answer can start with at the answer position, and how a greedy token is read as an answer.

The model's next-token distribution after "Answer:" is read once per example. An answer (label
word or option letter) can be written in several *surface forms*: with or without the leading
space, and, for a word, lower-case, capitalised or as given. Each form is tokenised after the cue
(``"Answer: <form>"`` / ``"Answer:<form>"``, minus the cue's tokens, so spaces are tokenised as in
context) and its first token kept; an answer's probability is the total probability of its forms'
distinct first tokens (``"surface"``). ``"first_token"`` keeps only the canonical form
(``" <answer>"`` as given), the scorer before surface forms.

Through a chat template (``zerotuning.scoring.option_format``) the cue is the template's generation
prompt (e.g. ``<|im_start|>assistant\n``) and the canonical form has no leading space
(``prefix=""``): an assistant turn starts with its first word, not with a space.

A multi-token answer is thus scored by its first tokens: exact for the prediction among answers as
long as no first token is shared between answers; a non-canonical form whose first token another
answer's form also starts with is dropped from both (recorded). When two answers' canonical first
tokens are the same (``new york`` / ``new delhi``), ``"full_sequence"`` scores each answer by the
teacher-forced likelihood of its whole forms (``zerotuning.scoring.sequences``); ``"auto"`` (the
default) is ``"surface"`` unless canonical first tokens are shared, then ``"full_sequence"``.
``"surface"`` and ``"first_token"`` refuse shared canonical first tokens with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tasks.prompts import ANSWER_CUE

AUTO, SURFACE, FIRST_TOKEN, FULL_SEQUENCE = "auto", "surface", "first_token", "full_sequence"
ANSWER_FORMS = (AUTO, SURFACE, FIRST_TOKEN, FULL_SEQUENCE)


@dataclass(frozen=True)
class AnswerTokens:
    """Per answer: the canonical token (``token_ids``), every scored first token (``forms``) and their text.

    In ``"full_sequence"`` mode ``sequences`` holds each answer's scored forms as whole token
    sequences (canonical first) and ``form_texts`` their text; ``forms`` their distinct first tokens.
    ``requested`` is the mode asked for (``"auto"`` resolves to ``mode``, for the reason given).
    """

    answers: tuple[str, ...]
    token_ids: tuple[int, ...]
    token_texts: tuple[str, ...]
    token_counts: tuple[int, ...]
    forms: tuple[tuple[int, ...], ...] = ()
    form_texts: tuple[tuple[str, ...], ...] = ()
    mode: str = FIRST_TOKEN
    dropped_forms: tuple[str, ...] = ()
    sequences: tuple[tuple[tuple[int, ...], ...], ...] = ()
    requested: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.forms:  # canonical tokens only
            object.__setattr__(self, "forms", tuple((token,) for token in self.token_ids))
            object.__setattr__(self, "form_texts", tuple((text,) for text in self.token_texts))
        if not self.requested:
            object.__setattr__(self, "requested", self.mode)

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
        rows = []
        for index, (answer, token_id, text, count) in enumerate(zip(self.answers, self.token_ids, self.token_texts, self.token_counts)):
            row = {"answer": answer, "token_id": token_id, "token_text": text, "answer_token_count": count}
            if self.mode == FULL_SEQUENCE:
                row["form_sequences"] = [list(ids) for ids in self.sequences[index]]
                row["form_texts"] = list(self.form_texts[index])
            else:
                row["form_token_ids"] = list(self.forms[index])
                row["form_token_texts"] = list(self.form_texts[index])
            rows.append(row)
        return rows

    def describe(self) -> dict:
        """How answers are scored, for the results file."""
        return {"mode": self.mode, "requested": self.requested, "reason": self.reason, "dropped_forms": list(self.dropped_forms)}


def answer_tokens(tokenizer, answers: tuple[str, ...], cue: str = ANSWER_CUE, forms: str = AUTO, prefix: str = " ") -> AnswerTokens:
    """Find each answer's scored tokens after ``cue`` (canonical form ``prefix + answer``); raise if two answers would be indistinguishable."""
    if forms not in ANSWER_FORMS:
        raise ValueError(f"forms: got {forms!r}, expected one of {ANSWER_FORMS}")
    if prefix not in ("", " "):
        raise ValueError(f"prefix: got {prefix!r}, expected ' ' (after a plain cue) or '' (after an assistant header)")
    cue_ids = tokenizer(cue, add_special_tokens=False)["input_ids"]
    canonical = []
    for answer in answers:
        full_ids = _after_cue(tokenizer, cue, cue_ids, f"{prefix}{answer}")
        if full_ids is None:
            raise ValueError(
                f"answer {answer!r}: the tokenizer merges it into the cue {cue!r}, "
                "so it has no token of its own at the answer position"
            )
        canonical.append(tuple(full_ids))
    token_ids = [ids[0] for ids in canonical]
    token_texts = [tokenizer.decode([token]) for token in token_ids]
    token_counts = [len(ids) for ids in canonical]
    clash = _first_token_clash(answers, token_ids, token_texts)
    if forms == FULL_SEQUENCE or (forms == AUTO and clash):
        from .sequences import full_sequence_answer_tokens  # one module per scoring idea; it builds on this one

        reason = "asked for" if forms == FULL_SEQUENCE else f"auto: {clash}"
        return full_sequence_answer_tokens(tokenizer, cue, cue_ids, tuple(answers), tuple(canonical), requested=forms, reason=reason, prefix=prefix)
    if clash:
        raise ValueError(
            f"{clash}, so one forward pass cannot tell them apart; score whole answers with --answer-forms "
            f"{FULL_SEQUENCE} (what the default {AUTO} does) or choose label words whose first tokens differ"
        )
    if forms == FIRST_TOKEN:
        return AnswerTokens(tuple(answers), tuple(token_ids), tuple(token_texts), tuple(token_counts))
    candidates = [_form_tokens(tokenizer, cue, cue_ids, answer, token, prefix) for answer, token in zip(answers, token_ids)]
    kept, dropped = _drop_shared_forms(tokenizer, answers, candidates, token_ids)
    return AnswerTokens(
        tuple(answers),
        tuple(token_ids),
        tuple(token_texts),
        tuple(token_counts),
        forms=tuple(tuple(ids) for ids in kept),
        form_texts=tuple(tuple(tokenizer.decode([i]) for i in ids) for ids in kept),
        mode=SURFACE,
        dropped_forms=tuple(dropped),
        requested=forms,
        reason="asked for" if forms == SURFACE else "auto: the answers' first tokens differ",
    )


def surface_forms(answer: str, prefix: str = " ") -> list[str]:
    """The ways a model may write ``answer`` after the cue: the canonical ``prefix + answer`` first."""
    words = [answer] if len(answer) == 1 else [answer, answer.lower(), answer[:1].upper() + answer[1:].lower()]  # "a" is no option letter
    words = list(dict.fromkeys(words))
    spaced, bare = [f" {word}" for word in words], words
    return spaced + bare if prefix else bare + spaced


def _after_cue(tokenizer, cue: str, cue_ids: list[int], form: str) -> list[int] | None:
    """The tokens of ``form`` after the cue, or None if the tokenizer merges it into the cue."""
    full_ids = tokenizer(f"{cue}{form}", add_special_tokens=False)["input_ids"]
    if full_ids[: len(cue_ids)] != cue_ids or len(full_ids) == len(cue_ids):
        return None
    return full_ids[len(cue_ids) :]


def _form_tokens(tokenizer, cue: str, cue_ids: list[int], answer: str, canonical: int, prefix: str) -> list[int]:
    ids = [canonical]
    for form in surface_forms(answer, prefix)[1:]:
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


def _first_token_clash(answers, token_ids: list[int], token_texts: list[str]) -> str:
    """Why the canonical first tokens cannot tell the answers apart ("" if they can)."""
    keys = [text.strip().casefold() for text in token_texts]
    for first in range(len(answers)):
        if not keys[first]:
            return f"answer {answers[first]!r} starts with a whitespace-only token {token_texts[first]!r}"
        for second in range(first):
            if token_ids[first] == token_ids[second] or keys[first] == keys[second]:
                return f"answers {answers[second]!r} and {answers[first]!r} both start with the token {token_texts[first]!r}"
    return ""
