"""Task files that are wrong in a way a careless user produces: each is refused, naming the file and the line or row."""

from __future__ import annotations

import re

import pytest

from zerotuning.tasks import ColumnMapping, SplitPlan, TaskRequest, load_task
from zerotuning.tasks.files import read_rows

from scoring_support import sentiment_rows, write_jsonl

HEADER = "id,text,label\n"


def _csv_lines(count: int, seed: int = 1) -> list[str]:
    return [f"{row['id']},{row['text']},{row['label']}\n" for row in sentiment_rows(count, seed=seed)]


@pytest.mark.parametrize("position", [0, 5])
def test_a_row_with_an_unquoted_comma_names_the_file_and_line(tmp_path, position):
    lines = _csv_lines(20)
    lines.insert(position, "n6,so bad, really,negative\n")
    path = tmp_path / "reviews.csv"
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    line = position + 2  # the header is line 1
    with pytest.raises(ValueError, match=re.escape(f"'{path}', line {line}: 4 fields, but the header has 3")):
        load_task(TaskRequest(source=str(path)))
    # Was: a wrong --text-column with the bad row first gave a TypeError from sorting a None column name.
    with pytest.raises(ValueError, match=f"line {line}: 4 fields"):
        load_task(TaskRequest(source=str(path), columns=ColumnMapping(text="txt")))


def test_a_row_with_too_few_fields_and_lines_of_a_multiline_cell(tmp_path):
    path = tmp_path / "short.tsv"
    path.write_text("id\ttext\tlabel\na\tfine\tpositive\nb\tno label\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"'{path}', line 3: 2 fields, but the header has 3")):
        read_rows(path)
    path = tmp_path / "multiline.csv"
    path.write_text(HEADER + 'a,"two\nlines",positive\nb,"also\ntwo",x,y\n', encoding="utf-8")
    with pytest.raises(ValueError, match="lines 4-5: 4 fields"):
        read_rows(path)
    rows = read_rows(_write(tmp_path / "ok.csv", HEADER + 'a,"two\nlines",positive\n\nb,"x, y",negative\n'))
    assert rows == [{"id": "a", "text": "two\nlines", "label": "positive"}, {"id": "b", "text": "x, y", "label": "negative"}]


def test_repeated_header_names_and_malformed_quoting(tmp_path):
    with pytest.raises(ValueError, match=r"line 1: the header names the columns \['text'\] more than once"):
        read_rows(_write(tmp_path / "twice.csv", "id,text,text\na,b,c\n"))
    with pytest.raises(ValueError, match=r"line 2: not valid CSV"):
        read_rows(_write(tmp_path / "quote.csv", HEADER + 'a,"open "quote,positive\n'))


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_json_boolean_labels_name_the_file_row_and_column(tmp_path):
    rows = [{**row, "label": row["label"] == "positive"} for row in sentiment_rows(12, seed=2)]
    path = write_jsonl(rows, tmp_path / "bools.jsonl")
    for labels in (("negative", "positive"), ()):
        with pytest.raises(ValueError, match=rf"'{re.escape(str(path))}': row 0: label (true|false) in column 'label' is a JSON boolean"):
            load_task(TaskRequest(source=str(path), labels=labels, splits=SplitPlan(fractions={"test": 1.0})))


def test_non_utf8_task_files_name_the_file_and_a_bom_is_not_part_of_a_column(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes((HEADER + "a,caf\xe9 good,positive\n").encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"task file '{latin}' is not UTF-8 text")):
        load_task(TaskRequest(source=str(latin)))
    utf16 = tmp_path / "wide.jsonl"
    utf16.write_text('{"text": "a", "label": "x"}\n', encoding="utf-16")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        read_rows(utf16)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(("\ufeff" + HEADER + "a,good,positive\n").encode("utf-8"))
    assert read_rows(bom) == [{"id": "a", "text": "good", "label": "positive"}]


def test_a_directory_as_the_task_says_it_is_a_directory(tmp_path):
    (tmp_path / "data.jsonl").mkdir()
    for folder in (tmp_path, tmp_path / "data.jsonl"):
        with pytest.raises(IsADirectoryError, match=re.escape(f"'{folder}' is a directory; expected a")):
            load_task(TaskRequest(source=str(folder)))


def test_errors_outside_the_rows_name_the_source(tmp_path):
    path = write_jsonl([{"text": "a", "label": 0}, {"text": "b", "label": 1}], tmp_path / "numbers.jsonl")
    with pytest.raises(ValueError, match=re.escape(f"task '{path}': column 'label' holds numbers")):
        load_task(TaskRequest(source=str(path)))
    with pytest.raises(ValueError, match=re.escape(f"task '{path}': cannot tell the task kind")):
        load_task(TaskRequest(source=str(path), columns=ColumnMapping(text="sentence")))
