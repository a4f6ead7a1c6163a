"""The rows of the one data pipeline against references computed here from plain tokenizer calls: the
Alpaca prompt/response boundary and its label mask, packing boundaries with restarting position ids and
the first label of each document masked, the FIM layouts (PSM, SPM, plain, repository context) with
StarCoder2's special-token ids, and the seeded eval split. Chunk sizes are lowered so that every corpus
spans several chunks (and, packed, several pack buffers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sc2tune.data import build_datasets, chunked, sources, stream
from sc2tune.recipe import recipe_from_dict

# StarCoder2's special-token ids (DESIGN.md; the bundled tokenizer is the real one)
EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, REPO_NAME, FILE_SEP = 0, 1, 2, 3, 5, 6
IGNORE = -100
# tatsu-lab/stanford_alpaca train.py, PROMPT_DICT, word for word
NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\n{instruction}\n\n### Response:")
WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
              "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
              "{instruction}\n\n### Input:\n{input}\n\n### Response:")


def _enc(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _records(n: int) -> list[dict]:
    return [{"instruction": f"Say {i} {'please ' * (i % 4)}.", "input": "" if i % 3 else f"ctx {i}",
             "output": f"{i} " * (i % 9 + 1) + "x" * (i % 50)} for i in range(n)]


def _alpaca(tokenizer, rec: dict) -> tuple[list[int], list[int]]:
    """(input_ids, labels): prompt and response tokenised apart, eos closing; only the response and eos
    trained (the first label is never a target)."""
    prompt = (WITH_INPUT if rec["input"] else NO_INPUT).format(**rec)
    p, r = _enc(tokenizer, prompt), _enc(tokenizer, rec["output"])
    return p + r + [EOS], [IGNORE] * len(p) + r + [EOS]


def _instruct(tmp_path: Path, n: int, **data):
    path = tmp_path / "i.jsonl"
    recs = _records(n)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    spec = {"train": str(path), "eval": None, "max_length": 128, "cache_dir": str(tmp_path / "cache"), **data}
    return recs, recipe_from_dict({"task": "instruct", "data": spec, "train": {"seed": 3}})


def _documents(row: dict) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (input_ids, labels) documents of a packed row, cut where position ids restart at 0; checks that
    they count 0, 1, 2, ... inside each document."""
    pos = row["position_ids"]
    starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
    assert starts[0] == 0
    for a, b in zip(starts, starts[1:], strict=False):
        assert pos[a:b] == list(range(b - a))
    return [(tuple(row["input_ids"][a:b]), tuple(row["labels"][a:b])) for a, b in zip(starts, starts[1:], strict=False)]


def test_instruct_rows_are_the_alpaca_prompt_then_the_trained_response(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 4)
    recs, recipe = _instruct(tmp_path, 14, packing=False)
    rows = build_datasets(recipe, tokenizer, show_progress=False).train
    assert [(r["input_ids"], r["labels"]) for r in rows] == [_alpaca(tokenizer, r) for r in recs]
    assert rows["length"] == [len(_alpaca(tokenizer, r)[0]) for r in recs]


def test_a_long_example_keeps_its_head_and_one_without_room_for_a_response_is_dropped(tmp_path, tokenizer):
    recs, recipe = _instruct(tmp_path, 24, packing=False, max_length=44)
    bundle = build_datasets(recipe, tokenizer, show_progress=False)
    prompts = [len(_enc(tokenizer, (WITH_INPUT if r["input"] else NO_INPUT).format(**r))) for r in recs]
    kept = [(ids[:44], labels[:44]) for (ids, labels), p in zip((_alpaca(tokenizer, r) for r in recs), prompts,
                                                                 strict=True) if p < 44]
    assert [(r["input_ids"], r["labels"]) for r in bundle.train] == kept
    assert bundle.stats.dropped_examples == sum(p >= 44 for p in prompts) > 0
    assert bundle.stats.truncated == sum(len(_alpaca(tokenizer, r)[0]) > 44 for r, p in zip(recs, prompts,
                                                                                            strict=True) if p < 44) > 0


def test_packed_rows_hold_whole_documents_with_restarting_positions(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 5)
    monkeypatch.setattr(stream, "PACK_TOKENS", 400)  # several pack buffers
    recs, recipe = _instruct(tmp_path, 40, packing=True)
    bundle = build_datasets(recipe, tokenizer, show_progress=False)
    expected = sorted((tuple(ids), (IGNORE, *labels[1:])) for ids, labels in (_alpaca(tokenizer, r) for r in recs))
    got = [doc for row in bundle.train for doc in _documents(row)]
    assert sorted(got) == expected  # every document once, whole, its first label masked
    assert all(len(ids) <= 128 for ids in bundle.train["input_ids"])
    assert bundle.stats.rows == len(bundle.train) < len(recs)
    assert bundle.stats.tokens == sum(len(ids) for ids, _ in expected)


