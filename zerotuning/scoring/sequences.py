"""Whole-answer scoring: each answer's forms as token sequences, and the prompt rows that score them.

An answer's score is the log of the total teacher-forced probability of its surface forms' whole
token sequences after the cue (log-sum-exp over forms of the sum of each form's token
log-probabilities). One row ``prompt + continuation`` gives, at its last positions, the
next-token distributions after every prefix of the continuation, so it scores every form whose
tokens minus the last one are a prefix of that continuation: the rows needed are the longest such
prefixes (``SequencePlan``). Answers whose forms all have one token need one row, the prompt alone,
as the first-token scorer does; ``new york`` / ``new delhi`` need one row too (prompt + `` new``).

A form that is a token prefix of another answer's form would hold that form's probability too (the
likelihood of ``new`` includes ``new york``'s): a canonical one is refused, another one dropped and
recorded; so is a form of an answer that extends another of its own forms (its mass is counted already).
"""

from __future__ import annotations

from dataclasses import dataclass

from .answer_tokens import FULL_SEQUENCE, AnswerTokens, _after_cue, surface_forms


def full_sequence_answer_tokens(
    tokenizer, cue: str, cue_ids: list[int], answers: tuple[str, ...], canonical: tuple[tuple[int, ...], ...], *, requested: str, reason: str, prefix: str = " "
) -> AnswerTokens:
    """Each answer's kept forms as token sequences (canonical first); raise if canonical ones cannot be told apart."""
    texts = [tokenizer.decode(list(ids)) for ids in canonical]
    for first in range(len(answers)):
        for second in range(len(answers)):
            if first == second:
                continue
            if canonical[first] == canonical[second] or (first > second and texts[first].strip().casefold() == texts[second].strip().casefold()):
                raise ValueError(f"answers {answers[second]!r} and {answers[first]!r} are written the same ({texts[first]!r}): choose other label words")
            if _is_prefix(canonical[first], canonical[second]):
                raise ValueError(_prefix_message(answers[first], texts[first], answers[second], texts[second]))
    candidates = [_sequence_forms(tokenizer, cue, cue_ids, answer, ids, prefix) for answer, ids in zip(answers, canonical)]
    kept, dropped = [], []
    for index, forms in enumerate(candidates):
        keep = []
        for form in forms:
            inside = [other for other in keep if _is_prefix(other, form)]  # its mass is in a shorter form of the same answer
            holders = [(owner, other) for owner, others in enumerate(candidates) if owner != index for other in others if _is_prefix(form, other)]
            if form == canonical[index] and holders:
                owner, other = holders[0]
                raise ValueError(_prefix_message(answers[index], texts[index], answers[owner], tokenizer.decode(list(other))))
            if inside or holders:
                dropped.append(f"{answers[index]}: {tokenizer.decode(list(form))!r}")
                continue
            keep.append(form)
        kept.append(tuple(keep))
    return AnswerTokens(
        answers,
        tuple(ids[0] for ids in canonical),
        tuple(tokenizer.decode([ids[0]]) for ids in canonical),
        tuple(len(ids) for ids in canonical),
        forms=tuple(tuple(dict.fromkeys(form[0] for form in forms)) for forms in kept),
        form_texts=tuple(tuple(tokenizer.decode(list(form)) for form in forms) for forms in kept),
        mode=FULL_SEQUENCE,
        dropped_forms=tuple(dropped),
        sequences=tuple(kept),
        requested=requested,
        reason=reason,
    )


@dataclass(frozen=True)
class SequencePlan:
    """The continuations to append to every prompt, and which one scores each form.

    ``forms``: every (answer index, token sequence) scored, answer by answer; ``continuations``: the
    rows' appended tokens (the first is the longest, so its row also gives the answer position's
    distribution); ``row_of_form[f]``: the continuation whose row scores form ``f``.
    """

    forms: tuple[tuple[int, tuple[int, ...]], ...]
    continuations: tuple[tuple[int, ...], ...]
    row_of_form: tuple[int, ...]

    @classmethod
    def of(cls, answer_tokens: AnswerTokens) -> "SequencePlan":
        if answer_tokens.mode != FULL_SEQUENCE:
            raise ValueError(f"answer_tokens: mode {answer_tokens.mode!r}, expected {FULL_SEQUENCE!r} for whole-answer scoring")
        forms = tuple((answer, form) for answer, sequences in enumerate(answer_tokens.sequences) for form in sequences)
        heads = {form[:-1] for _, form in forms}
        longest = sorted((head for head in heads if not any(other != head and _is_prefix(head, other) for other in heads)), key=lambda head: (-len(head), head))
        rows = tuple(longest)
        row_of_form = tuple(next(index for index, row in enumerate(rows) if _is_prefix(form[:-1], row)) for _, form in forms)
        return cls(forms, rows, row_of_form)

    @property
    def rows_per_example(self) -> int:
        return len(self.continuations)


def _sequence_forms(tokenizer, cue: str, cue_ids: list[int], answer: str, canonical: tuple[int, ...], prefix: str) -> list[tuple[int, ...]]:
    forms = [canonical]
    for form in surface_forms(answer, prefix)[1:]:
        tokens = _after_cue(tokenizer, cue, cue_ids, form)
        if tokens is not None and tuple(tokens) not in forms:
            forms.append(tuple(tokens))
    return forms


def _is_prefix(short: tuple[int, ...], long: tuple[int, ...]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short


def _prefix_message(answer: str, text: str, other_answer: str, other_text: str) -> str:
    return (
        f"answer {answer!r} ({text!r}) is a token prefix of {other_text!r}, a form of answer {other_answer!r}: its "
        "likelihood includes that continuation's, so it cannot be scored against it; choose answers none of which "
        "starts another"
    )
