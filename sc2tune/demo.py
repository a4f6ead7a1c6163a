"""``sc2tune quickstart``: fine-tuning shown working on the built-in tiny model, in under a minute on 2 CPU cores.

1. train the FIM quickstart recipe on the bundled sample repository ``TRAIN_REPOS`` with the quickstart's
   own settings (``QUICKSTART_OVERRIDES``; the recipe file and the library defaults stay as they are), the
   other sample repositories ``HELD_OUT_REPOS`` being the eval split (never trained on);
2. let the untrained base and the trained model fill the same holes, greedy, and score both with
   :mod:`sc2tune.metrics` (exact match, edit similarity), on three sets:

   * recall (:func:`row_holes`): ``N_HOLES`` seeded lines inside the FIM middles of the very rows trained on,
     the prompt being that row up to the line (honest recall of trained examples);
   * new prompt (:func:`draw_holes`): ``N_HOLES`` lines of the trained files cut into a fresh SPM prompt;
   * held out: ``N_HELD_OUT`` lines of the held-out repositories in the same kind of prompt.

The quickstart trains every weight (``adapter.method=full``): the tiny model is random, its output layer is
its embedding matrix (tied, std 0.02, every logit capped near 2.6), and a LoRA that can lift that cap must
wrap the output layer, which takes the training off the fused output-layer loss
(:mod:`sc2tune.training.loss`). Measured on the quickstart's data (one thread, 2 CPU cores shared with other
jobs): LoRA r 64-128 on the six layers and ``lm_head``, 1.0-1.2 CPU s a step (r 32, 100 steps at lr 1e-2:
training loss 10.81 -> 4.64, no line recalled); full fine-tuning, 0.4 CPU s a step, 10.81 -> 0.05 in 100 steps.
LoRA, QLoRA and the merge are the recipes' path (``recipes/quickstart/fim.yaml``).

The tiny model starts from random weights: what it can learn in a minute is to *recall the code it was
trained on*. The recall figures measure exactly that (memorisation of the training rows); the new-prompt and
held-out figures say honestly how little carries over to a prompt or to code it has not seen.

A file hole is a line ``L`` (at least ``MIN_LINE_CHARS`` non-blank characters) of a file ``PATH`` of
repository ``NAME``, cut on token boundaries into ``prefix | middle | suffix`` as :mod:`sc2tune.data.holes` cuts
a line hole (``middle`` = newline, indentation, ``L``). The prompt is StarCoder2's SPM order in the repository
layout the recipe trains (``fim.repo_context``), the suffix cut to a quarter of the budget from the right, the
prefix to the rest from the left::

    <repo_name>NAME<file_sep><fim_prefix><fim_suffix>SUFFIX<fim_middle>PATH\\nPREFIX

Greedy decoding, at most ``tokens(middle) + 4`` new tokens, stopped at ``<|endoftext|>``/``<file_sep>``; the
prediction is the first line of the generated text (:func:`sc2tune.data.holes.first_line`), compared with ``L``.

Everything goes to a fresh ``runs/quickstart[-N]`` folder; nothing existing is touched.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any

from sc2tune.clihelp import Help
from sc2tune.errors import UserError

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent

#: Sample repositories (sub-folders of the bundled code) trained on, and those held out for eval.
TRAIN_REPOS = ("taskqueue",)
HELD_OUT_REPOS = ("geometry", "textstats")
#: Lines cut out of the trained files / the held-out repositories, drawn with ``HOLE_SEED``.
N_HOLES, N_HELD_OUT, HOLE_SEED = 12, 6, 0
#: A line is a hole candidate when it has at least this many non-blank characters.
MIN_LINE_CHARS = 8

#: The quickstart's own training settings (module doc): every weight trained, a constant learning rate after
#: the warm-up, every file window FIM'd in SPM order (the recall holes are lines of those FIM middles).
QUICKSTART_OVERRIDES = [
    "adapter.method=full", "train.max_steps=100", "train.batch_size=2", "train.lr=5e-3",
    "train.scheduler=constant_with_warmup", "data.fim.rate=1.0", "data.fim.spm_rate=1.0", "train.logging_steps=5",
    "train.eval_steps=100", "train.save_steps=100",
]

SPARK = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Hole:
    """One line cut out of a file (module doc): ``prefix + middle + suffix`` is the file."""

    repo: str
    path: str
    prefix: str
    middle: str  # newline(s) and indentation, then the line
    suffix: str

    @property
    def line(self) -> str:
        """The line to recall, without its indentation."""
        return self.middle.strip()


@dataclass(frozen=True)
class HoleScores:
    """The same holes filled by the untrained base (before) and the trained model (after), scored."""

    holes: tuple[Hole, ...] | tuple[RowHole, ...]
    before: tuple[str, ...]
    after: tuple[str, ...]
    exact_match_before: float  # mean of sc2tune.metrics.exact_match
    exact_match_after: float
    edit_similarity_before: float  # mean of sc2tune.metrics.edit_similarity
    edit_similarity_after: float


@dataclass(frozen=True)
class QuickstartResult:
    """Where the run went, its loss curve, and the untrained vs trained scores on the three sets of holes."""

    run_dir: Path
    model_dir: Path  # the trained weights (every weight trained): a plain transformers folder
    recall: HoleScores  # lines inside the FIM middles of the training rows, prompt = the row up to the line
    new_prompt: HoleScores  # lines of the trained files in a new SPM prompt (not one it was trained on)
    held_out: HoleScores  # lines of HELD_OUT_REPOS in the same kind of prompt
    train_losses: tuple[tuple[int, float], ...]  # (step, logged training loss)
    loss_png: Path
    eval_loss_before: float | None  # on HELD_OUT_REPOS (the eval split)
    eval_loss_after: float | None


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise UserError(f"sc2tune's bundled files are missing (looked for {candidates[0].name})",
                    hint="reinstall sc2tune (pip install -e . from a checkout)")


def bundled_recipe() -> Path:
    """The FIM quickstart recipe: the checkout's copy, else the installed one."""
    return _first_existing(PACKAGE.parent / "recipes" / "quickstart" / "fim.yaml",
                           PACKAGE / "_recipes" / "quickstart" / "fim.yaml")


