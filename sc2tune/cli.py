"""Command-line interface: a table from command names to typed functions of the Python API.

No logic lives here: each entry declares its arguments and calls one function. A
:class:`~sc2tune.errors.UserError` is printed without a traceback and sets the exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
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


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path to a recipe YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="override recipe keys, values typed as YAML (train.lr=1e-4, data.eval=null)")


# ---- validate -------------------------------------------------------------------------------------

def _run_validate(args: argparse.Namespace) -> int:
    from sc2tune.recipe import load_recipe, recipe_to_yaml

    recipe = load_recipe(args.recipe, args.overrides)
    if args.print:
        print(recipe_to_yaml(recipe), end="")
    else:
        print(f"ok: {args.recipe} (task {recipe.task}, {recipe.adapter.method} on {recipe.model.name_or_path})")
    return 0


def _conf_validate(p: argparse.ArgumentParser) -> None:
    _recipe_args(p)
    p.add_argument("--print", action="store_true", help="print the fully resolved recipe as YAML")


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


# ---- train ----------------------------------------------------------------------------------------

def _run_train(args: argparse.Namespace) -> int:
    from sc2tune.recipe import load_recipe
    from sc2tune.training import train
    from sc2tune.training.run import describe

    result = train(load_recipe(args.recipe, args.overrides), resume=args.resume, show_progress=not args.no_progress)
    report = describe(result)
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
        print(json.dumps(report))
    return 0


def _conf_train(p: argparse.ArgumentParser) -> None:
    _recipe_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in output_dir/checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")


COMMANDS: list[Command] = [
    Command("validate", "check a recipe (and overrides) without running it", _conf_validate, _run_validate),
    Command("train", "fine-tune: sc2tune train RECIPE [key=value ...] [--resume]", _conf_train, _run_train),
    Command("schema", "print the JSON schema of a recipe", lambda p: None, _run_schema),
    Command("tiny-model", "write the built-in tiny StarCoder2 as a Hugging Face folder",
            _conf_tiny_model, _run_tiny_model),
]


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="sc2tune", description="Fine-tune StarCoder2 with LoRA/QLoRA: instruction, FIM, classification."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sc2tune`` console script and ``python -m sc2tune``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
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
