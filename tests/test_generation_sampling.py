"""The sampling parameters generate shares with serve: ranges (one table, sc2tune.sampling), the penalties
against hand computations and plain transformers calls, n responses, the command line."""

from __future__ import annotations

import pytest
import torch

from sc2tune.cli import main
from sc2tune.errors import UserError
from sc2tune.generation import Sampling, generate, generate_responses, load_for_inference
from sc2tune.penalties import PresenceFrequencyPenalty
from sc2tune.sampling import BadParameter, check_parameters

TINY = "sc2tune/tiny-starcoder2"


# ---- ranges ------------------------------------------------------------------------------------------------

# (parameter, a value just outside its range, a value just inside), from the list
EDGES = [
    ("max_tokens", 0, 1), ("temperature", -0.01, 0), ("temperature", 2.01, 2), ("top_p", 0, 1e-6),
    ("top_p", 1.01, 1), ("top_k", -1, 0), ("top_k", 2.5, 3), ("repetition_penalty", 0, 0.01),
    ("presence_penalty", -2.01, -2), ("presence_penalty", 2.01, 2), ("frequency_penalty", 2.5, 2),
    ("n", 0, 1), ("n", 3, 2), ("seed", -1, 0), ("seed", 2**32, 2**32 - 1), ("seed", 1.5, 7),
    ("temperature", True, 1), ("temperature", float("nan"), 0.5),
]


@pytest.mark.parametrize(("name", "bad", "good"), EDGES)
def test_each_range_refuses_just_outside_and_accepts_just_inside(name, bad, good):
    check_parameters({name: good})
    with pytest.raises(BadParameter, match=f"^{name} must be") as err:
        check_parameters({name: bad})
    assert err.value.param == name


def test_max_tokens_is_bounded_by_the_context():
    check_parameters({"max_tokens": 2048}, context=2048)
    with pytest.raises(BadParameter, match="at most 2,048") as err:
        check_parameters({"max_tokens": 2049}, context=2048)
    assert err.value.param == "max_tokens"


def test_stop_holds_at_most_16_non_empty_strings():
    check_parameters({"stop": [str(i) for i in range(16)]})
    check_parameters({"stop": "\n"})
    for bad, text in (([str(i) for i in range(17)], "at most 16"), ([""], "empty"), ([1], "list of strings")):
        with pytest.raises(BadParameter, match=text) as err:
            check_parameters({"stop": bad})
        assert err.value.param == "stop"


def test_sampling_uses_the_same_ranges_and_generates_names():
    assert Sampling() == Sampling(max_new_tokens=128, temperature=0.2, top_p=0.95, top_k=0, repetition_penalty=1.0,
                                  presence_penalty=0.0, frequency_penalty=0.0, n=1)
    with pytest.raises(UserError, match="^temperature must be a number in \\[0, 2\\]"):
        Sampling(temperature=2.5)
    with pytest.raises(UserError, match="^max_new_tokens must be an integer >= 1"):
        Sampling(max_new_tokens=0)
    with pytest.raises(UserError, match="at most 16"):
        Sampling(stop=tuple("abcdefghijklmnopq"))
    assert Sampling(stop="\n\n").stop == ("\n\n",)  # one string is one stop, not its characters


# ---- presence and frequency penalties ----------------------------------------------------------------------

def test_presence_frequency_penalty_matches_a_hand_computation():
    # prompt [5, 1], generated so far [2, 2, 3]: counts c[2] = 2, c[3] = 1, the prompt's tokens do not count
    ids = torch.tensor([[5, 1, 2, 2, 3]])
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    out = PresenceFrequencyPenalty(2, presence=0.5, frequency=0.25)(ids, scores.clone())
    # token 2: 3 - 0.5 - 2 * 0.25 = 2.0; token 3: 4 - 0.5 - 0.25 = 3.25; the others unchanged
    assert out.tolist() == [[1.0, 2.0, 2.0, 3.25, 5.0, 6.0]]
    negative = PresenceFrequencyPenalty(2, presence=-1.0, frequency=-2.0)(ids, scores.clone())
    assert negative.tolist() == [[1.0, 2.0, 3.0 + 1 + 4, 4.0 + 1 + 2, 5.0, 6.0]]
    assert PresenceFrequencyPenalty(5, 1.0, 1.0)(ids, scores.clone()).tolist() == scores.tolist()  # none yet


@pytest.fixture(scope="module")
def tiny():
    return load_for_inference(TINY)


def _greedy_by_hand(model, ids: list[int], steps: int, presence: float, frequency: float) -> list[int]:
    """Greedy decoding written out: full forward each step, OpenAI's penalties on the generated counts."""
    out: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(torch.tensor([ids + out])).logits[0, -1].float()
        for token in set(out):
            logits[token] -= presence + frequency * out.count(token)
        out.append(int(logits.argmax()))
    return out


def test_greedy_with_penalties_equals_a_hand_written_loop(tiny):
    prompt = "def add(a, b):\n    return"
    ids = tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    sampling = Sampling(max_new_tokens=12, temperature=0, presence_penalty=1.5, frequency_penalty=0.7)
    expected = _greedy_by_hand(tiny.model, ids, 12, 1.5, 0.7)
    assert expected != _greedy_by_hand(tiny.model, ids, 12, 0.0, 0.0)  # the penalties change the output here
    assert generate(tiny, prompt, sampling) == tiny.tokenizer.decode(expected)


def test_repetition_penalty_and_top_k_map_onto_transformers(tiny):
    prompt = "import os\nimport"
    ids = tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.inference_mode():
        plain = tiny.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=10, do_sample=False,
                                    repetition_penalty=1.8, eos_token_id=0, pad_token_id=0)
    text = generate(tiny, prompt, Sampling(max_new_tokens=10, temperature=0, repetition_penalty=1.8))
    assert text == tiny.tokenizer.decode(plain[0, len(ids):])
    # top_k 1 samples the argmax: any temperature gives the greedy text
    assert generate(tiny, prompt, Sampling(max_new_tokens=10, temperature=1.5, top_k=1, seed=3)) == \
        generate(tiny, prompt, Sampling(max_new_tokens=10, temperature=0))


def test_n_responses(tiny):
    greedy = generate_responses(tiny, "x = ", Sampling(max_new_tokens=6, temperature=0, n=2))
    assert len(greedy) == 2 and greedy[0] == greedy[1]
    sampled = generate_responses(tiny, "x = ", Sampling(max_new_tokens=12, temperature=2, top_p=1, n=2, seed=0))
    assert len(sampled) == 2 and sampled[0] != sampled[1]  # random weights at temperature 2: two draws differ
    with pytest.raises(UserError, match="generate_responses"):
        generate(tiny, "x = ", Sampling(n=2))


def test_the_command_line_speaks_the_same_parameters(run_cli):
    done = run_cli("generate", TINY, "--prompt", "x = ", "--max-new-tokens", "4", "--temperature", "0",
                   "--n", "2", "--top-k", "5", "--repetition-penalty", "1.2", "--presence-penalty", "0.5",
                   "--frequency-penalty", "0.5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("--- response ") == 2
    bad = run_cli("generate", TINY, "--prompt", "x = ", "--presence-penalty", "3")
    assert bad.returncode != 0 and "presence_penalty must be a number in [-2, 2]" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert main(["generate", TINY, "--prompt", "x", *sum((["--stop", str(i)] for i in range(17)), [])]) != 0