def bundled_code() -> Path:
    """The sample repositories the quickstart trains on."""
    return _first_existing(PACKAGE.parent / "data_templates" / "samples" / "code",
                           PACKAGE / "_data_templates" / "samples" / "code")


def fresh_run_dir(root: Path) -> Path:
    """``root/quickstart``, or ``quickstart-2``, ``-3``... whichever does not exist yet."""
    candidate, n = root / "quickstart", 1
    while candidate.exists():
        n += 1
        candidate = root / f"quickstart-{n}"
    return candidate


def file_holes(repo: str, path: str, text: str) -> list[Hole]:
    """Every hole of one file (module doc), in line order."""
    from sc2tune.data.holes import line_cuts

    return [Hole(repo, path, text[:a], text[a:b], text[b:]) for a, b in line_cuts(text, MIN_LINE_CHARS)]


def draw_holes(repo_dir: Path, count: int, seed: int) -> list[Hole]:
    """``count`` distinct holes of the ``*.py`` files under ``repo_dir``, drawn with
    ``random.Random(f"{seed}:{repo name}")``, in file and line order."""
    candidates = [h for path in sorted(repo_dir.rglob("*.py"))
                  for h in file_holes(repo_dir.name, path.relative_to(repo_dir).as_posix(),
                                      path.read_text(encoding="utf-8"))]
    chosen = random.Random(f"{seed}:{repo_dir.name}").sample(range(len(candidates)), min(count, len(candidates)))
    return [candidates[i] for i in sorted(chosen)]


