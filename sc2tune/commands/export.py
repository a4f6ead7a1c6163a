"""``sc2tune export``: a trained model as a GGUF file; its options are the parameters of
:func:`sc2tune.export.api.export`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from sc2tune.commands.derive import Command
from sc2tune.commands.options import JsonOutput

if TYPE_CHECKING:
    from sc2tune.export.api import ExportResult


def show_export(result: ExportResult, as_json: JsonOutput = False) -> None:
    """Export a model for llama.cpp: sc2tune export PATH --out FILE [--format gguf|gguf-lora] [--dtype f16]
    [--verify]."""
    from sc2tune.export.api import describe_export

    if not as_json:
        print(describe_export(result))
        return
    payload = {"out": str(result.out), "format": result.format, "dtype": result.dtype, "source": result.source,
               "tensors": result.tensors, "bytes": result.bytes, "seconds": round(result.seconds, 3),
               "chat_template": result.chat_template, "notes": result.notes}
    if result.verification is not None:
        payload = {**asdict(result.verification), "export": payload}
    print(json.dumps(payload))


export = Command(show_export, api="sc2tune.export.api:export")
