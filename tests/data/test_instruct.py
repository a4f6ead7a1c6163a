"""Instruction data: Alpaca template wording, response-only labels, truncation, sources, split, errors.

Expected token ids come from calling the tokenizer directly on hand-written Stanford Alpaca strings.
"""

from __future__ import annotations

import json

import pytest

from sc2tune.data import build_datasets
from sc2tune.data.templates import load_template
from sc2tune.errors import DataError
from sc2tune.recipe import recipe_from_dict

# Stanford Alpaca's PROMPT_DICT, typed out by hand.
NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
            "the request.\n\n### Instruction:\n{instruction}\n\n### Response:")
WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
              "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
              "{instruction}\n\n### Input:\n{input}\n\n### Response:")

RECORDS = [
    {"instruction": "Write a function that returns 1.", "input": "", "output": "def one():\n    return 1"},
    {"instruction": "Reverse the string.", "input": "s = 'abc'", "output": "s[::-1]"},
]


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _recipe(**data):
    data.setdefault("eval", None)
    return recipe_from_dict({"task": "instruct", "data": data})


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_alpaca_template_is_stanford_wording():
    t = load_template("alpaca")
    assert t.prompt_no_input == NO_INPUT
    assert t.prompt_input == WITH_INPUT
    assert t.required == ["instruction", "output"] and t.optional == ["input"]
    assert load_template("alpaca_no_input").prompt_no_input == NO_INPUT


def test_labels_cover_response_and_eos_only(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "d.jsonl", RECORDS)
    bundle = build_datasets(_recipe(train="d.jsonl"), tokenizer, show_progress=False)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    prompts = [NO_INPUT.format(**RECORDS[0]), WITH_INPUT.format(**RECORDS[1])]
    for row, prompt, rec in zip(bundle.train, prompts, RECORDS, strict=True):
        p, r = _ids(tokenizer, prompt), _ids(tokenizer, rec["output"])
        assert row["input_ids"] == p + r + [eos]
        assert row["labels"] == [-100] * len(p) + r + [eos]
    assert bundle.stats.trained_tokens == sum(len(_ids(tokenizer, r["output"])) + 1 for r in RECORDS)
    assert bundle.stats.examples == 2 and bundle.stats.truncated == 0


def test_train_on_prompt(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "d.jsonl", RECORDS[:1])
    row = build_datasets(_recipe(train="d.jsonl", train_on_prompt=True), tokenizer, show_progress=False).train[0]
    # every token is a target except the first, which nothing in its document predicts
    assert row["labels"] == [-100] + row["input_ids"][1:]


def test_special_token_text_in_a_record_is_not_a_special_token(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "d.jsonl", [{"instruction": "x", "output": "a <|endoftext|> b"}])
    row = build_datasets(_recipe(train="d.jsonl"), tokenizer, show_progress=False).train[0]
    assert row["input_ids"].count(0) == 1 and row["input_ids"][-1] == 0


def test_truncation_and_dropped_examples(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    long_output = "x = 1\n" * 40
    _write_jsonl(tmp_path / "d.jsonl", [
        {"instruction": "a", "output": long_output},
        {"instruction": "word " * 200, "output": "y"},  # the prompt alone is longer than max_length
        {"instruction": "b", "output": "z"},
    ])
    bundle = build_datasets(_recipe(train="d.jsonl", max_length=64), tokenizer, show_progress=False)
    full = len(_ids(tokenizer, NO_INPUT.format(instruction="a"))) + len(_ids(tokenizer, long_output)) + 1
    prompt2 = len(_ids(tokenizer, NO_INPUT.format(instruction="word " * 200)))
    assert len(bundle.train) == 2
    assert len(bundle.train[0]["input_ids"]) == 64
    s = bundle.stats
    assert (s.truncated, s.dropped_examples) == (1, 1)
    assert s.dropped_tokens == (full - 64) + prompt2 + len(_ids(tokenizer, "y")) + 1


def test_every_example_too_long_says_so_and_which_key_to_change(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "d.jsonl", RECORDS)  # the Alpaca prompt alone is over 30 tokens
    with pytest.raises(DataError) as err:
        build_datasets(_recipe(train="d.jsonl", max_length=24), tokenizer, show_progress=False)
    text = str(err.value)
    assert "no training rows" in text and "all 2 example(s) were dropped for length" in text
    assert "data.max_length (24 tokens)" in text and "raise data.max_length above 24" in text
    assert err.value.exit_code == 2


def test_missing_field_lists_fields_and_column_map_fixes_it(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, {"prompt": "a", "completion": "b"}])
    with pytest.raises(DataError) as err:
        build_datasets(_recipe(train="d.jsonl"), tokenizer, show_progress=False)
    text = str(err.value)
    assert "d.jsonl:2" in text and "'instruction'" in text and "'output'" in text and "'prompt'" in text
    _write_jsonl(tmp_path / "e.jsonl", [{"prompt": "a", "completion": "b"}])
    recipe = _recipe(train="e.jsonl", column_map={"prompt": "instruction", "completion": "output"})
    assert len(build_datasets(recipe, tokenizer, show_progress=False).train) == 1


