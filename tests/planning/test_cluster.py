"""A recipe on ``N x GPU`` (``sc2tune.planning.cluster``): the tiny model's FLOPs, hours and FSDP units by hand,
the same figures from the analytic layouts as from the meta model, and the new recipes plan on a cluster
through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sc2tune.cli import main
from sc2tune.planning import plan_recipe, weight_footprint
from sc2tune.planning.cluster import plan_cluster
from sc2tune.planning.throughput import parse_gpus
from sc2tune.recipe import load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[2]


def test_cluster_and_footprint_equal_the_meta_model_path(meta_path) -> None:
    recipe = load_recipe(REPO / "recipes/starcoder2-15b/alpaca-lora.yaml", [])
    count, gpu = parse_gpus("8xA100-80GB")

    def cluster():
        plan = plan_recipe(recipe, "80GB", suggest=False)
        return plan_cluster(recipe, plan, gpus=count, gpu=gpu, tokens_per_epoch=10**6)

    assert cluster() == meta_path(cluster)
    for name in ("bigcode/starcoder2-7b", "bigcode/starcoderbase-7b"):
        assert weight_footprint(name) == meta_path(weight_footprint, name)


NEW_RECIPES = ["starcoder-15b/gpteacher-full-fsdp.yaml", "starcoderbase-7b/fim-qlora.yaml",
               "starcoderbase-7b/alpaca-lora.yaml"]


@pytest.mark.parametrize("name", NEW_RECIPES)
def test_new_recipes_plan_on_a_cluster(name: str, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the recipes' data paths are relative to the repository root
    assert main(["plan", f"recipes/{name}", "--gpus", "8xA100-80GB", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cluster = data["cluster"]
    assert cluster["gpus"] == 8 and cluster["fsdp"]["total"] > 0 and cluster["fsdp"]["fits"]
    assert cluster["time"]["tokens_per_epoch"] > 0 and cluster["time"]["hours_total"] > 0
    assert main(["plan", f"recipes/{name}", "--gpus", "2xH100-80GB", "--compare-hours", "5"]) == 0
    out = capsys.readouterr().out
    assert "FSDP full sharding over 2 x H100-80GB" in out and "a reported 5 h" in out


def test_cluster_plan_of_the_tiny_model_by_hand() -> None:
    """LoRA r 8 on the built-in StarCoder2 (hidden 128, MLP 512, 2 layers, 4 query and 2 key/value heads of 32,
    vocabulary 49152, tied), 256-token rows, checkpointing, 2 epochs of 10^6 tokens on 4 x L4 (121 dense bf16
    TFLOPS, 24 GiB) at utilisation 0.5: FLOPs, hours and the FSDP units counted from those shapes."""
    h, f, layers, q, kv, vocab, r, length = 128, 512, 2, 128, 64, 49152, 8, 256
    recipe = recipe_from_dict({
        "task": "instruct", "data": {"train": "x.jsonl", "max_length": length},
        "adapter": {"method": "lora", "r": r, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc",
                                                                  "c_proj"]},
        "train": {"gradient_checkpointing": True, "epochs": 2}})
    plan = plan_recipe(recipe, suggest=False)
    count, gpu = parse_gpus("4xL4")
    cluster = plan_cluster(recipe, plan, gpus=count, gpu=gpu, tokens_per_epoch=10**6, mfu=0.5)

    linear = h * q + h * kv + h * kv + q * h + h * f + f * h  # q, k, v, o, c_fc, c_proj weights of one layer
    n = layers * linear + vocab * h  # + the output layer (tied: the embedding matrix, used once in a matmul)
    a = 2 * layers * length * q
    n_lora = layers * r * ((h + q) + (h + kv) + (h + kv) + (q + h) + (h + f) + (f + h))
    per_token = 4 * n + 3 * a + 6 * n_lora + (2 * n + a + 2 * n_lora)  # LoRA + the recomputed forward
    assert cluster.time is not None and cluster.time.flops.train == per_token
    hours = 10**6 * per_token / (4 * 121e12 * 0.5) / 3600
    assert cluster.time.hours_per_epoch == pytest.approx(hours)
    assert cluster.time.hours_total == pytest.approx(2 * hours)

    layer = linear + (q + kv + kv + h + f + h) + 2 * 2 * h  # + biases and two LayerNorms (weight, bias)
    root = vocab * h + 2 * h  # embedding (also the output layer) and the final LayerNorm
    assert cluster.fsdp.gathered == (root + 2 * layer) * 2  # dtype auto on CUDA: bfloat16
    assert cluster.fsdp.buffers == 2 * 4 * (32 // 2)  # rotary inv_freq and its original copy: fp32, head_dim / 2
    assert (cluster.gpus, cluster.fsdp.gpus, cluster.fsdp.gpu_memory) == (4, 4, 24 * 2**30)
    assert cluster.replicated_fits and cluster.fsdp.fits
    assert plan_cluster(recipe, plan, gpus=count, gpu=gpu, tokens_per_epoch=None).time is None
