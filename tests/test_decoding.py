"""Batched generation (sc2tune.decoding) against plain one-prompt-at-a-time ``model.generate``."""

from __future__ import annotations

import pytest
import torch

from sc2tune.decoding import generate_batch, left_pad
from sc2tune.errors import UserError
from sc2tune.tiny import build_tiny_model

PAD = 4  # <fim_pad>
LENGTHS = (5, 17, 9, 30, 1)  # different lengths, not sorted: batches are formed by length
NEW = 6


@pytest.fixture(scope="module")
def model():
    return build_tiny_model().eval()


@pytest.fixture(scope="module")
def lora_model():
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "c_fc"], init_lora_weights=False)
    torch.manual_seed(7)
    return get_peft_model(build_tiny_model(), config).eval()


def prompts(vocab: int = 49152) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(40, vocab, (n,), generator=g).tolist() for n in LENGTHS]


def cut(new: list[int], stops: list[int]) -> list[int]:
    for i, token in enumerate(new):
        if token in stops:
            return new[:i]
    return new


def one_at_a_time(model, prompt: list[int], stops: list[int]) -> list[int]:
    """Plain transformers: one unpadded prompt, greedy, new ids cut before the first stop id."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                             do_sample=False, eos_token_id=stops, pad_token_id=PAD)
    return cut(out[0, len(prompt):].tolist(), stops)


@pytest.fixture(scope="module")
def greedy(model):
    """The plain greedy reference of the tiny model, stopping at <|endoftext|> only."""
    return [one_at_a_time(model, p, [0]) for p in prompts()]


@pytest.mark.parametrize("which", ["model", "lora_model"])
def test_greedy_batched_equals_one_prompt_at_a_time(which, request):
    m = request.getfixturevalue(which)
    ps = prompts()
    free = request.getfixturevalue("greedy") if which == "model" else [one_at_a_time(m, p, [0]) for p in ps]
    stops = [0, free[1][3]]  # a token prompt 1 produces mid-way: that row stops while the others go on
    want = [cut(f, stops) for f in free]  # greedy: the run with more stop ids is the same run, cut earlier
    assert len(want[1]) < NEW and any(len(w) == NEW for w in want)  # a stop hit mid-batch, other rows ran on
    got = generate_batch(m, ps, pad_id=PAD, stop_ids=stops, max_new_tokens=NEW, batch_size=3)
    assert got == want


def test_without_the_attention_mask_the_reference_differs(model, greedy):
    """The comparison above can fail: left-padded rows attended without the mask give other tokens."""
    ps = prompts()
    ids, _, positions = left_pad(ps, PAD)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions,
                             max_new_tokens=NEW, do_sample=False, eos_token_id=[0], pad_token_id=PAD)
    unmasked = [cut(row[ids.shape[1]:], [0]) for row in out.tolist()]
    assert unmasked != greedy


def test_a_stop_string_stops_its_row_only(model, greedy, tokenizer):
    """A row whose text reaches the stop string ends at the token completing it; the others run on."""
    row = next(i for i, g in enumerate(greedy) if len(g) == NEW and len(set(g[:3])) == 1)  # repeats one token
    stop = tokenizer.decode(greedy[row][:2])
    assert stop not in tokenizer.decode(greedy[row][:1])
    others = [i for i, g in enumerate(greedy) if i != row]
    assert all(stop not in tokenizer.decode(greedy[i]) for i in others)
    got = generate_batch(model, prompts(), pad_id=PAD, stop_ids=[0], max_new_tokens=NEW, batch_size=8,
                         stop_strings=[stop], tokenizer=tokenizer)
    assert got[row] == greedy[row][:2]
    assert [got[i] for i in others] == [greedy[i] for i in others]


def test_left_pad_layout():
    ids, mask, positions = left_pad([[7, 8, 9], [5]], PAD)
    assert ids.tolist() == [[7, 8, 9], [PAD, PAD, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_sampling_is_seeded_and_leaves_the_callers_random_state(model):
    ps = prompts()[:3]
    state = torch.random.get_rng_state()
    first = generate_batch(model, ps, pad_id=PAD, stop_ids=[0], max_new_tokens=NEW, temperature=1.0, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = generate_batch(model, ps, pad_id=PAD, stop_ids=[0], max_new_tokens=NEW, temperature=1.0, seed=3)
    other = generate_batch(model, ps, pad_id=PAD, stop_ids=[0], max_new_tokens=NEW, temperature=1.0, seed=4)
    assert first == again
    assert first != other


def test_a_tiny_nucleus_is_greedy(model, greedy):
    """top_p -> 0 keeps only the most probable token: sampling then gives the greedy tokens."""
    assert generate_batch(model, prompts(), pad_id=PAD, stop_ids=[0], max_new_tokens=NEW, temperature=0.7,
                          top_p=1e-6, seed=1) == greedy


def test_training_mode_is_restored(model):
    model.train()
    try:
        generate_batch(model, [[50, 60]], pad_id=PAD, stop_ids=[0], max_new_tokens=2)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize("prompts_, kwargs, message", [
    ([[5], []], {}, "prompt 1 is empty"),
    ([[5] * 16380], {}, "16,384-token context"),
    ([[5]], {"stop_ids": []}, "stop_ids is empty"),
    ([[5]], {"temperature": -1.0}, "temperature must be >= 0"),
])
def test_bad_input_is_a_clear_error(model, prompts_, kwargs, message):
    args = {"pad_id": PAD, "stop_ids": [0], "max_new_tokens": 8, **kwargs}
    with pytest.raises(UserError, match=message):
        generate_batch(model, prompts_, **args)
