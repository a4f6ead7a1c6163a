"""Changes that make a recipe fit a device, found by re-planning modified recipes.

Moves, from the one that changes the training least to the one that changes it most:

1. gradient checkpointing (same result, about a third slower);
2. a smaller micro-batch with proportionally more accumulation (same effective batch);
3. QLoRA: a 4-bit NF4 base instead of a 16-bit one;
4. a shorter ``data.max_length`` (longer examples are cut or split).

Each move alone is tried (for 2 and 4 the mildest value that fits), then all of them in that order until the
recipe fits. Every figure comes from :func:`~sc2tune.planning.plan.plan_device` on the modified recipe.
"""

from __future__ import annotations

from sc2tune.errors import RecipeError
from sc2tune.planning.plan import Device, Suggestion, modified, plan_device
from sc2tune.recipe import Recipe

MIN_LENGTH = 256


def _try(recipe: Recipe, overrides: list[str], description: str, gpu: int, device: Device) -> Suggestion | None:
    try:
        plan = plan_device(modified(recipe, tuple(overrides)), gpu, device=device)
    except RecipeError:
        return None
    return Suggestion(tuple(overrides), description, plan.total_bytes, bool(plan.fits))


def _batch_moves(recipe: Recipe) -> list[tuple[list[str], str]]:
    moves, batch = [], recipe.train.batch_size
    examples = batch * recipe.train.grad_accum  # per optimizer step, kept (rounded up)
    while batch > 1:
        batch = batch // 2
        accum = -(-examples // batch)
        moves.append(([f"train.batch_size={batch}", f"train.grad_accum={accum}"],
                      f"micro-batch {batch} x {accum} accumulation steps"))
    return moves


def _length_moves(recipe: Recipe) -> list[tuple[list[str], str]]:
    moves, length = [], recipe.data.max_length
    while length // 2 >= MIN_LENGTH:
        length //= 2
        moves.append(([f"data.max_length={length}"], f"max_length {length}"))
    return moves


def _qlora_move(recipe: Recipe) -> list[tuple[list[str], str]]:
    quant = recipe.adapter.quantization
    if recipe.adapter.method == "lora" and (quant is None or quant.bits == 8):
        return [(["adapter.method=qlora", "adapter.quantization=null"], "QLoRA (4-bit NF4 base)")]
    return []


def _ckpt_move(recipe: Recipe) -> list[tuple[list[str], str]]:
    if recipe.train.gradient_checkpointing:
        return []
    return [(["train.gradient_checkpointing=true"], "gradient checkpointing")]


def suggestions(recipe: Recipe, gpu: int, *, device: Device = "cuda") -> tuple[Suggestion, ...]:
    """Single changes that fit (or the best each can do), then a combination that fits, if any."""
    found: list[Suggestion] = []
    for group in (_ckpt_move(recipe), _batch_moves(recipe), _qlora_move(recipe), _length_moves(recipe)):
        best = None
        for overrides, description in group:
            best = _try(recipe, overrides, description, gpu, device) or best
            if best is not None and best.fits:
                break
        if best is not None:
            found.append(best)
    if any(s.fits for s in found):
        return tuple(s for s in found if s.fits)
    return _combined(recipe, gpu, device)


def _combined(recipe: Recipe, gpu: int, device: Device) -> tuple[Suggestion, ...]:
    """Stack the moves (each group's mildest value that fits, else its strongest), then relax each group
    back towards no change while the whole still fits."""
    groups = [g for g in (_ckpt_move(recipe), _batch_moves(recipe), _qlora_move(recipe), _length_moves(recipe)) if g]
    choice: list[int | None] = [None] * len(groups)  # index into each group, None = unchanged

    def trial() -> Suggestion | None:
        overrides = [item for g, c in zip(groups, choice, strict=True) if c is not None for item in g[c][0]]
        text = " + ".join(g[c][1] for g, c in zip(groups, choice, strict=True) if c is not None)
        return _try(recipe, overrides, text, gpu, device) if overrides else None

    best = None
    for gi, group in enumerate(groups):
        for ci in range(len(group)):
            choice[gi] = ci
            result = trial()
            if result is not None:
                best = result
                if result.fits:
                    break
        if best is not None and best.fits:
            break
    if best is None or not best.fits:
        return (best,) if best is not None else ()
    for gi in range(len(groups)):
        current = choice[gi]
        if current is None:
            continue
        for ci in [None, *range(current)]:
            choice[gi] = ci
            result = trial()
            if result is not None and result.fits:
                best = result
                break
        else:
            choice[gi] = current
    return (best,)
