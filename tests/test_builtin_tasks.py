"""The built-in task files: schema, sizes, splits, balance, duplicates, and exact regeneration."""

import collections
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "zerotuning" / "tasks" / "data"
TASKS = {
    "sentiment": "classification",
    "capitals": "multiple_choice",
    "elements": "multiple_choice",
    "short_answers": "generation",
    "short_answers_multiturn": "generation",
}
MULTIPLE_CHOICE = [name for name, kind in TASKS.items() if kind == "multiple_choice"]
GENERATION = [name for name, kind in TASKS.items() if kind == "generation"]
SPLIT_SHARES = {"demo": 0.10, "calibration": 0.40, "test": 0.50}
DESCRIPTION_KEYS = {"name", "kind", "description", "instruction", "input_name", "provenance", "license"}
ROW_KEYS = {
    "classification": {"id", "split", "text", "label"},
    "multiple_choice": {"id", "split", "question", "choices", "answer"},
    "generation": {"id", "split", "prompt", "references"},  # multi-turn: messages for prompt; pattern optional
}


def read_rows(name: str) -> list[dict]:
    lines = (DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def read_description(name: str) -> dict:
    return json.loads((DATA_DIR / f"{name}.task.json").read_text(encoding="utf-8"))


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@pytest.mark.parametrize("name", TASKS)
def test_description_schema(name):
    description = read_description(name)
    kind = TASKS[name]
    expected_keys = DESCRIPTION_KEYS | ({"labels"} if kind == "classification" else set())
    assert set(description) == expected_keys
    assert description["name"] == name and description["kind"] == kind
    assert description["license"] == "Apache-2.0"
    assert all(isinstance(description[key], str) and description[key].strip() for key in DESCRIPTION_KEYS)
    if kind == "classification":
        assert description["labels"] == ["negative", "positive"]


@pytest.mark.parametrize("name", TASKS)
def test_row_schema_and_ids(name):
    kind = TASKS[name]
    rows = read_rows(name)
    assert len(rows) >= 300
    for row in rows:
        keys = set(row) - ({"pattern"} if kind == "generation" else set())
        if "messages" in row:
            keys = keys - {"messages"} | {"prompt"}
        assert keys == ROW_KEYS[kind], row
        assert re.fullmatch(rf"{name}-\d{{4}}", row["id"]), row["id"]
        assert row["split"] in SPLIT_SHARES
        if kind == "classification":
            assert row["label"] in read_description(name)["labels"] and row["text"].strip()
        elif kind == "generation":
            assert isinstance(row["references"], list) and row["references"]
            assert all(isinstance(reference, str) and reference.strip() for reference in row["references"])
            re.compile(row.get("pattern", ""))
        else:
            assert isinstance(row["question"], str) and row["question"].strip()
            assert isinstance(row["choices"], list) and len(row["choices"]) == 4
            assert all(isinstance(choice, str) and choice.strip() for choice in row["choices"])
            assert type(row["answer"]) is int and 0 <= row["answer"] < 4
    assert len({row["id"] for row in rows}) == len(rows)


@pytest.mark.parametrize("name", TASKS)
def test_split_shares(name):
    rows = read_rows(name)
    counts = collections.Counter(row["split"] for row in rows)
    for split, share in SPLIT_SHARES.items():
        assert abs(counts[split] / len(rows) - share) < 0.02, (split, counts)


@pytest.mark.parametrize("name", TASKS)
def test_no_duplicate_inputs_within_or_across_splits(name):
    inputs = [" ".join(words(_input_text(name, row))) for row in read_rows(name)]
    duplicates = [text for text, count in collections.Counter(inputs).items() if count > 1]
    assert not duplicates


def _input_text(name: str, row: dict) -> str:
    kind = TASKS[name]
    if kind == "generation":
        return row["prompt"] if "prompt" in row else " | ".join(turn["content"] for turn in row["messages"])
    return row["text"] if kind == "classification" else row["question"]


def test_sentiment_labels_balanced_in_every_split():
    rows = read_rows("sentiment")
    for split in SPLIT_SHARES:
        labels = collections.Counter(row["label"] for row in rows if row["split"] == split)
        assert labels["positive"] == labels["negative"] > 0, (split, labels)


def test_sentiment_reviews_have_sane_lengths_and_no_near_duplicates():
    texts = [row["text"] for row in read_rows("sentiment")]
    lengths = [len(text.split()) for text in texts]
    assert min(lengths) >= 6 and max(lengths) <= 40
    assert all(text.isascii() for text in texts)
    word_sets = [set(words(text)) for text in texts]
    # Jaccard overlap of word sets: near-identical rewrites score well above 0.5.
    close = [
        (texts[i], texts[j])
        for i, j in itertools.combinations(range(len(texts)), 2)
        if len(word_sets[i] & word_sets[j]) / len(word_sets[i] | word_sets[j]) >= 0.5
    ]
    assert not close


@pytest.mark.parametrize("name", MULTIPLE_CHOICE)
def test_choices_unique_and_answer_not_in_the_question(name):
    for row in read_rows(name):
        assert len(set(row["choices"])) == len(row["choices"]), row
        correct = row["choices"][row["answer"]]
        assert not re.search(rf"\b{re.escape(correct.lower())}\b", row["question"].lower()), row


def test_capital_names_do_not_echo_the_place():
    # "Tunis" for Tunisia or "Guangzhou" for Guangdong would give the answer away.
    for row in read_rows("capitals"):
        prefix = words(row["choices"][row["answer"]])[0][:4]
        assert not any(word.startswith(prefix) for word in words(row["question"])), row


@pytest.mark.parametrize("name", MULTIPLE_CHOICE)
def test_answer_letters_balanced_in_every_split(name):
    rows = read_rows(name)
    for split in SPLIT_SHARES:
        letters = collections.Counter(row["answer"] for row in rows if row["split"] == split)
        assert set(letters) == {0, 1, 2, 3}
        assert max(letters.values()) - min(letters.values()) <= 1, (split, letters)


def test_elements_questions_about_one_element_share_a_split():
    splits_by_element = collections.defaultdict(set)
    for row in read_rows("elements"):
        asked_by_name = re.fullmatch(r"What is the chemical symbol for (\w+)\?", row["question"])
        element = asked_by_name.group(1) if asked_by_name else row["choices"][row["answer"]].lower()
        splits_by_element[element].add(row["split"])
    assert len(splits_by_element) == 118
    assert all(len(splits) == 1 for splits in splits_by_element.values())


def test_regeneration_reproduces_the_files_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_builtin_tasks.py"), "--out", str(tmp_path)], check=True, capture_output=True)
    generated = sorted(path.name for path in tmp_path.iterdir())
    assert generated == sorted(f"{name}{suffix}" for name in TASKS for suffix in (".jsonl", ".task.json"))
    for file_name in generated:
        assert (tmp_path / file_name).read_bytes() == (DATA_DIR / file_name).read_bytes(), file_name


@pytest.mark.parametrize("name", TASKS)
def test_task_loader_reads_the_builtin(name):
    from zerotuning.tasks import TaskRequest, load_task

    task = load_task(TaskRequest(source=name))
    rows = read_rows(name)
    assert task.spec.kind == TASKS[name]
    assert task.split_sizes() == {split: sum(row["split"] == split for row in rows) for split in SPLIT_SHARES}


# The generation tasks, checked against arithmetic done here and the capitals and elements sources.
sys.path.insert(0, str(ROOT / "scripts"))
from builtin_task_sources.capitals import COUNTRIES  # noqa: E402
from builtin_task_sources.elements import ELEMENTS  # noqa: E402

ARITHMETIC = re.compile(r"What is (\d+) (plus|minus|times) (\d+)\?")
FOLLOW_UP = re.compile(r"Now (add (\d) to that|subtract (\d) from that|multiply that by (\d))\.")
NUMBER_WORDS = {4: "four", 12: "twelve", 41: "forty-one", 70: "seventy", 99: "ninety-nine"}
CAPITAL_OF = {(entry[2] if len(entry) == 3 else f"What is the capital of {entry[0]}?"): (continent, entry) for continent, group in COUNTRIES.items() for entry in group}
SOUTH_AMERICA = {"Argentina", "Brazil", "Chile", "Colombia", "Ecuador", "Guyana", "Paraguay", "Peru", "Suriname", "Uruguay", "Venezuela"}
SPELLINGS = {"Aluminium": "Aluminum", "Caesium": "Cesium", "Sulfur": "Sulphur"}


def _arithmetic(question: str) -> int | None:
    match = ARITHMETIC.fullmatch(question)
    if not match:
        return None
    a, operation, b = int(match.group(1)), match.group(2), int(match.group(3))
    assert (2 <= a <= 49 and 2 <= b <= 49) if operation == "plus" else (10 <= a <= 99 and 2 <= b < a) if operation == "minus" else (2 <= a <= 12 and 2 <= b <= 12)
    return {"plus": a + b, "minus": a - b, "times": a * b}[operation]


def _number_references(value: int) -> list[str]:
    return [str(value)] + ([NUMBER_WORDS[value]] if value in NUMBER_WORDS else [])


def _element_answer(question: str) -> tuple[tuple, str] | None:
    """(element, what is asked: symbol or name) for an element question."""
    for element in ELEMENTS:
        number, symbol, name = element
        if question == f"What is the chemical symbol for {name.lower()}?":
            return element, "symbol"
        if question in (f"Which element has the chemical symbol {symbol}?", f"Which element has atomic number {number}?"):
            return element, "name"
    return None


def _check_number_references(references: list[str], value: int) -> None:
    assert references[0] == str(value), (references, value)
    if value in NUMBER_WORDS:
        assert references == [str(value), NUMBER_WORDS[value]]
    assert len(references) == (2 if value < 100 else 1), references


def test_short_answers_are_right_and_come_in_three_kinds_of_100():
    kinds = collections.Counter()
    for row in read_rows("short_answers"):
        question, references, pattern = row["prompt"], row["references"], row.get("pattern", "")
        value = _arithmetic(question)
        if value is not None:
            kinds["arithmetic"] += 1
            _check_number_references(references, value)
            assert pattern and re.search(pattern, f"{value // 2} + {value - value // 2} = {value}.") and not re.search(pattern, f"{value} + 1 = {value + 1}")
        elif question in CAPITAL_OF:
            kinds["capitals"] += 1
            capital = CAPITAL_OF[question][1][1]
            assert references == ([capital, "Washington"] if capital == "Washington, D.C." else [capital]) and not pattern
        else:
            element, asked = _element_answer(question)
            kinds["elements"] += 1
            _, symbol, name = element
            if asked == "symbol":
                assert references == [symbol] and re.search(pattern, f"The symbol is {symbol}.") and not re.search(pattern, f"It is {symbol.upper()}x")
            else:
                assert references == [name] + ([SPELLINGS[name]] if name in SPELLINGS else []) and not pattern
    assert kinds == {"arithmetic": 100, "capitals": 100, "elements": 100}


def test_multiturn_second_questions_need_the_given_first_answer():
    kinds = collections.Counter()
    for row in read_rows("short_answers_multiturn"):
        (first, answer, second), references = row["messages"], row["references"]
        assert [turn["role"] for turn in row["messages"]] == ["user", "assistant", "user"]
        question, given = first["content"], answer["content"]
        value = _arithmetic(question)
        if value is not None:
            kinds["arithmetic"] += 1
            assert given == str(value)
            match = FOLLOW_UP.fullmatch(second["content"])
            add, subtract, multiply = (int(k) if k else None for k in match.group(2, 3, 4))
            result = value + add if add else value - subtract if subtract else value * multiply
            assert (subtract is None or subtract < value) and (multiply is None or multiply in (2, 3)) and result > 0
            _check_number_references(references, result)
            assert re.search(row["pattern"], f"That makes {result}.") and not re.search(row["pattern"], f"{result} + 1 = {result + 1}")
        elif question in CAPITAL_OF:
            kinds["capitals"] += 1
            continent, (country, capital, *_) = CAPITAL_OF[question]
            assert given == capital and second["content"] == "Which continent is that city in?"
            assert country not in {"Armenia", "Azerbaijan", "Cyprus", "Georgia"}
            expected = ("South America" if country in SOUTH_AMERICA else "North America") if continent == "Americas" else continent
            assert references == [expected] + (["Australia"] if country == "Australia" else [])
        else:
            (number, symbol, name), asked = _element_answer(question)
            kinds["elements"] += 1
            assert given == (symbol if asked == "symbol" else name)
            assert second["content"] == "What is the atomic number of that element?" and references == [str(number)]
            assert re.search(row["pattern"], f"It is {number}.") and not re.search(row["pattern"], f"It is {number}5.")
    assert kinds == {"arithmetic": 100, "capitals": 100, "elements": 100}
    follow_ups = collections.Counter(FOLLOW_UP.fullmatch(row["messages"][2]["content"]).group(1).split()[0] for row in read_rows("short_answers_multiturn") if FOLLOW_UP.fullmatch(row["messages"][2]["content"]))
    assert set(follow_ups) == {"add", "subtract", "multiply"} and min(follow_ups.values()) >= 25, follow_ups


@pytest.mark.parametrize("name", GENERATION)
def test_generation_tasks_render_for_a_chat_tokenizer(name):
    from generation_support import generation_tokenizer
    from zerotuning.generation import prepare_generation
    from zerotuning.tasks import TaskRequest, load_task

    task = load_task(TaskRequest(source=name))
    assert task.spec.kind == "generation" and task.spec.instruction.startswith("Reply with only the answer")
    example = task.split("test")[0]
    assert example.messages[-1][0] == "user" and len(example.messages) == (1 if name == "short_answers" else 3)
    prepared = prepare_generation(task, generation_tokenizer(), chat_template="on")
    assert prepared.example_prompt.count("Reply with only the answer") == 1
    assert {split: len(prepared.sets[split]) for split in ("calibration", "test")} == {"calibration": 120, "test": 150}