def spm_prompt_ids(tokenizer: Any, hole: Hole, budget: int) -> list[int]:
    """The SPM repository prompt of ``hole`` (module doc) with at most ``budget`` prefix + suffix tokens."""
    from sc2tune.tokens import encode_texts, special_tokens

    st = special_tokens(tokenizer, need_fim=True)
    if st.repo_name is None or st.file_sep is None:
        raise UserError("the quickstart needs a tokenizer with <repo_name> and <file_sep> (StarCoder2's)")
    repo, path, pre, suf = encode_texts(tokenizer, [hole.repo, hole.path + "\n", hole.prefix, hole.suffix])
    keep_suf = min(len(suf), budget // 4)
    keep_pre = min(len(pre), budget - keep_suf)
    return [st.repo_name, *repo, st.file_sep, st.fim_prefix, st.fim_suffix, *suf[:keep_suf],
            st.fim_middle, *path, *pre[len(pre) - keep_pre:]]


@dataclass(frozen=True)
class RowHole:
    """A line inside the FIM middle of a training row (module doc): ``prompt_ids`` are that row's own tokens
    from its document's start to the line, ``line_ids`` the line's tokens (its newline and indentation first)."""

    row: int  # index of the packed training row
    prompt_ids: tuple[int, ...]
    line_ids: tuple[int, ...]
    line: str  # the line's text, stripped


def row_holes(rows: Any, tokenizer: Any, count: int, seed: int) -> list[RowHole]:
    """``count`` lines drawn with ``random.Random(f"{seed}:rows")`` from the FIM middles of ``rows`` (the
    prepared training rows: ``input_ids`` and ``position_ids``, a document starting at each position 0).

    A line starts at a token whose text starts with a newline and runs to the next such token, or to the
    next special token; it is a candidate when it lies after a ``<fim_middle>`` and has at least
    ``MIN_LINE_CHARS`` non-blank characters."""
    from sc2tune.tokens import special_tokens

    st = special_tokens(tokenizer, need_fim=True)
    special = set(tokenizer.all_special_ids) | {t for t in (st.eos, st.fim_prefix, st.fim_middle, st.fim_suffix,
                                                            st.fim_pad, st.repo_name, st.file_sep) if t is not None}
    starts_line = {t: tokenizer.decode([t]).startswith("\n") for t in {t for r in rows for t in r["input_ids"]}}
    candidates = []
    for index, row in enumerate(rows):
        ids, positions = list(row["input_ids"]), list(row["position_ids"])
        bounds = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
        for doc_start, doc_end in pairwise(bounds):
            for k in (k for k in range(doc_start, doc_end) if ids[k] == st.fim_middle):
                end = next((j for j in range(k + 1, doc_end) if ids[j] in special), doc_end)
                cuts = [i for i in range(k + 1, end) if starts_line[ids[i]]] + [end]
                for a, b in pairwise(cuts):
                    line = tokenizer.decode(ids[a:b]).strip()
                    if len(line) >= MIN_LINE_CHARS:
                        candidates.append(RowHole(index, tuple(ids[doc_start:a]), tuple(ids[a:b]), line))
    chosen = random.Random(f"{seed}:rows").sample(range(len(candidates)), min(count, len(candidates)))
    return [candidates[i] for i in sorted(chosen)]


def fill_lines(model: Any, tokenizer: Any, prompts: list[list[int]], cap: int) -> list[str]:
    """The model's greedy line after each prompt (module doc), all prompts in one left-padded batch of at
    most ``cap`` new tokens (:func:`sc2tune.decoding.generate_batch`), each cut at its first stop or pad."""
    from sc2tune.data.holes import first_line
    from sc2tune.decoding import generate_batch
    from sc2tune.tokens import special_tokens

    st = special_tokens(tokenizer, need_fim=True)
    stops = [t for t in (st.eos, st.file_sep, st.fim_pad) if t is not None]
    new = generate_batch(model, prompts, pad_id=st.fim_pad, stop_ids=stops, max_new_tokens=cap,
                         batch_size=len(prompts))
    return [first_line(tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))
            for ids in new]


def score_holes(before: Any, after: Any, tokenizer: Any, holes: list[Hole] | list[RowHole],
                max_length: int) -> HoleScores:
    """Fill ``holes`` with both models and score each against its line (:mod:`sc2tune.metrics`)."""
    from sc2tune.metrics import text_scores

    enc = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    sizes = [len(h.line_ids) if isinstance(h, RowHole) else len(enc(h.middle)) for h in holes]
    cap = max(sizes) + 4
    prompts = [list(h.prompt_ids) if isinstance(h, RowHole) else spm_prompt_ids(tokenizer, h, max_length - cap - 16)
               for h in holes]
    lines = [h.line for h in holes]
    filled = [tuple(fill_lines(m, tokenizer, prompts, cap)) for m in (before, after)]
    b, a = (text_scores(list(f), lines) for f in filled)
    return HoleScores(tuple(holes), filled[0], filled[1], b["exact_match"], a["exact_match"],
                      b["edit_similarity"], a["edit_similarity"])


def sparkline(values: list[float], width: int = 40) -> str:
    """One character per value (``width`` evenly spaced values when there are more), ``▁`` = the lowest,
    ``█`` = the highest: level ``round(7 * (v - min) / (max - min))``; all ``▁`` when the values are equal."""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo
    return "".join(SPARK[round(7 * (v - lo) / span) if span > 0 else 0] for v in values)


