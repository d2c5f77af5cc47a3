"""Regenerate zerotuning's built-in tasks from the hand-written sources in ``builtin_task_sources/``.

    python scripts/make_builtin_tasks.py [--out DIR]     (default: zerotuning/tasks/data)

Writes ``<name>.jsonl`` (one example per line) and ``<name>.task.json`` for ``sentiment``,
``capitals``, ``elements`` and the generation tasks ``short_answers`` and
``short_answers_multiturn``. Deterministic: the same sources give byte-identical files, on any
Python version (all randomness goes through ``random.Random.random`` with string seeds, the two
parts of the module that Python promises never to change).

Splits: in every stratum (sentiment: label and domain; capitals: continent or country of the
region; elements: ten consecutive atomic numbers) the items are shuffled and dealt along one
running ten-slot pattern of 1 demo, 4 calibration and 5 test slots, so each split holds about
10% / 40% / 50% of every stratum. Sentiment deals each label separately, so every split has as
many positive as negative reviews; the three questions about one element share a split.
In the generation tasks the strata are the operation (arithmetic), the continent (capitals) and
twenty consecutive atomic numbers (elements). Multiple-choice answers: within each split the
correct option's position cycles through A-D over a shuffled order, so every letter is (within
one) equally often right.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from builtin_task_sources.capitals import COUNTRIES, COUNTRY_TEMPLATE, REGIONS  # noqa: E402
from builtin_task_sources.elements import ELEMENTS  # noqa: E402
from builtin_task_sources.sentiment_reviews import REVIEWS  # noqa: E402
from builtin_task_sources import short_answers as short  # noqa: E402
from zerotuning.atomic_files import write_text_atomically  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "zerotuning" / "tasks" / "data"
SEED = "zerotuning-builtin-tasks-v1"
SPLIT_PATTERN = ("test", "calibration", "test", "calibration", "test", "demo", "test", "calibration", "test", "calibration")
OPTIONS = 4
MC_INSTRUCTION = "Answer the question with the letter of the correct option."
GENERATION_INSTRUCTION = "Reply with only the answer: a number, a name or a chemical symbol."
GENERATION_PER_KIND = 100  # questions of each kind (arithmetic, capitals, elements) per generation task
LICENSE = "Apache-2.0"
PROVENANCE = "Written for zerotuning (no third-party dataset text); see zerotuning/tasks/data/PROVENANCE.md"

DESCRIPTIONS = {
    "sentiment": {
        "name": "sentiment",
        "kind": "classification",
        "description": "Binary sentiment of short reviews of restaurants, films, electronics, home goods, books, hotels, apps, games and clothing.",
        "instruction": "Classify the sentiment of the review as positive or negative.",
        "labels": ["negative", "positive"],
        "input_name": "Review",
        "provenance": PROVENANCE,
        "license": LICENSE,
    },
    "capitals": {
        "name": "capitals",
        "kind": "multiple_choice",
        "description": "Capital cities of countries and of well-known states, provinces and regions; four options from the same continent or country.",
        "instruction": MC_INSTRUCTION,
        "input_name": "Question",
        "provenance": PROVENANCE,
        "license": LICENSE,
    },
    "short_answers": {
        "name": "short_answers",
        "kind": "generation",
        "description": "Short questions with a one-number or one-word answer: sums, differences and products of small numbers, capitals of countries, chemical symbols and element names.",
        "instruction": GENERATION_INSTRUCTION,
        "input_name": "Question",
        "provenance": PROVENANCE,
        "license": LICENSE,
    },
    "short_answers_multiturn": {
        "name": "short_answers_multiturn",
        "kind": "generation",
        "description": "Two-turn version of short_answers: the first question and its answer are given, and the second question needs that answer (a further operation on the result, the continent of the capital, the atomic number of the element).",
        "instruction": GENERATION_INSTRUCTION,
        "input_name": "Question",
        "provenance": PROVENANCE,
        "license": LICENSE,
    },
    "elements": {
        "name": "elements",
        "kind": "multiple_choice",
        "description": "Chemical elements: symbol from name, name from symbol, name from atomic number; four options with look-alike distractors.",
        "instruction": MC_INSTRUCTION,
        "input_name": "Question",
        "provenance": PROVENANCE,
        "license": LICENSE,
    },
}


class SeededDraws:
    """Shuffles and samples built only on ``random.Random.random`` (stable across Python versions)."""

    def __init__(self, seed: str):
        self._random = random.Random(seed)

    def shuffled(self, items) -> list:
        items = list(items)
        for i in range(len(items) - 1, 0, -1):
            j = int(self._random.random() * (i + 1))
            items[i], items[j] = items[j], items[i]
        return items

    def sample(self, items, k: int) -> list:
        if len(items) < k:
            raise ValueError(f"sample: asked for {k} of {len(items)} items")
        return self.shuffled(items)[:k]


def deal_splits(strata: dict, draws: SeededDraws) -> list[tuple[str, object]]:
    """(split, item) for every item of every stratum (strata in sorted key order), dealt along SPLIT_PATTERN."""
    dealt = []
    for key in sorted(strata):
        for item in draws.shuffled(strata[key]):
            dealt.append((SPLIT_PATTERN[len(dealt) % len(SPLIT_PATTERN)], item))
    return dealt


def multiple_choice_rows(questions: list[tuple[str, str, str, list[str]]], draws: SeededDraws) -> list[dict]:
    """Rows from (split, question, answer, distractors), the answer's position cycling A-D within each split."""
    rows = []
    for split in sorted({split for split, *_ in questions}):
        in_split = draws.shuffled([q for q in questions if q[0] == split])
        for position, (_, question, answer, distractors) in enumerate(in_split):
            choices = draws.shuffled(distractors)
            choices.insert(position % OPTIONS, answer)
            rows.append({"split": split, "question": question, "choices": choices, "answer": position % OPTIONS})
    return rows