def test_the_eval_split_is_the_seeded_permutation(tmp_path, tokenizer):
    recs, recipe = _instruct(tmp_path, 20, packing=False, eval=0.25)
    bundle = build_datasets(recipe, tokenizer, show_progress=False)
    held = set(np.random.default_rng(3).permutation(20)[:5].tolist())  # max(1, round(20 * 0.25)) records
    ref = [_alpaca(tokenizer, r) for r in recs]
    assert [r["input_ids"] for r in bundle.eval] == [ref[i][0] for i in range(20) if i in held]
    assert [r["input_ids"] for r in bundle.train] == [ref[i][0] for i in range(20) if i not in held]


FILES = {f"m{i:02d}.py": "".join(f"def f{i}_{k}(x):\n    return x * {k} + {i}  # é\n" for k in range(1 + i % 4))
         for i in range(12)}


def _fim(tmp_path: Path, tokenizer, monkeypatch, *, repo: bool = False, **fim):
    monkeypatch.setattr(chunked, "CHUNK_BYTES", 300)  # several chunks
    code = tmp_path / "code"
    for name, text in FILES.items():
        path = code / ("repo" if repo else "") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    recipe = recipe_from_dict({"task": "fim", "data": {
        "train": str(code), "eval": None, "max_length": 1024, "packing": False, "cache_dir": str(tmp_path / "c"),
        "fim": {"repo_context": repo, **fim}}})
    return build_datasets(recipe, tokenizer, show_progress=False).train


def _trained_all(row: dict) -> None:
    assert row["labels"] == [IGNORE, *row["input_ids"][1:]]  # every token a target, the first has none


def test_plain_fim_rows_are_each_file_then_eos(tmp_path, tokenizer, monkeypatch):
    rows = _fim(tmp_path, tokenizer, monkeypatch, rate=0.0)
    assert rows["input_ids"] == [_enc(tokenizer, text) + [EOS] for text in FILES.values()]
    for row in rows:
        _trained_all(row)


def test_repository_rows_name_the_repository_and_each_file(tmp_path, tokenizer, monkeypatch):
    """<repo_name>repo<file_sep>PATH\nCODE<file_sep>PATH\nCODE...<|endoftext|>, PATH\n and CODE tokenised apart;
    a row per chunk of files, the files in path order."""
    rows = _fim(tmp_path, tokenizer, monkeypatch, repo=True, rate=0.0)
    header = [REPO_NAME, *_enc(tokenizer, "repo")]
    files = [[*_enc(tokenizer, f"{name}\n"), *_enc(tokenizer, text)] for name, text in FILES.items()]
    got = []
    for row in rows:
        ids = row["input_ids"]
        _trained_all(row)
        assert ids[:len(header)] == header and ids[-1] == EOS and ids[len(header)] == FILE_SEP
        body = ids[len(header) + 1:-1]
        cuts = [i for i, t in enumerate(body) if t == FILE_SEP]
        got += [body[a + 1 if a >= 0 else 0:b] for a, b in zip([-1, *cuts], [*cuts, len(body)], strict=True)]
    assert len(rows) > 1 and got == files


@pytest.mark.parametrize("spm", [False, True])
def test_fim_rows_are_psm_or_spm_around_character_cuts(tmp_path, tokenizer, monkeypatch, spm):
    rows = _fim(tmp_path, tokenizer, monkeypatch, rate=1.0, spm_rate=1.0 if spm else 0.0)
    assert len(rows) == len(FILES)
    for row, text in zip(rows, FILES.values(), strict=True):
        ids = row["input_ids"]
        _trained_all(row)
        assert ids[0] == FIM_PREFIX and ids[-1] == EOS
        assert [i for i in ids if i in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, EOS)] == [FIM_PREFIX, FIM_SUFFIX,
                                                                                      FIM_MIDDLE, EOS]
        s, m = ids.index(FIM_SUFFIX), ids.index(FIM_MIDDLE)
        dec = lambda part: tokenizer.decode(part)  # noqa: E731 - plain decoding, no clean-up
        if spm:  # <fim_prefix><fim_suffix> suf <fim_middle> pre mid <|endoftext|>
            assert s == 1
            suffix, prefix_middle = dec(ids[s + 1:m]), dec(ids[m + 1:-1])
            assert prefix_middle + suffix == text
        else:  # <fim_prefix> pre <fim_suffix> suf <fim_middle> mid <|endoftext|>
            prefix, suffix, middle = dec(ids[1:s]), dec(ids[s + 1:m]), dec(ids[m + 1:-1])
            assert prefix + middle + suffix == text
