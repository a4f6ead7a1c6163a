"""Special tokens are found by name in whatever tokenizer the model folder has, never by StarCoder2's ids.

StarCoder/StarCoderBase's tokenizer is not StarCoder2's: it shares the names of the end and FIM tokens but
calls its repository tokens ``<reponame>`` and ``<filename>`` (StarCoder2: ``<repo_name>``, ``<file_sep>``).
It is not available offline, so this test builds a lossless byte-level tokenizer with StarCoder's special
tokens in StarCoder's order, moved to ids 300.. so that any hard-coded StarCoder2 id (0-4) would show.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from sc2tune.errors import UserError
from sc2tune.modeling import ModelSource, check_tokenizer, load_tokenizer
from sc2tune.recipe import ModelSpec, recipe_from_dict
from sc2tune.tokens import special_tokens

#: StarCoder(Base)'s special tokens in its own order (ids 0..18 there; 300..318 here).
STARCODER_SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<filename>",
                      "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>",
                      "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<empty_output>", "<commit_before>",
                      "<commit_msg>", "<commit_after>", "<reponame>"]
OFFSET = 300


@pytest.fixture(scope="module")
def starcoder_style_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({tok: OFFSET + i for i, tok in enumerate(STARCODER_SPECIALS)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                        additional_special_tokens=STARCODER_SPECIALS[1:])
    folder = tmp_path_factory.mktemp("starcoder-style-tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


def test_ids_come_from_the_names(starcoder_style_dir: Path) -> None:
    tokenizer = load_tokenizer(ModelSource(str(starcoder_style_dir)))
    assert tokenizer.pad_token == "<fim_pad>" and tokenizer.pad_token_id == OFFSET + 4
    sp = special_tokens(tokenizer)
    assert (sp.eos, sp.fim_prefix, sp.fim_middle, sp.fim_suffix, sp.fim_pad) == tuple(OFFSET + i for i in range(5))
    assert sp.repo_name is None and sp.file_sep is None  # StarCoder's are <reponame>/<filename>
    plain = AutoTokenizer.from_pretrained(starcoder_style_dir)  # the reference: transformers' own lookup
    assert sp.fim_middle == plain.convert_tokens_to_ids("<fim_middle>")
    assert "pad <fim_pad>" in check_tokenizer(ModelSpec(name_or_path=str(starcoder_style_dir)), "fim")


def test_fim_rows_use_this_tokenizers_ids(starcoder_style_dir: Path, tmp_path: Path) -> None:
    from sc2tune.data import build_datasets

    code = tmp_path / "code" / "repo"
    code.mkdir(parents=True)
    (code / "a.py").write_text("def add(a, b):\n    return a + b\n")
    recipe = {"model": {"name_or_path": str(starcoder_style_dir)}, "task": "fim",
              "data": {"train": str(tmp_path / "code"), "eval": None, "max_length": 256,
                       "fim": {"rate": 1.0, "spm_rate": 0.0, "repo_context": False}},
              "output_dir": str(tmp_path / "run")}
    tokenizer = load_tokenizer(ModelSource(str(starcoder_style_dir)))
    ids = build_datasets(recipe_from_dict(recipe), tokenizer, show_progress=False).train[0]["input_ids"]
    # PSM: <fim_prefix> pre <fim_suffix> suf <fim_middle> mid <|endoftext|>, at this tokenizer's ids
    assert [t for t in ids if t >= OFFSET] == [OFFSET + 1, OFFSET + 3, OFFSET + 2, OFFSET]
    assert ids[0] == OFFSET + 1 and ids[-1] == OFFSET
    pieces = tokenizer.decode(ids, skip_special_tokens=False).split("<fim_suffix>")
    prefix, rest = pieces[0].removeprefix("<fim_prefix>"), pieces[1]
    suffix, middle = rest.removesuffix("<|endoftext|>").split("<fim_middle>")
    assert prefix + middle + suffix == "def add(a, b):\n    return a + b\n"
    # StarCoder2's repository format needs tokens this tokenizer has not got: a clear error, not wrong ids
    recipe["data"]["fim"]["repo_context"] = True
    with pytest.raises(UserError, match="repo_context"):
        build_datasets(recipe_from_dict(recipe), tokenizer, show_progress=False)