def test_malformed_line_empty_source_and_missing_path(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON"):
        build_datasets(_recipe(train="bad.jsonl"), tokenizer, show_progress=False)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no records"):
        build_datasets(_recipe(train="empty.jsonl"), tokenizer, show_progress=False)
    with pytest.raises(DataError) as err:
        build_datasets(_recipe(train="nope/x.jsonl"), tokenizer, show_progress=False)
    assert str(tmp_path / "nope" / "x.jsonl") in str(err.value)
    with pytest.raises(DataError, match="no file matches"):
        build_datasets(_recipe(train="nope/*.jsonl"), tokenizer, show_progress=False)


@pytest.mark.parametrize(("text", "message"), [
    # An unterminated quote swallows the rest of the file: say so at the line it opens, not "missing field".
    ('instruction,input,output\n"Say hi",,hello\n"Broken,,x\nok,,y\n', r"d\.csv:3: a quoted field .* never closed"),
    ("instruction,input,output\na,,b\nc,d\n", r"d\.csv:3: fewer values than header columns \(output missing\)"),
    ("instruction,input,output\na,,b,extra\n", r"d\.csv:2: more values than header columns"),
])
def test_malformed_csv_names_the_line(tmp_path, monkeypatch, tokenizer, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        build_datasets(_recipe(train="d.csv"), tokenizer, show_progress=False)


def test_non_text_field_is_an_error(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": ["b"]}])
    with pytest.raises(DataError, match=r"d\.jsonl:1: field 'output' must be text"):
        build_datasets(_recipe(train="d.jsonl"), tokenizer, show_progress=False)


def test_other_formats_read_the_same_records(tmp_path, monkeypatch, tokenizer):
    import csv

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "d.jsonl", RECORDS)
    (tmp_path / "d.json").write_text(json.dumps({"data": RECORDS}))
    with open(tmp_path / "d.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(RECORDS)
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "d.parquet")
    datasets.Dataset.from_list(RECORDS).save_to_disk(str(tmp_path / "disk"))
    reference = build_datasets(_recipe(train="d.jsonl"), tokenizer, show_progress=False).train["input_ids"]
    for source in ("d.json", "d.csv", "d.parquet", "disk"):
        got = build_datasets(_recipe(train=source), tokenizer, show_progress=False).train["input_ids"]
        assert got == reference, source
    both = build_datasets(_recipe(train=["d.jsonl", "d.csv"]), tokenizer, show_progress=False)
    assert len(both.train) == 4


def test_eval_fraction_split_is_deterministic_and_disjoint(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    records = [{"instruction": f"task {i}", "output": f"answer {i}"} for i in range(40)]
    _write_jsonl(tmp_path / "d.jsonl", records)

    def split(seed):
        recipe = recipe_from_dict({"task": "instruct", "train": {"seed": seed},
                                   "data": {"train": "d.jsonl", "eval": 0.25}})
        b = build_datasets(recipe, tokenizer, show_progress=False)
        decode = lambda ds: {tokenizer.decode(r["input_ids"]) for r in ds}  # noqa: E731
        return decode(b.train), decode(b.eval)

    train, ev = split(1)
    assert len(ev) == 10 and len(train) == 30 and not train & ev
    assert split(1) == (train, ev)
    assert split(2)[1] != ev


def test_explicit_eval_source(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "t.jsonl", RECORDS)
    _write_jsonl(tmp_path / "e.jsonl", RECORDS[:1])
    b = build_datasets(_recipe(train="t.jsonl", eval="e.jsonl"), tokenizer, show_progress=False)
    assert len(b.train) == 2 and len(b.eval) == 1 and b.stats.eval.examples == 1


def test_custom_template_file(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text('prompt_no_input: "Q: {question}\\nA:"\nresponse: " {answer}"\n')
    _write_jsonl(tmp_path / "d.jsonl", [{"question": "1+1?", "answer": "2"}])
    row = build_datasets(_recipe(train="d.jsonl", template="t.yaml"), tokenizer, show_progress=False).train[0]
    assert row["input_ids"] == _ids(tokenizer, "Q: 1+1?\nA:") + _ids(tokenizer, " 2") + [0]
    (tmp_path / "bad.yaml").write_text('prompt_no_input: "x"\nresponse: "{a}"\nbogus: 1\n')
    with pytest.raises(DataError, match="unknown template key"):
        build_datasets(_recipe(train="d.jsonl", template="bad.yaml"), tokenizer, show_progress=False)
    with pytest.raises(DataError, match="no template named 'nosuch'"):
        build_datasets(_recipe(train="d.jsonl", template="nosuch"), tokenizer, show_progress=False)
