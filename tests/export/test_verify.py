"""``--verify``: the figures on the tiny model, against an independent count.

The report's definitions are checked on a hand-made case (two logit rows whose top-2 gap is known) and end to
end: the tiny model's F32 export agrees with transformers on every greedy sequence and next token, and the JSON
of ``sc2tune export --verify --json`` is one object with the issue's keys. For an F16 export the engine
reference (the file's own weights in transformers) equals the checkpoint rounded by hand (``.half().float()``
of every matrix, vectors kept), and the report carries that reference's block.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sc2tune.export.file_weights import GgufWeights, load_file_weights
from sc2tune.export.verify import NEAR_TIE, _gap, verify_gguf

from .conftest import require_llama_cpp


def test_gap_is_the_top_two_logit_difference() -> None:
    row = np.array([0.5, 3.0, -1.0, 2.999], dtype=np.float32)
    assert _gap(row) == pytest.approx(0.001, abs=1e-6) and _gap(row) < NEAR_TIE
    assert _gap(np.array([1.0, 0.0, 0.5])) == pytest.approx(0.5)


def test_f32_export_agrees_with_transformers(tiny_dir: Path, tiny_f32_gguf: Path) -> None:
    require_llama_cpp()
    report = verify_gguf(tiny_dir, tiny_f32_gguf, prompts=2, new_tokens=16)
    assert report.prompts == 2 and report.kinds == {"fim": 1, "l2r": 1}
    assert report.tokenizer_agreement == 1.0
    assert report.greedy_exact_match == 1.0 and report.other_divergences == 0
    assert report.top1_agreement_excluding_near_ties == 1.0
    assert report.top1_positions > 2 * 16 and 0 < report.max_logit_diff < 0.05
    assert report.weight_types == {"F32": 35} and report.engine is None and "F32" in (report.engine_note or "")


@pytest.fixture(scope="module")
def tiny_f16_gguf(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sc2tune.export.api import export_gguf

    return export_gguf(tiny_dir, tmp_path_factory.mktemp("tiny-f16") / "tiny.gguf", dtype="f16")


def test_file_weights_are_the_checkpoint_rounded_by_hand(tiny_dir: Path, tiny_f16_gguf: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    checkpoint = load_file(tiny_dir / "model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    loaded = load_file_weights(model, GgufWeights(tiny_f16_gguf)).state_dict()
    rounded = 0
    for name, tensor in checkpoint.items():  # matrices as F16, vectors (norms, biases) kept in F32
        expected = tensor.half().float() if tensor.ndim == 2 else tensor.float()
        assert torch.equal(loaded[name], expected), name
        rounded += not torch.equal(expected, tensor)
    assert rounded == 13  # every matrix moved: the reference is not the checkpoint itself
    assert torch.equal(loaded["lm_head.weight"], loaded["model.embed_tokens.weight"])  # tied, as in the file


def test_q8_0_file_weights_are_blocks_of_int8_times_an_f16_scale(tiny_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from sc2tune.export.api import export_gguf

    weights = GgufWeights(export_gguf(tiny_dir, tmp_path / "q8.gguf", dtype="q8_0"))
    checkpoint = load_file(tiny_dir / "model.safetensors")
    w = checkpoint["model.layers.0.mlp.c_fc.weight"].numpy()
    got = weights.array("blk.0.ffn_up.weight")
    assert got.shape == w.shape and weights.types()["Q8_0"] == 13
    blocks, values = w.reshape(-1, 32), got.reshape(-1, 32)  # Q8_0: 32 values per block, along a row
    scale = (np.abs(blocks).max(axis=1, keepdims=True) / 127).astype(np.float16).astype(np.float32)
    q = values / scale
    assert np.array_equal(q, np.round(q)) and np.abs(q).max() <= 127  # int8 times the block's f16 scale
    assert np.all(np.abs(values - blocks) <= scale * 0.5 + np.abs(blocks) * 2e-3)  # the nearest step (f16 scale)


def test_f16_report_has_the_engine_block(tiny_dir: Path, tiny_f16_gguf: Path) -> None:
    require_llama_cpp()
    report = verify_gguf(tiny_dir, tiny_f16_gguf, prompts=2, new_tokens=8)
    assert report.weight_types == {"F16": 13, "F32": 22}  # 13 matrices (lm_head tied), 22 norms and biases
    engine = report.engine
    assert engine is not None and engine.prompts == 2 and engine.top1_positions == report.top1_positions
    assert engine.other_divergences == 0 and engine.top1_agreement_excluding_near_ties == 1.0
    assert 0 < engine.mean_logit_diff < report.mean_logit_diff  # the f16 rounding is out of the engine block
    text = report.summary()
    assert "against the trained model" in text and "against the file's own weights in transformers" in text


@pytest.mark.slow
def test_cli_json_is_one_object_with_the_figures(tiny_dir: Path, tiny_f32_gguf: Path, tmp_path: Path, run_cli) -> None:
    require_llama_cpp()
    out = tmp_path / "again.gguf"
    result = run_cli("export", str(tiny_dir), "--out", str(out), "--dtype", "f32", "--verify", "--prompts", "1",
                     "--new-tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"prompts", "greedy_exact_match", "top1_agreement", "near_tie_divergences", "max_logit_diff"} <= set(payload)
    assert payload["prompts"] == 1 and payload["export"]["out"] == str(out)
    assert "engine" in payload and payload["engine"] is None  # an F32 file: the trained weights themselves
    assert out.read_bytes() == tiny_f32_gguf.read_bytes()  # the same model gives the same file
