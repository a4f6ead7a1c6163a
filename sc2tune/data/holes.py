"""Held-out code back from prepared rows, and whole-line holes cut in it on token boundaries.

Documents (:func:`recover_documents`) are recovered from a recipe's tokenized eval rows, so they are exactly
the held-out split the data pipeline made: rows are split into documents where packed ``position_ids``
restart, repository rows into files at ``<file_sep>``, and FIM-transformed documents are put back in order:
PSM ``<fim_prefix>P<fim_suffix>S<fim_middle>M`` -> ``P M S``, SPM ``<fim_prefix><fim_suffix>S<fim_middle>PM``
-> ``PM S``. In a repository row each file is one ``PATH\\nCODE`` fragment, FIM'd as a whole
(``<file_sep><fim_prefix>PATH\\nPRE<fim_suffix>...``, the path possibly split between the parts, see
:mod:`sc2tune.data.fim`), so a file is un-FIM'd first and its path line dropped after. A document counts
when it has at least 20 non-blank characters and two newlines.

A line hole (:func:`line_cuts`) is a line ``L`` of ``text`` with at least ``min_chars`` non-blank characters
(one with nothing but blanks before it is none), cut from the end of the last non-blank character before ``L`` to the end of ``L``
(its newline excluded)::

    prefix = text[:a]    middle = text[a:b] = "\\n" + indentation + L    suffix = text[b:]

StarCoder2's tokenizer joins a newline to the indentation after it (``"\\n       "``, then ``" self"``): a
prefix cut right after the newline would end in a lone ``"\\n"`` token the model never saw there in
training. The prediction for such a hole is :func:`first_line` of the generated text, compared with ``L``.

Shared by ``sc2tune eval RUN`` (:mod:`sc2tune.evaluation.infill`), the quickstart (:mod:`sc2tune.demo`) and the
in-training FIM probe (:mod:`sc2tune.training.fimprobe`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sc2tune.tokens import SpecialTokens, special_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def _unfim(ids: list[int], tokenizer: PreTrainedTokenizerBase, sp: SpecialTokens) -> str:
    dec = lambda part: tokenizer.decode(part, clean_up_tokenization_spaces=False)  # noqa: E731
    if ids and ids[0] == sp.fim_prefix:
        i_suf = ids.index(sp.fim_suffix) if sp.fim_suffix in ids else -1
        i_mid = ids.index(sp.fim_middle) if sp.fim_middle in ids else -1
        if 0 < i_suf < i_mid:
            if i_suf == 1:  # SPM: suffix first, then prefix + middle
                return dec(ids[i_mid + 1:]) + dec(ids[2:i_mid])
            return dec(ids[1:i_suf]) + dec(ids[i_mid + 1:]) + dec(ids[i_suf + 1:i_mid])
    return dec(ids)


def recover_documents(dataset: Any, tokenizer: PreTrainedTokenizerBase, *, limit: int = 1000) -> list[str]:
    """Plain-text held-out documents from tokenized (FIM/packed/repository) eval rows (module doc)."""
    sp = special_tokens(tokenizer, need_fim=False)
    drop = {sp.eos, tokenizer.pad_token_id}
    docs: list[str] = []
    for row in dataset:
        ids, pos = list(row["input_ids"]), row.get("position_ids")
        cuts = [i for i, p in enumerate(pos) if p == 0] if pos is not None else [0]
        for start, end in zip(cuts, [*cuts[1:], len(ids)], strict=True):
            segment = ids[start:end]
            while segment and segment[-1] in drop:
                segment.pop()
            if sp.file_sep is not None and sp.file_sep in segment:  # a repository row: <repo_name>NAME, then files
                seps = [i for i, token in enumerate(segment) if token == sp.file_sep] + [len(segment)]
                files = [segment[a + 1:b] for a, b in zip(seps, seps[1:], strict=False)]
                texts = [_unfim(f, tokenizer, sp).partition("\n")[2] for f in files if f]  # PATH\nCODE -> CODE
            else:
                texts = [_unfim(segment, tokenizer, sp)]
            for text in texts:
                if len(text.strip()) >= 20 and text.count("\n") >= 2:
                    docs.append(text)
                if len(docs) >= limit:
                    return docs
    return docs


def line_cuts(text: str, min_chars: int) -> list[tuple[int, int]]:
    """The ``(a, b)`` cut points of every line hole of ``text`` (module doc), in line order."""
    cuts, start = [], 0
    for line in text.splitlines(keepends=True):
        a, b = len(text[:start].rstrip()), start + len(line.rstrip("\r\n"))
        if a > 0 and len(line.strip()) >= min_chars:
            cuts.append((a, b))
        start += len(line)
    return cuts


def first_line(text: str) -> str:
    """``text`` from its first non-blank character to the next newline (the predicted line)."""
    return text.lstrip().split("\n", 1)[0].rstrip()
