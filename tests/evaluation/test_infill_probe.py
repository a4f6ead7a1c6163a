"""The infilling probe (sc2tune.evaluation.infill) on hand-built rows and a stub model with known answers."""

from __future__ import annotations

import pytest
import torch

from sc2tune.data.holes import recover_documents
from sc2tune.evaluation.infill import InfillCase, fim_prompt_ids, infill_scores, make_cases

CODE_A = "def area(r):\n    return 3.14 * r * r\n"
PRE, MID, SUF = "def inc(x):\n    ", "return x + 1", "\n\nprint(inc(1))\n"


@pytest.fixture
def ids(tokenizer):
    names = ("<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<repo_name>", "<file_sep>")
    fp, fm, fs, repo, sep = (tokenizer.convert_tokens_to_ids(t) for t in names)
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return enc, fp, fm, fs, repo, sep


def test_repository_rows_split_into_files_without_their_path_lines(tokenizer, ids):
    enc, fp, fm, fs, repo, sep = ids
    row = [repo, *enc("me/tools"), sep, *enc("area.py\n" + CODE_A),
           sep, fp, *enc("inc.py\n" + PRE), fs, *enc(SUF), fm, *enc(MID), tokenizer.eos_token_id]
    assert recover_documents([{"input_ids": row}], tokenizer) == [CODE_A, PRE + MID + SUF]


def test_short_documents_are_skipped_and_limit_stops_early(tokenizer, ids):
    enc = ids[0]
    eos = tokenizer.eos_token_id
    rows = [{"input_ids": [*enc("x = 1\n"), eos]},  # under 20 characters
            {"input_ids": [*enc("a_long_line_without_newlines = 12345"), eos]},  # fewer than 2 newlines
            {"input_ids": [*enc(CODE_A), eos]}, {"input_ids": [*enc(PRE + MID + SUF), eos]}]
    assert recover_documents(rows, tokenizer) == [CODE_A, PRE + MID + SUF]
    assert recover_documents(rows, tokenizer, limit=1) == [CODE_A]


def test_span_holes_cover_the_document_and_respect_the_span_limit():
    docs = [CODE_A * 5, PRE + MID + SUF]
    cases = make_cases(docs, "span", 10, seed=3, max_span_chars=7)
    assert len(cases) == 2 and sorted(c.prefix + c.middle + c.suffix for c in cases) == sorted(docs)
    assert all(1 <= len(c.middle) <= 7 for c in cases)


def test_a_long_prefix_gives_its_room_to_a_short_suffix(tokenizer, ids):
    enc, fp, fm, fs = ids[:4]
    case = InfillCase("span", "a = 1\nb = 2\nc = 3\nd = 4\n", "e = 5\n", "f\n")
    pre, suf = enc(case.prefix), enc(case.suffix)
    assert len(pre) > 8 and len(suf) <= 4
    # budget 8: the suffix keeps all of its tokens, the prefix its last 8 - len(suffix)
    expected = [fp, *pre[len(pre) - (8 - len(suf)):], fs, *suf, fm]
    assert fim_prompt_ids(case, tokenizer, budget=8) == expected


class _Stub(torch.nn.Module):
    """A "model" whose generate answers each prompt with a fixed continuation."""

    def __init__(self, answers: list[list[int]]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.answers = answers

    def generate(self, input_ids, **kwargs):
        return torch.tensor([input_ids[0].tolist() + self.answers.pop(0)])


def test_scores_cut_at_the_end_token_and_compare_with_the_true_middle(tokenizer, ids):
    enc = ids[0]
    eos = tokenizer.eos_token_id
    cases = [InfillCase("span", PRE, MID, SUF), InfillCase("span", "y = ", "2", "\n")]
    # the first middle is right, then eos and junk that must be cut; the second is "3" instead of "2"
    stub = _Stub([[*enc(MID), eos, *enc("junk")], [*enc("3"), eos]])
    scores = infill_scores(stub, tokenizer, cases, max_length=64, max_new_tokens=16)["span"]
    assert scores["count"] == 2 and scores["exact_match"] == 0.5
    assert [e["generated"] for e in scores["examples"]] == [MID, "3"]
