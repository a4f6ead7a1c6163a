"""FIM: every sample turns back into its source text exactly; PSM/SPM layout; rates; windows; repo context.

The inverse transform here is written independently from sc2tune.data.fim: it decodes the ids with the
tokenizer and undoes the sentinel layout described in the StarCoder2 / FIM papers.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from sc2tune.data.fim import CodeDoc, build_fim
from sc2tune.errors import UserError
from sc2tune.recipe import FimSpec

SENT = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")


def _decode(tokenizer, ids):
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _undo_fim(body: str) -> tuple[str, str]:
    """(source text, mode) of one rendered window (no eos, no headers)."""
    if body.startswith("<fim_prefix><fim_suffix>"):  # SPM: suffix, then prefix + middle
        suf, pre_mid = body[len("<fim_prefix><fim_suffix>"):].split("<fim_middle>")
        return pre_mid + suf, "spm"
    if body.startswith("<fim_prefix>"):
        pre, rest = body[len("<fim_prefix>"):].split("<fim_suffix>")
        suf, mid = rest.split("<fim_middle>")
        return pre + mid + suf, "psm"
    assert not any(s in body for s in SENT)
    return body, "plain"


def _rows(seqs):
    return [seqs.ids[seqs.offsets[i]:seqs.offsets[i + 1]] for i in range(len(seqs))]


def _docs(n=60, seed=0):
    rng = random.Random(seed)
    pieces = ["def f(x):\n", "    return x * 2\n", "# héllo wörld ✓ 😀\n", "s = '<|endoftext|>'  # not a token\n",
              "\tclass A:\n\t\tpass\n", "x = [1, 2, 3]\n", "\n\n", "print('日本語')\n", "y=1;z=2\n"]
    return [CodeDoc("".join(rng.choice(pieces) for _ in range(rng.randint(1, 40))), f"f{i}.py") for i in range(n)]


@pytest.mark.parametrize("max_length", [48, 4096])
def test_every_sample_reconstructs_its_source(tokenizer, max_length):
    docs = _docs()
    fim = FimSpec(rate=0.7, spm_rate=0.5)
    for doc in docs:  # one document at a time, so the samples of each document are known
        seqs, counts = build_fim([doc], tokenizer, fim, max_length, seed=3)
        text = ""
        rows = _rows(seqs)
        for k, row in enumerate(rows):
            assert len(row) <= max_length
            body = _decode(tokenizer, row)
            last = k == len(rows) - 1
            if body.endswith("<|endoftext|>"):
                body = body[: -len("<|endoftext|>")]
                ends = True
            else:
                ends = False
            part, mode = _undo_fim(body)
            # every FIM sample and the document's last sample end with eos; a plain inner window does not
            assert ends == (mode != "plain" or last)
            assert "<|endoftext|>" not in tokenizer.convert_ids_to_tokens(list(row[:-1]))
            text += part
        assert text == doc.text
        assert counts["psm"] + counts["spm"] + counts["plain"] == len(rows) == counts["windows"]


def test_plain_is_the_tokenizers_own_ids(tokenizer):
    doc = CodeDoc("def add(a, b):\n    return a + b\n", "a.py")
    seqs, _ = build_fim([doc], tokenizer, FimSpec(rate=0.0), 1024, seed=0)
    expected = tokenizer(doc.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert seqs.ids.tolist() == expected and seqs.labels.tolist() == [-100, *expected[1:]]


def test_psm_and_spm_layout(tokenizer):
    doc = [CodeDoc("abcdefghij" * 5, "a.py")]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (*SENT, "<|endoftext|>")}
    psm, _ = build_fim(doc, tokenizer, FimSpec(rate=1.0, spm_rate=0.0), 1024, seed=0)
    row = psm.ids.tolist()
    assert row[0] == ids["<fim_prefix>"] and row[-1] == ids["<|endoftext|>"]
    assert row.index(ids["<fim_prefix>"]) < row.index(ids["<fim_suffix>"]) < row.index(ids["<fim_middle>"])
    assert all(row.count(ids[s]) == 1 for s in SENT)
    spm, _ = build_fim(doc, tokenizer, FimSpec(rate=1.0, spm_rate=1.0), 1024, seed=0)
    assert spm.ids.tolist()[:2] == [ids["<fim_prefix>"], ids["<fim_suffix>"]]
    assert spm.labels[0] == -100 and (spm.labels[1:] == spm.ids[1:]).all()


def test_rates_and_determinism(tokenizer):
    docs = [CodeDoc(f"x{i} = {i}\n", f"{i}.py") for i in range(2000)]
    seqs, counts = build_fim(docs, tokenizer, FimSpec(rate=0.5, spm_rate=0.25), 1024, seed=7)
    fim = counts["psm"] + counts["spm"]
    assert 900 < fim < 1100  # Binomial(2000, 0.5): sd ~22
    assert 0.18 < counts["spm"] / fim < 0.32  # Binomial(~1000, 0.25): sd ~0.014
    again, _ = build_fim(docs, tokenizer, FimSpec(rate=0.5, spm_rate=0.25), 1024, seed=7)
    other, _ = build_fim(docs, tokenizer, FimSpec(rate=0.5, spm_rate=0.25), 1024, seed=8)
    assert np.array_equal(seqs.ids, again.ids) and not np.array_equal(seqs.ids, other.ids)


def test_cut_points_are_uniform_over_characters(tokenizer):
    # 'é' is 2 bytes and the tokenizer merges them unevenly: a byte- or token-level cut would not give
    # E[len(prefix)] = n/3 and E[len(middle)] = n/3 over characters (min and spread of two uniforms).
    n = 90
    text = "é" * n
    pre_lengths, mid_lengths = [], []
    for seed in range(400):
        seqs, _ = build_fim([CodeDoc(text, "e.py")], tokenizer, FimSpec(rate=1.0, spm_rate=0.0), 1024, seed)
        body = _decode(tokenizer, seqs.ids[:-1])
        pre, rest = body[len("<fim_prefix>"):].split("<fim_suffix>")
        suf, mid = rest.split("<fim_middle>")
        assert pre + mid + suf == text
        pre_lengths.append(len(pre))
        mid_lengths.append(len(mid))
    # sd of the mean over 400 draws is ~1.1 characters
    assert abs(np.mean(pre_lengths) - n / 3) < 5 and abs(np.mean(mid_lengths) - n / 3) < 5
    assert min(pre_lengths) == 0 or max(pre_lengths) > 80


def test_repo_context_layout(tokenizer):
    docs = [CodeDoc("import b\n", "a.py", "proj"), CodeDoc("X = 1\n", "pkg/b.py", "proj"),
            CodeDoc("print(2)\n", "main.py", "other")]
    seqs, _ = build_fim(docs, tokenizer, FimSpec(rate=0.0, repo_context=True), 1024, seed=0)
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    tid = tokenizer.convert_tokens_to_ids
    first = [tid("<repo_name>"), *enc("proj"), tid("<file_sep>"), *enc("a.py\n"), *enc("import b\n"),
             tid("<file_sep>"), *enc("pkg/b.py\n"), *enc("X = 1\n"), tid("<|endoftext|>")]
    second = [tid("<repo_name>"), *enc("other"), tid("<file_sep>"), *enc("main.py\n"), *enc("print(2)\n"),
              tid("<|endoftext|>")]
    assert [r.tolist() for r in _rows(seqs)] == [first, second]


def _undo_repo_row(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(repository name, [(path, code, mode)]) of one decoded repository row (eos removed).

    Each ``<file_sep>`` fragment is ``PATH\\nCODE`` as a whole, possibly FIM'd: undo FIM first, then
    split off the path line (StarCoder2 / Megatron-LM layout, written independently here)."""
    assert text.startswith("<repo_name>")
    repo, *chunks = text[len("<repo_name>"):].split("<file_sep>")
    files = []
    for chunk in chunks:
        fragment, mode = _undo_fim(chunk)
        path, code = fragment.split("\n", 1)
        files.append((path, code, mode))
    return repo, files


