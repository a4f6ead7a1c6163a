"""Commands that set up and check: ``quickstart``, ``validate``, ``schema``, ``tiny-model``.

``quickstart`` and ``tiny-model`` take the options of :func:`sc2tune.demo.quickstart` and
:func:`sc2tune.tiny.write_tiny_model`; ``validate`` and ``schema`` are their own declaration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sc2tune.commands.derive import Command
from sc2tune.commands.options import Overrides, RecipePath, TrustRemoteCode, load

if TYPE_CHECKING:
    from sc2tune.demo import QuickstartResult


def show_quickstart(r: QuickstartResult) -> None:
    """Fine-tune the built-in tiny model on sample code and show it working: the untrained and the trained
    model fill the same lines of the trained code (recall) and of held-out code (under a minute on 2 CPU cores)."""
    from sc2tune.demo import report_lines

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
    """Check a recipe (and overrides) without running it: the schema, then the base model's tokenizer,
    that the LoRA targets exist in its architecture and that train.report_to's trackers are installed."""
    from sc2tune.recipe import check_trackers_installed, recipe_to_yaml

    loaded = load(recipe, overrides, trust_remote_code)  # a bad recipe is reported before any heavy import
    note = ""
    if not schema_only:
        from sc2tune.adapters import check_target_modules
        from sc2tune.modeling import check_tokenizer

        check_trackers_installed(loaded)
        note = f"; {check_tokenizer(loaded.model, loaded.task)}; {check_target_modules(loaded)}"
    if print_:
        print(recipe_to_yaml(loaded), end="")
    else:
        print(f"ok: {recipe} (task {loaded.task}, {loaded.adapter.method} on {loaded.model.name_or_path}){note}")


def schema() -> None:
    """Print the JSON schema of a recipe (every key with its type, default and description)."""
    from sc2tune.recipe import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=2))


def show_tiny_model(written: Path) -> None:
    """Write the built-in tiny StarCoder2 as a Hugging Face folder."""
    print(f"wrote the built-in tiny StarCoder2 to {written}")


quickstart = Command(show_quickstart, api="sc2tune.demo:quickstart")
tiny_model = Command(show_tiny_model, api="sc2tune.tiny:write_tiny_model")
