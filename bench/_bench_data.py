"""Model and data for ``bench/train_speed.py``: a small random StarCoder2 and real instruction / code records.

Model: ``Starcoder2ForCausalLM`` with StarCoder2's vocabulary (49152), special ids (bos = eos = 0), tied
embeddings like the 3B/7B, 4 layers, hidden 256, random weights from a fixed seed, and the real StarCoder2
tokenizer bundled in ``sc2tune/assets/tokenizer`` (no pad token, like the original).

Data: functions with docstrings from the Python standard library on this machine (sorted files, at most
a few functions per file for variety). One record per function::

    instruction = the cleaned docstring
    output      = the function's source (dedented)

A record is kept when its Alpaca-formatted example (prompt + response + <|endoftext|>) is between
``min_tokens`` and ``max_tokens`` tokens, and when tokenising prompt and response separately (sc2tune)
gives the same ids as tokenising their concatenation (TRL), so that both trainers see identical tokens
and the first-step losses are comparable.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STDLIB_CANDIDATES = [Path("/root/.pyenv/versions/3.11.7/lib/python3.11"), Path(inspect.getfile(ast)).parent]


@dataclass(frozen=True)
class Record:
    """One instruction record and where it came from."""

    instruction: str
    output: str
    where: str
    tokens: int


def stdlib_dir() -> Path:
    """The standard library folder to read functions from."""
    for candidate in STDLIB_CANDIDATES:
        if (candidate / "os.py").is_file():
            return candidate
    raise SystemExit("no Python standard library folder found to build the benchmark data from")


def build_model(folder: Path, *, layers: int = 4, hidden: int = 256, seed: int = 0) -> Path:
    """Write a small random StarCoder2 (real vocabulary and tokenizer) into ``folder``."""
    import torch
    from transformers import AutoTokenizer, Starcoder2Config, Starcoder2ForCausalLM

    config = Starcoder2Config(
        vocab_size=49152, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, sliding_window=4096,
        hidden_act="gelu_pytorch_tanh", use_bias=True, bos_token_id=0, eos_token_id=0,
        tie_word_embeddings=True, residual_dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0,
    )
    torch.manual_seed(seed)
    model = Starcoder2ForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(ROOT / "sc2tune" / "assets" / "tokenizer")).save_pretrained(folder)
    return folder


def _functions(path: Path) -> list[tuple[str, str]]:
    """(docstring, dedented source) of the functions with a docstring in one file."""
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
    except (UnicodeDecodeError, SyntaxError, ValueError):
        return []
    lines = text.splitlines(keepends=True)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.decorator_list:
            continue
        doc = ast.get_docstring(node, clean=True)
        if not doc or len(doc) < 40:
            continue
        source = textwrap.dedent("".join(lines[node.lineno - 1:node.end_lineno]))
        if "<|" in source or "<|" in doc:
            continue
        out.append((doc, source.rstrip() + "\n"))
    return out


def build_records(tokenizer, template, *, count: int, min_tokens: int = 150, max_tokens: int = 600,
                  per_file: int = 4) -> list[Record]:
    """Real instruction records from the standard library (see module doc), in a deterministic order."""
    eos = tokenizer.eos_token_id
    records: list[Record] = []
    root = stdlib_dir()
    files = sorted(p for p in root.rglob("*.py") if "test" not in p.relative_to(root).as_posix()
                   and "site-packages" not in p.parts)
    for path in files:
        taken = 0
        for doc, source in _functions(path):
            row = {"instruction": doc, "input": "", "output": source}
            prompt, response = template.render_prompt(row), template.render_response(row)
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
            total = len(p_ids) + len(r_ids) + 1
            if not min_tokens <= total <= max_tokens:
                continue
            joint = tokenizer(prompt + response + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            if joint != p_ids + r_ids + [eos]:
                continue  # tokens merge across the prompt/response boundary: not comparable
            records.append(Record(doc, source, f"{path.relative_to(root)}:{source.split('(')[0]}", total))
            taken += 1
            if taken >= per_file:
                break
        if len(records) >= count:
            break
    if len(records) < count:
        raise SystemExit(f"only {len(records)} records found in {root} (wanted {count})")
    return records[:count]


def write_data(folder: Path, records: list[Record], template) -> dict[str, Path]:
    """Write the same records in each trainer's format.

    * ``instruct.jsonl``: {instruction, input, output} (sc2tune, template alpaca);
    * ``prompt_completion.jsonl``: {prompt, completion}, the same Alpaca prompt text (TRL);
    * ``code/NNNNN.py``: one file per function source (sc2tune task fim);
    * ``text.jsonl``: {text} with the same sources (TRL language modelling).
    """
    folder.mkdir(parents=True, exist_ok=True)
    code = folder / "code"
    code.mkdir(exist_ok=True)
    with (folder / "instruct.jsonl").open("w", encoding="utf-8") as a, \
            (folder / "prompt_completion.jsonl").open("w", encoding="utf-8") as b, \
            (folder / "text.jsonl").open("w", encoding="utf-8") as c:
        for i, r in enumerate(records):
            row = {"instruction": r.instruction, "input": "", "output": r.output}
            a.write(json.dumps(row) + "\n")
            b.write(json.dumps({"prompt": template.render_prompt(row),
                                "completion": template.render_response(row)}) + "\n")
            c.write(json.dumps({"text": r.output}) + "\n")
            (code / f"{i:05d}.py").write_text(r.output, encoding="utf-8")
    return {"instruct": folder / "instruct.jsonl", "prompt_completion": folder / "prompt_completion.jsonl",
            "code": code, "text": folder / "text.jsonl"}


#: The LoRA of the sc2tune runs, as recipe overrides (the baseline's LoraConfig matches it).
LORA = ("adapter.method=lora", "adapter.r=16", "adapter.alpha=32", "adapter.dropout=0.05",
        "adapter.target_modules=[q_proj,k_proj,v_proj,o_proj,c_fc,c_proj]")


def sc2tune_recipe(path: Path, *, model: Path, train: Path, task: str, packing: bool, steps: int, batch: int,
                   output_dir: Path) -> Path:
    """Write the sc2tune recipe of a speed workload to ``path`` (JSON, which is YAML): max length 1024, lr 2e-4,
    a log line per step, seed 42, no eval; LoRA comes as :data:`LORA` overrides."""
    path.write_text(json.dumps({
        "model": {"name_or_path": str(model)},
        "task": task,
        "data": {"train": str(train), "eval": None, "max_length": 1024, "packing": packing},
        "train": {"batch_size": batch, "max_steps": steps, "lr": 2e-4, "logging_steps": 1, "seed": 42,
                  "save_total_limit": 1},
        "output_dir": str(output_dir),
    }))
    return path
