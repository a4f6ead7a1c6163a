"""Fill-in-the-middle (FIM) training sequences from code documents (Bavarian et al. 2022; StarCoder2).

Each document is tokenised once. A document longer than a row is cut into *windows* at token
boundaries that are also character boundaries (nothing is dropped); each window is transformed on its
own. With probability ``fim.rate`` a window is split at two cut points drawn uniformly over its
CHARACTERS (0 <= a <= b <= n) into prefix = w[:a], middle = w[a:b], suffix = w[b:], and rendered

    PSM (prob. 1 - spm_rate):  <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle <|endoftext|>
    SPM (prob. spm_rate):      <fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle <|endoftext|>

(SPM is the paper's "variant 2"), otherwise plain: ``w <|endoftext|>``. Every token is trained,
``<|endoftext|>`` included. A plain window that is not the end of its document carries no
``<|endoftext|>`` (the text goes on in the next window; the model must not learn to stop there).

Each part is the window's own tokens up to the last token boundary before a cut, plus the few
characters between that boundary and the cut tokenised on their own, so every part decodes to exactly
its characters. Should that re-tokenisation push a window over its budget (rare: the budget keeps
``FIM_SLACK`` spare tokens), the window is rendered plain and counted as a ``fallback``.

Repository context (``fim.repo_context``) renders StarCoder2's repository format::

    <repo_name>NAME<file_sep>PATH\\nCODE<file_sep>PATH\\nCODE ... <|endoftext|>

and, as StarCoder2 was trained (bigcode-project/Megatron-LM, GPT dataset: the sample is split at
``<file_sep>`` and each fragment between two of them is FIM-permuted on its own), FIM is applied to each
whole ``PATH\\nCODE`` fragment: the two cut points are drawn uniformly over the fragment's characters, the
path line included, and ``<file_sep>`` stays outside the sentinels. With F = PATH\\nCODE (a file window)
cut into pre = F[:a], mid = F[a:b], suf = F[b:]::

    PSM:  <file_sep><fim_prefix>pre<fim_suffix>suf<fim_middle>mid
    SPM:  <file_sep><fim_prefix><fim_suffix>suf<fim_middle>pre mid

e.g. ``a.py\\nx = 1\\n`` cut at 2 and 8 gives (PSM) ``<file_sep><fim_prefix>a.<fim_suffix> 1\\n<fim_middle>py\\nx =``
(a cut may fall inside the path, then the path is split between parts). The ``<repo_name>NAME`` header
is never transformed (Megatron would permute that fragment too; it teaches nothing). Differences from
Megatron's draws: the FIM coin (``fim.rate``) and the PSM/SPM coin are drawn per file window, with no
extra repository-level coin; the sequence's single ``<|endoftext|>`` closes it as in plain repository rows.

Files are added to a sequence in order until the next would not fit; a sequence that ends in the
middle of a cut file (plain window) has no ``<|endoftext|>``; a cut file repeats its ``<file_sep>PATH``
header in each window (the path line is part of each window's fragment). All random draws come from
``seed``, in document order.
"""

from __future__ import annotations

import random
import weakref
from collections import Counter
from dataclasses import dataclass

import numpy as np
from tokenizers.pre_tokenizers import ByteLevel
from transformers import PreTrainedTokenizerBase

from sc2tune.data.packing import TokenSeqs
from sc2tune.errors import DataError, UserError
from sc2tune.recipe import FimSpec
from sc2tune.tokens import special_tokens

#: Spare tokens per window for the re-tokenisation around the two cut points.
FIM_SLACK = 8
#: Characters of documents tokenised per batch (bounds memory).
BATCH_CHARS = 4_000_000


@dataclass(frozen=True)
class CodeDoc:
    """One document: a file (or a record's text), with its repository name for repository context."""

    text: str
    path: str
    repo: str | None = None


# ---- tokenisation with character positions ---------------------------------------------------------

