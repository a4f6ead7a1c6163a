"""Commands that set up and check: ``quickstart``, ``validate``, ``schema``, ``tiny-model``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sc2tune.commands.options import Overrides, RecipePath, TrustRemoteCode, load


def quickstart(
    runs: Annotated[str, typer.Option(help="folder for the quickstart run (a fresh sub-folder is made)")] = "runs",
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bars")] = False,
) -> None:
    """Fine-tune the built-in tiny model on sample code and show it working: the untrained and the trained
    model fill the same lines of the trained code (recall) and of held-out code (a few CPU minutes)."""
    from sc2tune.demo import quickstart as run_quickstart
    from sc2tune.demo import report_lines

    r = run_quickstart(runs, show_progress=not no_progress)
    print("\n" + "\n".join(report_lines(r)))
    print(f"next: sc2tune generate {r.model_dir} --prefix 'def add(a, b):' --suffix '' --temperature 0")


def validate(
    recipe: RecipePath,
    overrides: Overrides = None,
    trust_remote_code: TrustRemoteCode = False,
    print_: Annotated[bool, typer.Option("--print", help="print the fully resolved recipe as YAML")] = False,
    schema_only: Annotated[bool, typer.Option(
        "--schema-only", help="only check the recipe itself, not the base model's tokenizer and LoRA targets")] = False,
) -> None:
    """Check a recipe (and overrides) without running it: the schema, then the base model's tokenizer and
    that the LoRA targets exist in its architecture."""
    from sc2tune.recipe import recipe_to_yaml

    loaded = load(recipe, overrides, trust_remote_code)  # a bad recipe is reported before any heavy import
    note = ""
    if not schema_only:
        from sc2tune.adapters import check_target_modules
        from sc2tune.modeling import check_tokenizer

        note = f"; {check_tokenizer(loaded.model, loaded.task)}; {check_target_modules(loaded)}"
    if print_:
        print(recipe_to_yaml(loaded), end="")
    else:
        print(f"ok: {recipe} (task {loaded.task}, {loaded.adapter.method} on {loaded.model.name_or_path}){note}")


def schema() -> None:
    """Print the JSON schema of a recipe (every key with its type, default and description)."""
    from sc2tune.recipe import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=2))


def tiny_model(
    out_dir: Annotated[str, typer.Argument(
        metavar="OUT_DIR", help="folder to write (config.json, model.safetensors, tokenizer)", show_default=False)],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="write into a non-empty folder")] = False,
) -> None:
    """Write the built-in tiny StarCoder2 as a Hugging Face folder."""
    from sc2tune.tiny import write_tiny_model

    print(f"wrote the built-in tiny StarCoder2 to {write_tiny_model(out_dir, overwrite=overwrite)}")

