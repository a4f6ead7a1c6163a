"""Commands that use a trained model: ``generate`` and ``classify``, with the options of
:func:`sc2tune.inference.generate_text` and :func:`sc2tune.inference.classify_texts`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from sc2tune.commands.derive import Command

if TYPE_CHECKING:
    from sc2tune.generation import Prediction


def show_generate(texts: list[str]) -> None:
    """Complete, infill (FIM) or follow an instruction: sc2tune generate PATH --prompt ... | --prefix ...
    --suffix ... | --file F | --instruction ..."""
    for number, text in enumerate(texts, 1):
        if len(texts) > 1:
            print(f"--- response {number} of {len(texts)} ---")
        print(text)


def show_classify(predictions: list[Prediction], as_json: Annotated[bool, typer.Option(
        "--json", help="print one JSON object per text")] = False) -> None:
    """Label texts with a classifier: sc2tune classify PATH --text ... | --file F."""
    for p in predictions:
        if as_json:
            print(json.dumps({"text": p.text, "label": p.label, "probabilities": p.probabilities}))
        else:
            probs = "  ".join(f"{name}={value:.3f}" for name, value in p.probabilities.items())
            print(f"{p.label}\t{probs}\t{p.text[:60]!r}")


generate = Command(show_generate, api="sc2tune.inference:generate_text")
classify = Command(show_classify, api="sc2tune.inference:classify_texts")