_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def byte_lengths(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """Bytes each token id decodes to for a byte-level BPE vocabulary (-1 where unknown); cached per tokenizer."""
    vocab_size = len(tokenizer)
    cached = _TABLES.get(tokenizer)
    if cached is not None and cached[0] == vocab_size:
        return cached[1]
    vocab = tokenizer.get_vocab()
    # the byte-level BPE alphabet: one character per byte (printable Latin-1 as itself, the rest from U+0100)
    alphabet = set(ByteLevel.alphabet())
    table = np.full(max(vocab.values()) + 1, -1, dtype=np.int64)
    for token, index in vocab.items():
        if token and all(ch in alphabet for ch in token):
            table[index] = len(token)
    _TABLES[tokenizer] = (vocab_size, table)
    return table


class Encoder:
    """Batch tokeniser that returns ids and character boundaries, special-token text kept as text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise UserError("FIM needs a fast (Rust) tokenizer", hint="load the tokenizer with use_fast=True")
        self.backend = backend
        self.table = byte_lengths(tokenizer)

    def ids(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text; ``<|endoftext|>`` etc. written in the text are tokenised as text."""
        old = self.backend.encode_special_tokens
        self.backend.encode_special_tokens = True
        try:
            return [np.asarray(e.ids, dtype=np.int32) for e in self.backend.encode_batch(texts, add_special_tokens=False)]
        finally:
            self.backend.encode_special_tokens = old

    def boundaries(self, text: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bpos, bvalid), both of length len(ids)+1: bpos[j] = character offset of the boundary before
        token j; bvalid[j] = that boundary does not fall inside a multi-byte character."""
        n = len(ids)
        lengths = self.table[ids] if n else np.zeros(0, np.int64)
        raw = text.encode("utf-8")
        if n and (lengths.min() < 0 or int(lengths.sum()) != len(raw)):  # not all byte-level: the offsets
            old = self.backend.encode_special_tokens
            self.backend.encode_special_tokens = True
            try:
                offsets = np.asarray(self.backend.encode(text, add_special_tokens=False).offsets, dtype=np.int64)
            finally:
                self.backend.encode_special_tokens = old
            valid = np.append(offsets[1:, 0] == offsets[:-1, 1], True)
            return np.concatenate([[0], offsets[:, 1]]), np.concatenate([[True], valid])
        ends = np.cumsum(lengths)
        if text.isascii():
            bpos, valid = ends, np.ones(n, dtype=bool)
        else:
            starts = (np.frombuffer(raw, np.uint8) & 0xC0) != 0x80
            chars = np.cumsum(starts)
            bpos = chars[ends - 1] if n else ends
            valid = np.append(starts, True)[ends]
        return np.concatenate([[0], bpos]).astype(np.int64), np.concatenate([[True], valid])


# ---- windows and the FIM split ----------------------------------------------------------------------

def windows(bpos: np.ndarray, bvalid: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Cut tokens [0, n) into windows [s, e) of at most ``size`` tokens, ending on valid boundaries."""
    n = len(bpos) - 1
    out: list[tuple[int, int]] = []
    s = 0
    while s < n:
        e = min(s + size, n)
        while e > s + 1 and not bvalid[e]:
            e -= 1
        out.append((s, e))
        s = e
    return out


def _cut(bpos: np.ndarray, bvalid: np.ndarray, s: int, e: int, char: int) -> tuple[int, int]:
    """(L, R): the last valid boundary at or before character ``char`` and the first at or after it."""
    window = bpos[s:e + 1]
    left = s + int(np.searchsorted(window, char, side="right")) - 1
    while not bvalid[left]:
        left -= 1
    right = s + int(np.searchsorted(window, char, side="left"))
    while not bvalid[right]:
        right += 1
    return left, right


Part = np.ndarray | str  # token ids, or text still to be tokenised


def fim_parts(t: _Text, s: int, e: int, a: int, b: int) -> tuple[list[Part], list[Part], list[Part]]:
    """Prefix, middle and suffix of window [s, e) of ``t`` cut at characters a <= b (absolute offsets)."""
    text, ids, bpos = t.text, t.ids, t.bpos
    l1, r1 = _cut(bpos, t.bvalid, s, e, a)
    l2, r2 = _cut(bpos, t.bvalid, s, e, b)
    pre: list[Part] = [ids[s:l1], text[bpos[l1]:a]]
    if r1 <= l2:
        mid: list[Part] = [text[a:bpos[r1]], ids[r1:l2], text[bpos[l2]:b]]
    else:
        mid = [text[a:b]]
    suf: list[Part] = [text[b:bpos[r2]], ids[r2:e]]
    return pre, mid, suf


@dataclass
class _Window:
    doc: int
    s: int
    e: int
    last: bool  # the document's final window
    mode: str  # psm | spm | plain
    path: np.ndarray  # ids of "PATH\n" (repository context: the head of the FIM fragment), else empty
    parts: tuple[list[Part], list[Part], list[Part]] | None = None


@dataclass(frozen=True)
class _Text:
    """A text with its token ids and boundaries (as :meth:`Encoder.boundaries` returns them)."""

    text: str
    ids: np.ndarray
    bpos: np.ndarray
    bvalid: np.ndarray


def fragment(path: _Text, doc: _Text, s: int, e: int) -> _Text:
    """``PATH\\n`` followed by window [s, e) of ``doc``: the unit StarCoder2's repository FIM permutes."""
    start = int(doc.bpos[s])
    return _Text(
        path.text + doc.text[start:int(doc.bpos[e])],
        np.concatenate([path.ids, doc.ids[s:e]]).astype(np.int32),
        np.concatenate([path.bpos, len(path.text) + doc.bpos[s + 1:e + 1] - start]),
        np.concatenate([path.bvalid, doc.bvalid[s + 1:e + 1]]),
    )


@dataclass(frozen=True)
class _Ctx:
    """What planning and rendering the windows of one :func:`build_fim` call share."""

    enc: Encoder
    fim: FimSpec
    max_length: int
    reserve: int  # tokens kept free in a window for the FIM sentinels (and re-tokenisation slack)
    rng: random.Random
    sp: dict[str, np.ndarray]  # special token ids, each as a 1-element array
    name_ids: dict[str, np.ndarray]  # repository context: ids of each repository name
    path_ids: dict[str, np.ndarray]  # repository context: ids of each "PATH\n"


def runs(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of consecutive items whose ``sizes`` add up to at most ``limit`` (an item larger than
    ``limit`` alone), cut greedily: the batches of :func:`build_fim`, the chunks of :mod:`sc2tune.data.chunked`."""
    out: list[tuple[int, int]] = []
    start = total = 0
    for i, n in enumerate(sizes):
        if i > start and total + n > limit:
            out.append((start, i))
            start, total = i, 0
        total += n
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


def _draw(ctx: _Ctx, w: _Window, doc: CodeDoc, ids: np.ndarray, bpos: np.ndarray, bvalid: np.ndarray) -> None:
    """Draw whether window ``w`` is FIM'd, PSM or SPM, and its two cut points (module doc); sets its parts."""
    if ctx.rng.random() >= ctx.fim.rate:
        return
    rng = ctx.rng
    w.mode = "spm" if rng.random() < ctx.fim.spm_rate else "psm"
    t, s, e = _Text(doc.text, ids, bpos, bvalid), w.s, w.e
    lo, hi = int(bpos[s]), int(bpos[e])
    if ctx.fim.repo_context:  # the whole PATH\nCODE fragment, cut points anywhere in it (module doc)
        t = fragment(_Text(doc.path + "\n", w.path, *ctx.enc.boundaries(doc.path + "\n", w.path)), t, s, e)
        s, e, lo, hi = 0, len(t.ids), 0, len(t.text)
    a, b = sorted((rng.randint(lo, hi), rng.randint(lo, hi)))
    w.parts = fim_parts(t, s, e, a, b)


def _plan(ctx: _Ctx, batch: list[CodeDoc], batch_ids: list[np.ndarray], start: int) -> list[list[_Window]]:
    """The window planner: each document of ``batch`` (document ``start + k``) cut into windows, FIM
    choices drawn, grouped into output sequences (one window each; with repository context, consecutive
    windows of one repository while they fit ``max_length``)."""
    repo = ctx.fim.repo_context
    groups: list[list[_Window]] = []
    current: list[_Window] = []
    used = 0
    for k, (doc, ids) in enumerate(zip(batch, batch_ids, strict=True)):
        bpos, bvalid = ctx.enc.boundaries(doc.text, ids)
        path = ctx.path_ids[doc.path] if repo else np.zeros(0, np.int32)
        head_len = 2 + len(ctx.name_ids[doc.repo or ""]) + len(path) if repo else 0
        if repo and current and doc.repo != batch[current[0].doc - start].repo:
            groups.append(current)
            current, used = [], 0
        size = ctx.max_length - 1 - head_len - ctx.reserve
        if size < 16:
            raise DataError(f"{doc.path}: data.max_length {ctx.max_length} leaves {size} tokens per window "
                            "after the repository/file header and FIM tokens",
                            hint="raise data.max_length or shorten the repository/file names")
        spans = windows(bpos, bvalid, size)
        for i, (s, e) in enumerate(spans):
            w = _Window(start + k, s, e, i == len(spans) - 1, "plain", path)
            _draw(ctx, w, doc, ids, bpos, bvalid)
            if not repo:
                groups.append([w])
                continue
            cost = len(path) + 1 + (e - s) + ctx.reserve
            if current and used + cost + 1 > ctx.max_length:
                groups.append(current)
                current, used = [], 0
            if not current:
                used = 1 + len(ctx.name_ids[doc.repo or ""])
            current.append(w)
            used += cost
    if current:
        groups.append(current)
    return groups


def _render(ctx: _Ctx, groups: list[list[_Window]], batch: list[CodeDoc], batch_ids: list[np.ndarray], start: int,
            counts: Counter) -> list[np.ndarray]:
    """The renderer: each group of windows as one token sequence (PSM/SPM/plain, module doc); every
    cut-point piece of the batch is tokenised in one call. A FIM'd window whose re-tokenised parts would
    not fit is rendered plain (``fallback``)."""
    repo, sp = ctx.fim.repo_context, ctx.sp
    pieces = [p for g in groups for w in g if w.parts for part in w.parts for p in part if isinstance(p, str)]
    piece_ids = iter(ctx.enc.ids(pieces))
    resolved = {id(w): tuple([next(piece_ids) if isinstance(p, str) else p for p in part] for part in w.parts)
                for g in groups for w in g if w.parts}
    out: list[np.ndarray] = []
    for g in groups:
        seq: list[np.ndarray] = []
        if repo:
            seq += [sp["repo_name"], ctx.name_ids[batch[g[0].doc - start].repo or ""]]
        for w in g:
            ids = batch_ids[w.doc - start]
            if repo:
                seq.append(sp["file_sep"])  # outside the FIM sentinels, as StarCoder2 saw it
            plain = np.concatenate([w.path, ids[w.s:w.e]]) if repo else ids[w.s:w.e]
            body = [plain]
            if w.parts:
                pre, mid, suf = resolved[id(w)]
                if w.mode == "psm":
                    body = [sp["fim_prefix"], *pre, sp["fim_suffix"], *suf, sp["fim_middle"], *mid]
                else:
                    body = [sp["fim_prefix"], sp["fim_suffix"], *suf, sp["fim_middle"], *pre, *mid]
                if sum(len(x) for x in body) > len(plain) + ctx.reserve:
                    counts["fallback"] += 1
                    w.mode, body = "plain", [plain]
            counts[w.mode] += 1
            seq += body
        if g[-1].mode != "plain" or g[-1].last:
            seq.append(sp["eos"])
        out.append(np.concatenate(seq).astype(np.int32))
    counts["windows"] += sum(len(g) for g in groups)
    return out


def build_fim(docs: list[CodeDoc], tokenizer: PreTrainedTokenizerBase, fim: FimSpec, max_length: int,
              seed: int) -> tuple[TokenSeqs, Counter]:
    """FIM training sequences for ``docs`` (see module doc). Returns (sequences, counts) where counts
    has psm, spm, plain, fallback (windows) and windows. Documents go in batches of :data:`BATCH_CHARS`:
    tokenised, planned (:func:`_plan`), rendered (:func:`_render`)."""
    tok = special_tokens(tokenizer, need_fim=True)
    repo = fim.repo_context
    if repo and (tok.repo_name is None or tok.file_sep is None):
        raise UserError("fim.repo_context needs the <repo_name> and <file_sep> tokens, and this tokenizer "
                        "has not got them", hint="use a StarCoder2 tokenizer or set data.fim.repo_context: false")
    enc = Encoder(tokenizer)
    names = sorted({d.repo or "" for d in docs}) if repo else []
    ctx = _Ctx(enc, fim, max_length, 3 + FIM_SLACK if fim.rate > 0 else 0, random.Random(seed),
               {name: np.asarray([getattr(tok, name)], np.int32)
                for name in ("eos", "fim_prefix", "fim_middle", "fim_suffix", "repo_name", "file_sep")
                if getattr(tok, name) is not None},
               dict(zip(names, enc.ids(names), strict=True)),
               dict(zip([d.path for d in docs], enc.ids([d.path + "\n" for d in docs]), strict=True)) if repo else {})
    counts: Counter = Counter(psm=0, spm=0, plain=0, fallback=0)
    out_ids: list[np.ndarray] = []
    for start, stop in runs([len(d.text) for d in docs], BATCH_CHARS):
        batch = docs[start:stop]
        batch_ids = enc.ids([d.text for d in batch])
        out_ids += _render(ctx, _plan(ctx, batch, batch_ids, start), batch, batch_ids, start, counts)
    return TokenSeqs.from_lists(out_ids, out_ids), counts