def quickstart(
    runs_root: Annotated[str | Path, Help("folder for the quickstart run (a fresh sub-folder is made)",
                                          flag="--runs")] = "runs",
    *,
    show_progress: Annotated[bool, Help("no progress bars", flag="--no-progress")] = True,
) -> QuickstartResult:
    """Train, then score the untrained and the trained model on the same holes (see module doc)."""
    from sc2tune.data import build_datasets
    from sc2tune.recipe import load_recipe
    from sc2tune.reporting import read_metrics
    from sc2tune.runs import RunFolder, load_trained
    from sc2tune.training import train

    run_dir = fresh_run_dir(Path(runs_root))
    code = bundled_code()
    train_dirs, eval_dirs = (",".join(str(code / repo) for repo in repos) for repos in (TRAIN_REPOS, HELD_OUT_REPOS))
    recipe = load_recipe(bundled_recipe(), [*QUICKSTART_OVERRIDES, f"output_dir={run_dir}",
                                            f"data.train=[{train_dirs}]", f"data.eval=[{eval_dirs}]"])
    log.info("quickstart: training %s -> %s", recipe.model.name_or_path, run_dir)
    result = train(recipe, show_progress=show_progress)
    assert result.adapter_dir is not None  # OUTPUT/model for a full fine-tune
    base = load_trained(result.adapter_dir, "base").model
    loaded = load_trained(result.adapter_dir, "adapter")
    trained, tokenizer, max_length = loaded.model, loaded.tokenizer, recipe.data.max_length
    rows = build_datasets(recipe, tokenizer, show_progress=False).train  # prepared once: the rows just trained on
    recall = score_holes(base, trained, tokenizer, row_holes(rows, tokenizer, N_HOLES, HOLE_SEED), max_length)
    file_holes_of = lambda repos, n: [h for repo in repos  # noqa: E731
                                      for h in draw_holes(code / repo, n // len(repos), HOLE_SEED)]
    new_prompt = score_holes(base, trained, tokenizer, file_holes_of(TRAIN_REPOS, N_HOLES), max_length)
    held_out = score_holes(base, trained, tokenizer, file_holes_of(HELD_OUT_REPOS, N_HELD_OUT), max_length)
    train_losses, evals = read_metrics(RunFolder(run_dir).metrics)
    return QuickstartResult(run_dir, result.adapter_dir, recall, new_prompt, held_out, tuple(train_losses),
                            RunFolder(run_dir).loss_plot, evals[0][1] if evals else None, evals[-1][1] if evals else None)


def shown_hole(recall: HoleScores) -> int:
    """Index of the hole shown before/after: the longest line drawn (chosen by length, not by score)."""
    return max(range(len(recall.holes)), key=lambda i: (len(recall.holes[i].line), -i))


def _score_rows(title: str, s: HoleScores) -> list[str]:
    n = len(s.holes)
    return [f"  {title:<46} untrained  trained",
            f"    exact match                                {round(s.exact_match_before * n):>5}/{n:<3} "
            f"{round(s.exact_match_after * n):>5}/{n}",
            f"    edit similarity                            {s.edit_similarity_before:>9.2f} "
            f"{s.edit_similarity_after:>8.2f}"]


def report_lines(r: QuickstartResult, tokenizer: Any = None) -> list[str]:
    """What ``sc2tune quickstart`` prints about a finished run (``tokenizer`` decodes the shown hole's
    context; the bundled one when None)."""
    from sc2tune.tiny import load_bundled_tokenizer

    tokenizer = tokenizer or load_bundled_tokenizer()
    out = [f"quickstart done in {r.run_dir}"]
    if r.train_losses:
        losses = [v for _, v in r.train_losses]
        out.append(f"  train loss  {losses[0]:.2f} {sparkline(losses)} {losses[-1]:.2f}  "
                   f"(steps {r.train_losses[0][0]}-{r.train_losses[-1][0]}; plot: {r.loss_png})")
    if r.eval_loss_before is not None and r.eval_loss_after is not None:
        out.append(f"  eval loss   {r.eval_loss_before:.2f} -> {r.eval_loss_after:.2f}  "
                   f"(held-out repositories {', '.join(HELD_OUT_REPOS)}, never trained on)")
    out += [f"  trained:    {r.model_dir} (every weight trained; a plain transformers folder)", "",
            "  RECALL, not new code: the tiny model starts from random weights, and what a minute of training",
            "  teaches it is to recall the code it was trained on.",
            "  A line inside the middle of a trained FIM example, the prompt being that training row up to the line:"]
    i = shown_hole(r.recall)
    hole = r.recall.holes[i]
    context = tokenizer.decode(list(hole.prompt_ids), skip_special_tokens=True).rstrip().splitlines()
    out += [f"    after      {context[-1].strip() if context else ''!r}",
            f"    expected   {hole.line!r}",
            f"    untrained  {r.recall.before[i]!r}",
            f"    trained    {r.recall.after[i]!r}",
            *_score_rows(f"{len(r.recall.holes)} such lines (seed {HOLE_SEED}):", r.recall), "",
            *_score_rows(f"{len(r.new_prompt.holes)} lines of the trained files, new FIM prompt:", r.new_prompt),
            "    (cut at the line and filled SPM-style, a prompt it was not trained on: the run memorised its rows)",
            *_score_rows(f"HELD OUT: {len(r.held_out.holes)} lines of {', '.join(HELD_OUT_REPOS)}:", r.held_out),
            "    (never trained on; same prompt: how little a minute on one repository carries over)"]
    return out