def test_repo_context_with_fim_reconstructs_files(tokenizer):
    docs = sorted((CodeDoc(d.text, d.path, f"repo{i % 3}") for i, d in enumerate(_docs(30))),
                  key=lambda d: (d.repo, d.path))
    seqs, counts = build_fim(docs, tokenizer, FimSpec(rate=0.8, repo_context=True), 200, seed=1)
    files: dict[tuple[str, str], str] = {}
    for row in _rows(seqs):
        assert len(row) <= 200
        repo, pieces = _undo_repo_row(_decode(tokenizer, row).removesuffix("<|endoftext|>"))
        for path, code, _ in pieces:
            files[(repo, path)] = files.get((repo, path), "") + code
    assert files == {(d.repo, d.path): d.text for d in docs}
    assert counts["psm"] + counts["spm"] > 0


def test_heldout_probe_recovers_repository_files(tokenizer):
    """sc2tune.data.holes reads the layout back (for eval RUN's infilling probe): each file's code, FIM undone,
    path line dropped."""
    from sc2tune.data.holes import recover_documents

    a, b, c = ("def f(x):\n    return x * 2\n\nprint(f(3))\n", "class A:\n    pass\n\n\nA()\n",
               "import os\nprint(os.sep)\nprint('done')\n")
    enc = lambda s: tokenizer(s, add_special_tokens=False, split_special_tokens=True)["input_ids"]  # noqa: E731
    t = tokenizer.convert_tokens_to_ids
    row = [t("<repo_name>"), *enc("proj"),
           # PSM, cut inside the path: pre "pkg/", suf = a[10:], mid = "a.py\n" + a[:10]
           t("<file_sep>"), t("<fim_prefix>"), *enc("pkg/"), t("<fim_suffix>"), *enc(a[10:]),
           t("<fim_middle>"), *enc("a.py\n" + a[:10]),
           # SPM: suf = b[5:], pre = "b.py\ncl", mid = b[2:5]
           t("<file_sep>"), t("<fim_prefix>"), t("<fim_suffix>"), *enc(b[5:]), t("<fim_middle>"),
           *enc("b.py\ncl"), *enc(b[2:5]),
           t("<file_sep>"), *enc("tools/é.py\n" + c), t("<|endoftext|>")]  # plain
    assert recover_documents([{"input_ids": row}], tokenizer) == [a, b, c]
    docs = [CodeDoc(a, "pkg/a.py", "p"), CodeDoc(b, "b.py", "p"), CodeDoc(c, "tools/é.py", "q")]
    for seed in range(10):  # and what build_fim writes comes back the same way
        seqs, _ = build_fim(docs, tokenizer, FimSpec(rate=0.9, repo_context=True), 4096, seed)
        assert recover_documents([{"input_ids": r.tolist()} for r in _rows(seqs)], tokenizer) == [a, b, c]


