"""Generate HumanEval-format samples with a model, in batches (:func:`sc2tune.decoding.generate_batch`).

Each problem's prompt is built as the run trained the model to read it (:mod:`sc2tune.evaluation.prompts`:
FIM in PSM order, in the repository layout for a ``repo_context`` run; an instruct run's template;
left-to-right with the HumanEval stop strings). Sample ``i`` of every task is drawn in one batched pass
seeded with ``sampling.seed + i`` (seed 0 when None), so a rerun reproduces the file; at temperature 0 the
greedy pass runs once and its samples are repeated.

The samples file is written atomically (temp file + rename) as JSONL ``{task_id, completion}``, the
``n_samples`` of a task one after the other, tasks in the problems' order.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sc2tune.errors import UserError
from sc2tune.evaluation.problems import Problem, Sample, write_jsonl
from sc2tune.evaluation.prompts import PromptStyle, build_prompt, finish

if TYPE_CHECKING:
    from sc2tune.generation import Sampling

log = logging.getLogger(__name__)

#: Prompts generated at once (one left-padded batch).
BATCH_SIZE = 16


def complete_problems(model: Any, tokenizer: Any, problems: dict[str, Problem], style: PromptStyle, *,
                      n_samples: int, sampling: Sampling, batch_size: int = BATCH_SIZE,
                      show_progress: bool = False, label: str = "generating samples") -> list[Sample]:
    """``n_samples`` samples of every problem (module doc), task by task in the problems' order."""
    from sc2tune.decoding import generate_batch

    if n_samples < 1:
        raise UserError(f"--n-samples must be at least 1, got {n_samples}")
    if n_samples > 1 and sampling.temperature == 0:
        log.warning("--temperature 0 is greedy: all %d samples of a task will be identical", n_samples)
    pad = tokenizer.pad_token_id
    if pad is None:
        raise UserError("the tokenizer has no pad token", hint="load it through sc2tune (pad <fim_pad>)")
    tasks = list(problems.values())
    prompts = [build_prompt(tokenizer, p, style) for p in tasks]
    groups: dict[tuple, list[int]] = {}  # prompt indices by stop rules: one batched pass per group
    for r, prompt in enumerate(prompts):
        groups.setdefault((prompt.stop_ids, prompt.stop_strings), []).append(r)
    passes = 1 if sampling.temperature == 0 else n_samples
    texts: list[list[str]] = [[] for _ in tasks]
    seed = sampling.seed or 0
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        bar = progress.add_task("generate", total=len(tasks) * passes)
        for i in range(passes):
            for (stop_ids, stop_strings), rows in groups.items():
                new = generate_batch(model, [prompts[r].ids for r in rows], pad_id=pad, stop_ids=stop_ids,
                                     max_new_tokens=sampling.max_new_tokens, batch_size=batch_size,
                                     temperature=sampling.temperature, top_p=sampling.top_p, seed=seed + i,
                                     stop_strings=stop_strings, tokenizer=tokenizer,
                                     on_batch=lambda done: progress.advance(bar, done))
                for r, ids in zip(rows, new, strict=True):
                    texts[r].append(finish(prompts[r], tokenizer.decode(ids, skip_special_tokens=False)))
    return [Sample(task.task_id, texts[t][i % passes]) for t, task in enumerate(tasks) for i in range(n_samples)]


def generate_samples(problems: dict[str, Problem], model: str, out_file: str | Path, *, n_samples: int = 1,
                     sampling: Sampling | None = None, show_progress: bool = True,
                     trust_remote_code: bool = False, batch_size: int = BATCH_SIZE) -> Path:
    """Write ``n_samples`` completions per problem to ``out_file`` (JSONL) and return its path.

    ``model`` is a model, adapter or run folder (:func:`sc2tune.generation.load_for_inference`: a run's
    adapter on its base); its saved recipe shapes the prompts. ``sampling`` defaults to 384 new tokens at
    temperature 0.2, top-p 0.95, seed 0; its ``stop`` strings are added to every prompt's."""
    from sc2tune.generation import Sampling, load_for_inference

    sampling = sampling or Sampling(max_new_tokens=384, seed=0)
    if n_samples < 1:
        raise UserError(f"--n-samples must be at least 1, got {n_samples}")
    lm = load_for_inference(model, trust_remote_code=trust_remote_code)
    if lm.classifier:
        raise UserError(f"{lm.path} is a sequence classifier: it writes no code", hint="give a causal LM")
    style = PromptStyle.of(lm.recipe, tuple(sampling.stop))
    samples = complete_problems(lm.model, lm.tokenizer, problems, style, n_samples=n_samples, sampling=sampling,
                                batch_size=batch_size, show_progress=show_progress)
    return write_jsonl(out_file, map(asdict, samples))
