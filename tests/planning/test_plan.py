"""One device's memory for a recipe (``sc2tune.planning.plan``): the loss, checkpointing and batch terms, the
CPU plan, and the ``--gpu-memory`` sizes."""

from __future__ import annotations

import pytest

from sc2tune.errors import UserError
from sc2tune.planning import parse_size, plan_recipe
from sc2tune.recipe import recipe_from_dict

from .plan_helpers import _recipe


def test_plain_loss_is_planned_with_full_logits() -> None:
    chunked = plan_recipe(recipe_from_dict(_recipe()))
    plain = plan_recipe(recipe_from_dict(_recipe(loss_impl="plain")))
    ours, theirs = (next(c for c in p.components if c.name == "logits and loss") for p in (chunked, plain))
    assert ours.bytes == chunked.loss_chunked < theirs.bytes == plain.loss_full_logits
    assert "train.loss_impl: plain" in theirs.note


def test_checkpointing_and_batch_shrink_activations() -> None:
    base = plan_recipe(recipe_from_dict(_recipe()))
    ckpt = plan_recipe(recipe_from_dict(_recipe(gradient_checkpointing=True)))
    small = plan_recipe(recipe_from_dict(_recipe(batch_size=1)))
    assert ckpt.total_bytes < base.total_bytes and small.total_bytes < base.total_bytes
    assert base.activations_checkpointing < base.activations_no_checkpointing / 10
    assert small.activations_no_checkpointing * 4 == pytest.approx(base.activations_no_checkpointing, rel=0.01)
    assert base.loss_chunked < base.loss_full_logits / 5


@pytest.mark.parametrize(("text", "expected"), [("24GB", 24 * 10**9), ("80GiB", 80 * 2**30),
                                                ("24576MiB", 24 * 2**30), ("1.5TB", int(1.5 * 10**12))])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_gpu_memory_help_says_how_its_sizes_are_read() -> None:
    from typing import get_type_hints

    from sc2tune.planning import plan

    text = get_type_hints(plan, include_extras=True)["gpu_memory"].__metadata__[0].text
    assert "24GiB = 24 x 2^30 bytes" in text and "24GB = 24 x 10^9 bytes" in text  # it said "binary GiB" once
    assert (parse_size("24GiB"), parse_size("24GB")) == (24 * 2**30, 24 * 10**9)


def test_parse_size_rejects_garbage() -> None:
    for text in ("lots", "40"):  # a bare number is refused: GB or GiB?
        with pytest.raises(UserError, match="not a size"):
            parse_size(text)


def test_cpu_plan_is_fp32_without_cuda_overhead() -> None:
    from sc2tune.tiny import build_tiny_model

    recipe = recipe_from_dict({"task": "instruct", "data": {"train": "x.jsonl", "max_length": 256}})
    cpu, gpu = plan_recipe(recipe, device="cpu"), plan_recipe(recipe)
    weights = {c.name: c.bytes for c in cpu.components}["weights"]
    assert weights == build_tiny_model().get_memory_footprint()  # auto = float32 on CPU, like modeling
    assert cpu.load_mode == "fp32" and gpu.load_mode == "bf16"
    assert "framework overhead" not in {c.name for c in cpu.components}


def test_bf16_full_fine_tuning_is_planned_as_the_run_holds_it() -> None:
    """fp32 master weights + fp32 gradients + two fp32 AdamW moments (16 bytes per parameter), measured on the
    model the run loads and one real AdamW step on it (bf16 autocast, as the run computes)."""
    import torch

    from sc2tune.modeling import load_model
    from sc2tune.training.precision import training_source

    recipe = recipe_from_dict({"task": "instruct", "model": {"dtype": "bfloat16"}, "adapter": {"method": "full"},
                               "data": {"train": "x.jsonl", "max_length": 16}})
    parts = {c.name: c.bytes for c in plan_recipe(recipe).components}
    model = load_model(training_source(recipe), pad_token_id=4)
    params = list(model.parameters())  # tied weights once
    assert parts["weights"] == model.get_memory_footprint()
    assert all(p.dtype == torch.float32 for p in params)
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss
    loss.backward()
    optimizer.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params)
    moments = sum(t.numel() * t.element_size() for state in optimizer.state.values()
                  for key, t in state.items() if key in ("exp_avg", "exp_avg_sq"))
    n = sum(p.numel() for p in params)
    assert parts["gradients"] == grads == 4 * n
    assert parts["optimizer states"] == moments == 8 * n
    assert "fp32 master weights" not in parts  # the weights are the master: not counted twice