# Every rendering of the file "ab\nc" (path "ab", code "c") of repository "r", written out by hand:
# F = "ab\nc" cut at characters a <= b into pre = F[:a], mid = F[a:b], suf = F[b:].
_HEAD, _EOS = "<repo_name>r<file_sep>", "<|endoftext|>"
_PSM = [  # <fim_prefix>pre<fim_suffix>suf<fim_middle>mid, for a >= 1 (a = 0 reads as SPM)
    "<fim_prefix>a<fim_suffix>b\nc<fim_middle>",     # a=1 b=1: the path itself is cut
    "<fim_prefix>a<fim_suffix>\nc<fim_middle>b",     # a=1 b=2: the middle is the rest of the path
    "<fim_prefix>a<fim_suffix>c<fim_middle>b\n",     # a=1 b=3
    "<fim_prefix>a<fim_suffix><fim_middle>b\nc",     # a=1 b=4
    "<fim_prefix>ab<fim_suffix>\nc<fim_middle>",     # a=2 b=2
    "<fim_prefix>ab<fim_suffix>c<fim_middle>\n",     # a=2 b=3
    "<fim_prefix>ab<fim_suffix><fim_middle>\nc",     # a=2 b=4
    "<fim_prefix>ab\n<fim_suffix>c<fim_middle>",     # a=3 b=3
    "<fim_prefix>ab\n<fim_suffix><fim_middle>c",     # a=3 b=4
    "<fim_prefix>ab\nc<fim_suffix><fim_middle>",     # a=4 b=4
]
_SPM = [  # <fim_prefix><fim_suffix>suf<fim_middle>pre mid: only b shows
    "<fim_prefix><fim_suffix>ab\nc<fim_middle>",     # b=0
    "<fim_prefix><fim_suffix>b\nc<fim_middle>a",     # b=1: the path is cut between suffix and prefix
    "<fim_prefix><fim_suffix>\nc<fim_middle>ab",     # b=2
    "<fim_prefix><fim_suffix>c<fim_middle>ab\n",     # b=3
    "<fim_prefix><fim_suffix><fim_middle>ab\nc",     # b=4
]


# PSM with a = 0 (empty prefix) reads "<fim_prefix><fim_suffix>F[b:]<fim_middle>F[:b]": the SPM strings.
@pytest.mark.parametrize("spm_rate, expected", [(0.0, _PSM + _SPM), (1.0, _SPM)])
def test_repo_fim_applies_to_the_whole_path_and_code_fragment(tokenizer, spm_rate, expected):
    """<file_sep> stays outside; the path line is inside the FIM'd fragment and may be cut anywhere."""
    seen = set()
    for seed in range(500):
        seqs, _ = build_fim([CodeDoc("c", "ab", "r")], tokenizer,
                            FimSpec(rate=1.0, spm_rate=spm_rate, repo_context=True), 64, seed)
        seen.add(_decode(tokenizer, seqs.ids))
    assert seen == {_HEAD + body + _EOS for body in expected}
def test_tokenizer_without_fim_tokens_is_a_clear_error():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"a": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")
    with pytest.raises(UserError, match="<fim_prefix>"):
        build_fim([CodeDoc("a a", "x")], tok, FimSpec(), 64, seed=0)
