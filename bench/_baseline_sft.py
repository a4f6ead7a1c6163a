"""The baseline a user would write: TRL ``SFTTrainer`` + a PEFT ``LoraConfig``, run as one whole process.

Run by ``bench/train_speed.py`` (one subprocess per configuration); not meant to be run by hand, though it
works on its own::

    python bench/_baseline_sft.py --model DIR --data FILE.jsonl --kind instruct --packing 0 \
        --max-steps 28 --result out.json --output-dir /tmp/x

``--kind instruct``: records ``{"prompt", "completion"}`` (the Alpaca prompt and the response): TRL's
default for prompt/completion data is the completion-only loss. ``--kind text``: records ``{"text"}``
(language modelling, every token trained). TRL appends ``<|endoftext|>`` itself in both cases.

The only additions to a plain SFTTrainer script are measurements, identical in spirit to sc2tune's:

* tokens: non-padding input tokens of every micro-batch, counted in ``training_step`` (attention mask
  sum; a padding-free / packed batch has no padding, so all its tokens count);
* time: wall time (and process CPU time) between ``on_step_begin`` and ``on_step_end`` of each optimizer
  step (forward, backward, optimizer update; the batch is fetched before ``on_step_begin``, like in
  sc2tune's ThroughputCallback);
* loss: the logged loss of every step (``logging_steps=1``).

The result JSON holds one entry per step: ``{"step", "seconds", "cpu_seconds", "tokens", "loss"}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer

STARCODER2_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]


class CountingSFTTrainer(SFTTrainer):
    """SFTTrainer that counts the non-padding input tokens it trains on (measurement only)."""

    input_tokens = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        if "attention_mask" in inputs:
            self.input_tokens += int(inputs["attention_mask"].sum())
        else:  # padding-free (packed) batch: one row, no padding
            self.input_tokens += int(inputs["input_ids"].numel())
        return super().training_step(model, inputs, num_items_in_batch)


class StepTimer(TrainerCallback):
    """Per optimizer step: wall seconds, cumulative input tokens at its end, logged loss."""

    def __init__(self, trainer_ref: list) -> None:
        self.trainer_ref = trainer_ref
        self.steps: list[dict] = []
        self._t0 = self._cpu0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append({"step": state.global_step, "seconds": time.perf_counter() - self._t0,
                           "cpu_seconds": time.process_time() - self._cpu0,
                           "cumulative_tokens": self.trainer_ref[0].input_tokens, "loss": None})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and self.steps and self.steps[-1]["step"] == state.global_step:
            self.steps[-1]["loss"] = float(logs["loss"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--kind", choices=["instruct", "text"], required=True)
    p.add_argument("--packing", type=int, default=0)
    p.add_argument("--max-steps", type=int, required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sequential", action="store_true", help="keep the data order (loss check)")
    p.add_argument("--result", required=True)
    p.add_argument("--output-dir", required=True)
    a = p.parse_args()

    records = [json.loads(line) for line in Path(a.data).read_text(encoding="utf-8").splitlines() if line.strip()]
    dataset = Dataset.from_list(records)
    tokenizer = AutoTokenizer.from_pretrained(a.model)  # StarCoder2's: no pad token; TRL falls back to eos
    model = AutoModelForCausalLM.from_pretrained(a.model)
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=STARCODER2_LINEAR,
                             task_type="CAUSAL_LM")
    config = SFTConfig(
        output_dir=a.output_dir,
        per_device_train_batch_size=a.batch,
        max_length=a.max_length,
        packing=bool(a.packing),
        max_steps=a.max_steps,
        learning_rate=a.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=a.seed,
        disable_tqdm=True,
        train_sampling_strategy="sequential" if a.sequential else "random",
    )
    ref: list = []
    timer = StepTimer(ref)
    trainer = CountingSFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                                 peft_config=peft_config, callbacks=[timer])
    ref.append(trainer)
    torch.manual_seed(a.seed)
    trainer.train()

    previous = 0
    steps = []
    for s in timer.steps:
        steps.append({"step": s["step"], "seconds": s["seconds"], "cpu_seconds": s["cpu_seconds"],
                      "tokens": s["cumulative_tokens"] - previous, "loss": s["loss"]})
        previous = s["cumulative_tokens"]
    Path(a.result).write_text(json.dumps({"steps": steps, "packing": bool(a.packing), "kind": a.kind}, indent=1))


if __name__ == "__main__":
    main()
