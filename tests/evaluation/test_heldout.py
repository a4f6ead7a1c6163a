"""Held-out loss, classification predictions and the FIM probe pieces, against plain transformers/PEFT."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from sc2tune.data.holes import recover_documents
from sc2tune.evaluation.heldout import classify_predictions, heldout_loss
from sc2tune.evaluation.infill import InfillCase, fim_prompt_ids, infill_scores, make_cases
from sc2tune.modeling import ModelSource, load_model
from sc2tune.recipe import ModelSpec

TEXTS = ["def add(a, b):\n    return a + b\n", "x = 1\n", "class A:\n    pass\n\nprint(A())\n"]


def _pad_collator(pad: int):
    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            mask[i, :n] = 1
            labels[i, :n] = torch.tensor(r["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


@pytest.fixture(scope="module")
def lora_model(tokenizer):
    torch.manual_seed(0)
    model = load_model(ModelSource(dtype="float32"), pad_token_id=tokenizer.pad_token_id)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "c_fc"], init_lora_weights=False)
    return get_peft_model(model, config).eval()


def test_heldout_loss_is_token_weighted_mean_of_hf_losses(tokenizer, lora_model) -> None:
    rows = []
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        labels = list(ids)
        labels[0] = -100  # an untrained first token changes nothing (it is never a target)
        if len(ids) > 4:
            labels[1] = -100  # one untrained target
        rows.append({"input_ids": ids, "labels": labels})
    # reference: transformers' own mean loss per unpadded row, weighted by its target count
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            out = lora_model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]]))
            n = sum(1 for y in r["labels"][1:] if y != -100)
            total += float(out.loss) * n
            count += n
    got = heldout_loss(lora_model, rows, _pad_collator(tokenizer.pad_token_id), batch_size=2)
    assert got["tokens"] == count
    assert got["loss"] == pytest.approx(total / count, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    # the adapter matters: the same rows under the disabled adapter give a different loss
    with lora_model.disable_adapter():
        base = heldout_loss(lora_model, rows, _pad_collator(tokenizer.pad_token_id), batch_size=3)
    assert abs(base["loss"] - got["loss"]) > 1e-4


def test_classification_predictions_match_unpadded_rows(tokenizer) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(head="sequence-classification", dtype="float32", num_labels=3)
    model = load_model(ModelSource.of(spec), pad_token_id=tokenizer.pad_token_id).eval()
    rows = [{"input_ids": tokenizer(t)["input_ids"] + [tokenizer.eos_token_id], "labels": i % 3}
            for i, t in enumerate(TEXTS * 2)]

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(batch):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["labels"] for r in batch])}

    y_true, y_pred, loss = classify_predictions(model, rows, collate, batch_size=4)
    with torch.no_grad():
        logits = [model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows]
    assert y_true == [r["labels"] for r in rows]
    assert y_pred == [int(x.argmax()) for x in logits]
    expected = sum(float(torch.nn.functional.cross_entropy(x[None], torch.tensor([r["labels"]])))
                   for x, r in zip(logits, rows, strict=True)) / len(rows)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_documents_are_recovered_from_psm_spm_plain_and_packed_rows(tokenizer) -> None:
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    fp, fm, fs = (tokenizer.convert_tokens_to_ids(t) for t in ("<fim_prefix>", "<fim_middle>", "<fim_suffix>"))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    doc1, doc2, doc3 = (
        "import os\n\ndef f(x):\n    return x * 2\n",
        "def g(y):\n    y += 1\n    return y\n",
        "for i in range(3):\n    print(i)\nprint('done')\n",
    )
    psm = [fp, *enc(doc1[:12]), fs, *enc(doc1[25:]), fm, *enc(doc1[12:25]), eos]
    spm = [fp, fs, *enc(doc2[20:]), fm, *enc(doc2[:20]), eos]
    plain = [*enc(doc3), eos]
    packed = psm + plain + [pad, pad]
    position_ids = [*range(len(psm)), *range(len(plain)), 0, 1]
    rows = [{"input_ids": spm}, {"input_ids": packed, "position_ids": position_ids}]
    assert recover_documents(rows, tokenizer) == [doc2, doc1, doc3]


def test_cases_and_prompt_layout(tokenizer) -> None:
    docs = ["line one\nline two\n\nline four\nline five\n", "a = 1\nb = 2\nc = a + b\nprint(c)\n"]
    for kind in ("span", "lines"):
        cases = make_cases(docs, kind, 5, seed=7)
        assert cases == make_cases(docs, kind, 5, seed=7) and len(cases) == 2
        for case in cases:
            assert case.prefix + case.middle + case.suffix in docs and case.middle
            if kind == "lines":
                assert case.middle.endswith("\n") and (case.prefix == "" or case.prefix.endswith("\n"))
    case = InfillCase("span", "def f(x):\n    return ", "x + 1", "\n\nprint(f(2))\n")
    ids = fim_prompt_ids(case, tokenizer, budget=1000)
    assert tokenizer.decode(ids) == f"<fim_prefix>{case.prefix}<fim_suffix>{case.suffix}<fim_middle>"
    short = fim_prompt_ids(case, tokenizer, budget=6)
    text = tokenizer.decode(short)
    # prefix kept from the right end, suffix from the left end, 6 content tokens in all
    assert len(short) == 6 + 3 and text.startswith("<fim_prefix>") and text.endswith("<fim_middle>")
    assert case.prefix.endswith(text.split("<fim_suffix>")[0].removeprefix("<fim_prefix>"))
    assert case.suffix.startswith(text.split("<fim_suffix>")[1].removesuffix("<fim_middle>"))


def test_infill_scores_shape_with_tiny_model(tokenizer, lora_model) -> None:
    cases = [InfillCase("span", "def f(x):\n    return ", "x + 1", "\n"),
             InfillCase("lines", "a = 1\n", "b = 2\n", "print(a + b)\n")]
    scores = infill_scores(lora_model, tokenizer, cases, max_length=64, max_new_tokens=4)
    assert set(scores) == {"lines", "span"}
    for kind in scores.values():
        assert kind["count"] == 1 and 0.0 <= kind["edit_similarity"] <= 1.0
        assert kind["exact_match"] in (0.0, 1.0)