def build_sentiment(draws: SeededDraws) -> list[dict]:
    rows = []
    for label in sorted({label for by_label in REVIEWS.values() for label in by_label}):
        strata = {domain: by_label[label] for domain, by_label in REVIEWS.items()}
        rows += [{"split": split, "text": text, "label": label} for split, text in deal_splits(strata, draws)]
    return rows


def build_capitals(draws: SeededDraws) -> list[dict]:
    groups = {name: (COUNTRY_TEMPLATE, entries) for name, entries in COUNTRIES.items()}
    groups.update(REGIONS)
    strata = {}
    for group, (template, entries) in groups.items():
        capitals = [entry[1] for entry in entries]
        strata[group] = [
            (entry[2] if len(entry) == 3 else template.format(entry[0]), entry[1], [c for c in capitals if c != entry[1]])
            for entry in entries
        ]
    questions = [
        (split, question, answer, draws.sample(others, OPTIONS - 1)) for split, (question, answer, others) in deal_splits(strata, draws)
    ]
    return multiple_choice_rows(questions, draws)


def build_elements(draws: SeededDraws) -> list[dict]:
    strata = {}
    for element in ELEMENTS:
        strata.setdefault((element[0] - 1) // 10, []).append(element)
    questions = []
    for split, (number, symbol, name) in deal_splits(strata, draws):
        others = [element for element in ELEMENTS if element[0] != number]
        # Look-alike distractors: symbols and names sharing a first letter with the answer or the
        # question, and neighbours in the periodic table for atomic numbers.
        symbols = [s for _, s, n in others if s[0] in (symbol[0], name[0])]
        names = [n for _, s, n in others if n[0] in (symbol[0], name[0])]
        neighbours = [n for z, _, n in others if abs(z - number) <= 4]
        questions += [
            (split, f"What is the chemical symbol for {name.lower()}?", symbol, _look_alikes(symbols, [s for _, s, _ in others], draws)),
            (split, f"Which element has the chemical symbol {symbol}?", name, _look_alikes(names, [n for _, _, n in others], draws)),
            (split, f"Which element has atomic number {number}?", name, draws.sample(neighbours, OPTIONS - 1)),
        ]
    return multiple_choice_rows(questions, draws)


def _look_alikes(preferred: list[str], fallback: list[str], draws: SeededDraws) -> list[str]:
    """OPTIONS - 1 distractors from ``preferred``, topped up from ``fallback`` when there are too few."""
    chosen = draws.sample(preferred, min(OPTIONS - 1, len(preferred)))
    rest = [item for item in fallback if item not in chosen]
    return chosen + draws.sample(rest, OPTIONS - 1 - len(chosen))


def build_short_answers(draws: SeededDraws) -> list[dict]:
    """One user turn per row: arithmetic, capitals and elements, GENERATION_PER_KIND of each."""
    strata = {}
    for operation, question, value in _arithmetic_questions(draws):
        strata.setdefault(("arithmetic", operation), []).append((question, _number_references(value), short.final_number_pattern(value)))
    for continent, question, capital, _ in _capital_questions(draws, with_continent=False):
        strata.setdefault(("capitals", continent), []).append((question, _with_aliases(capital), None))
    kinds = ("symbol", "name", "number")
    for position, (number, symbol, name) in enumerate(draws.sample(ELEMENTS, GENERATION_PER_KIND)):
        question = {
            "symbol": (f"What is the chemical symbol for {name.lower()}?", [symbol], short.symbol_pattern(symbol)),
            "name": (f"Which element has the chemical symbol {symbol}?", _with_aliases(name), None),
            "number": (f"Which element has atomic number {number}?", _with_aliases(name), None),
        }[kinds[position % len(kinds)]]
        strata.setdefault(("elements", (number - 1) // 20), []).append(question)
    return [_generation_row(split, [("user", question)], references, pattern) for split, (question, references, pattern) in deal_splits(strata, draws)]


def build_short_answers_multiturn(draws: SeededDraws) -> list[dict]:
    """Two user turns per row, the first answered (given); the second needs that answer."""
    strata = {}
    follow_ups = list(short.ARITHMETIC_FOLLOW_UPS)
    for position, (operation, question, value) in enumerate(_arithmetic_questions(draws)):
        follow_up = follow_ups[position % len(follow_ups)]
        if follow_up == "subtract" and value < 3:
            follow_up = "add"
        text, (low, high) = short.ARITHMETIC_FOLLOW_UPS[follow_up]
        k = _draw_int(draws, low, min(high, value - 1) if follow_up == "subtract" else high)
        result = {"add": value + k, "subtract": value - k, "multiply": value * k}[follow_up]
        strata.setdefault(("arithmetic", operation), []).append(
            (question, str(value), text.format(k=k), _number_references(result), short.final_number_pattern(result))
        )
    for continent, question, capital, country in _capital_questions(draws, with_continent=True):
        if continent == "Americas":
            continent = "South America" if country in short.SOUTH_AMERICA else "North America"
        references = [continent, *short.CONTINENT_ALIASES.get(country, ())]
        strata.setdefault(("capitals", continent), []).append((question, capital, short.CONTINENT_FOLLOW_UP, references, None))
    for position, (number, symbol, name) in enumerate(draws.sample(ELEMENTS, GENERATION_PER_KIND)):
        first = (f"What is the chemical symbol for {name.lower()}?", symbol) if position % 2 == 0 else (f"Which element has the chemical symbol {symbol}?", name)
        strata.setdefault(("elements", (number - 1) // 20), []).append(
            (*first, short.ATOMIC_NUMBER_FOLLOW_UP, [str(number)], short.final_number_pattern(number))
        )
    return [
        _generation_row(split, [("user", first), ("assistant", answer), ("user", second)], references, pattern)
        for split, (first, answer, second, references, pattern) in deal_splits(strata, draws)
    ]


def _arithmetic_questions(draws: SeededDraws) -> list[tuple[str, str, int]]:
    """(operation, question, result): GENERATION_PER_KIND distinct questions, the operations in turn."""
    questions, seen = [], set()
    operations = list(short.OPERATIONS)
    while len(questions) < GENERATION_PER_KIND:
        operation = operations[len(questions) % len(operations)]
        (a_low, a_high), (b_low, b_high), result = short.OPERATIONS[operation]
        a = _draw_int(draws, a_low, a_high)
        b = _draw_int(draws, b_low, a - 1 if b_high is None else b_high)
        if (operation, a, b) not in seen:
            seen.add((operation, a, b))
            questions.append((operation, short.QUESTION.format(a=a, operation=operation, b=b), result(a, b)))
    return questions


def _capital_questions(draws: SeededDraws, with_continent: bool) -> list[tuple[str, str, str, str]]:
    """(continent, question, capital, country) for GENERATION_PER_KIND countries of capitals.py (with_continent:
    only those whose capital's continent is clear)."""
    entries = [(continent, entry) for continent, group in COUNTRIES.items() for entry in group]
    if with_continent:
        entries = [(continent, entry) for continent, entry in entries if entry[0] not in short.CONTINENT_UNCLEAR]
    return [
        (continent, entry[2] if len(entry) == 3 else COUNTRY_TEMPLATE.format(entry[0]), entry[1], entry[0].removeprefix("the "))
        for continent, entry in draws.sample(entries, GENERATION_PER_KIND)
    ]


def _draw_int(draws: SeededDraws, low: int, high: int) -> int:
    """A whole number in [low, high], through SeededDraws (stable across Python versions)."""
    return draws.sample(range(low, high + 1), 1)[0]


def _number_references(value: int) -> list[str]:
    word = short.number_word(value)
    return [str(value)] + ([word] if word else [])


def _with_aliases(answer: str) -> list[str]:
    return [answer, *short.ALIASES.get(answer, ())]


def _generation_row(split: str, turns: list[tuple[str, str]], references: list[str], pattern: str | None) -> dict:
    row = {"split": split}
    row.update({"prompt": turns[0][1]} if len(turns) == 1 else {"messages": [{"role": role, "content": content} for role, content in turns]})
    row["references"] = references
    if pattern:
        row["pattern"] = pattern
    return row


BUILDERS = {
    "sentiment": build_sentiment,
    "capitals": build_capitals,
    "elements": build_elements,
    "short_answers": build_short_answers,
    "short_answers_multiturn": build_short_answers_multiturn,
}


def write_task(name: str, rows: list[dict], out_dir: Path, draws: SeededDraws) -> None:
    """Rows in a seeded order with ids numbered in that order, plus the description file."""
    lines = []
    for number, row in enumerate(draws.shuffled(rows), start=1):
        lines.append(json.dumps({"id": f"{name}-{number:04d}", **row}, ensure_ascii=True))
    write_text_atomically(out_dir / f"{name}.jsonl", "\n".join(lines) + "\n")
    write_text_atomically(out_dir / f"{name}.task.json", json.dumps(DESCRIPTIONS[name], indent=2, ensure_ascii=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in BUILDERS.items():
        draws = SeededDraws(f"{SEED}:{name}")
        rows = build(draws)
        write_task(name, rows, args.out, draws)
        print(f"{name}: {len(rows)} examples -> {args.out / (name + '.jsonl')}")


if __name__ == "__main__":
    main()
