"""Recipe schema, YAML errors and command-line overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sc2tune.errors import RecipeError
from sc2tune.recipe import load_recipe, parse_override, recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
# accelerate configs are not sc2tune recipes; they are checked in the trainer tests
SC2TUNE_RECIPES = [p for p in RECIPES if "accelerate" not in p.parts]

MINIMAL = "task: fim\ndata:\n  train: some/folder\n"


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_real_process_exits_2_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sc2tune", "validate", str(write(tmp_path, "task: fim\n"))],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "missing required key 'data'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_shipped_recipes_exist():
    assert SC2TUNE_RECIPES, "recipes/ holds no recipe"


@pytest.mark.parametrize("path", SC2TUNE_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_validates(path: Path):
    recipe = load_recipe(path)
    assert recipe.task in {"instruct", "fim", "classify"}
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{path} must open with a comment saying what it does"


def test_defaults_and_output_dir_from_file_name(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL, "my-run.yaml"))
    assert recipe.output_dir == "runs/my-run"
    assert recipe.model.name_or_path == "sc2tune/tiny-starcoder2"
    assert recipe.adapter.method == "lora" and recipe.adapter.quantization is None


def test_recipe_is_frozen(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen assignment
        recipe.task = "instruct"


def test_qlora_gets_nf4_double_quant(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL + "adapter: {method: qlora}\n"))
    q = recipe.adapter.quantization
    assert (q.bits, q.quant_type, q.double_quant) == (4, "nf4", True)


def test_exponent_floats_in_files_are_floats(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL + "train:\n  lr: 3e-5\n"))
    assert recipe.train.lr == 3e-5


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.lr=1e-4", (["train", "lr"], 1e-4)),
        ("data.eval=null", (["data", "eval"], None)),
        ("adapter.target_modules=[q_proj,v_proj]", (["adapter", "target_modules"], ["q_proj", "v_proj"])),
        ("data.packing=true", (["data", "packing"], True)),
        ("train.batch_size=8", (["train", "batch_size"], 8)),
        ("output_dir=runs/x", (["output_dir"], "runs/x")),
    ],
)
def test_override_parsing_types_values_as_yaml(override, expected):
    assert parse_override(override) == expected


def test_overrides_apply_and_validate(tmp_path):
    path = write(tmp_path, MINIMAL)
    recipe = load_recipe(path, ["train.lr=1e-4", "data.eval=null", "adapter.target_modules=[q_proj,v_proj]",
                                "data.fim.rate=0.9"])
    assert recipe.train.lr == 1e-4
    assert recipe.data.eval is None
    assert recipe.adapter.target_modules == ["q_proj", "v_proj"]
    assert recipe.data.fim.rate == 0.9


def test_override_with_bad_value_names_the_override(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, MINIMAL), ["train.lr=-1"])
    assert "command-line override" in str(err.value) and "train.lr" in str(err.value)


@pytest.mark.parametrize("text, overrides, blamed", [
    (MINIMAL, ["train.class_weights=[1,2]"],  # a Recipe check, the value from the command line
     "command-line override train.class_weights=[1,2]: train.class_weights only applies to task 'classify'"),
    (MINIMAL + "adapter:\n  init: loftq\n", ["adapter.method=full"],  # an AdapterSpec check, one key from each
     "command-line override adapter.method=full: adapter.init 'loftq' initialises LoRA factors"),
    (MINIMAL + "adapter:\n  init: loftq\n", ["adapter.r=4"],  # an override of an uninvolved key of the section
     "r.yaml:5: adapter.init 'loftq' fits B A"),
])
def test_cross_field_errors_name_the_override_that_set_a_named_key(tmp_path, text, overrides, blamed):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, text), overrides)
    assert f"\n  {blamed}" in str(err.value).replace(str(tmp_path) + "/", "")


@pytest.mark.parametrize(
    "text, fragments",
    [
        (MINIMAL + "train:\n  lr: 1e-4\n  epochz: 3\n", ["unknown key 'train.epochz'", "did you mean 'train.epochs'", ":6"]),
        (MINIMAL + "train:\n  batch_size: many\n", ["train.batch_size", ":5"]),
        (MINIMAL + "adapter:\n  r: 0\n", ["adapter.r", "greater than 0", ":5"]),
        (MINIMAL + "data_:\n  x: 1\n", ["unknown key 'data_'", "did you mean 'data'"]),
        ("task: fim\ndata:\n  train: x\n  fim:\n    rate: 1.5\n", ["data.fim.rate", ":5"]),
        ("task: classify\nmodel: {head: causal-lm}\ndata: {train: x}\n",
         ["model.head 'causal-lm'", "task 'classify'", "delete model.head", ":2:"]),
        ("task: fim\nmodel: {head: sequence-classification}\ndata: {train: x}\n",
         ["model.head 'sequence-classification'", "task 'fim'", "delete model.head"]),
        (MINIMAL + "train: {loss_impl: fast}\n", ["train.loss_impl", "'chunked'", "'plain'"]),
        ("task: summarize\ndata: {train: x}\n", ["task", "'instruct'"]),
        ("data: {train: x}\n", ["missing required key 'task'"]),
        (MINIMAL + "adapter: {method: lora, quantization: {bits: 4}}\n", ["qlora"]),
        ("task: fim\ndata:\n  train: x\n  eval: 1.5\n", ["data.eval"]),
        (MINIMAL + "data:\n  train: x\n", ["duplicate key 'data'", "line 2"]),
    ],
)
def test_bad_recipes_give_a_clear_message(tmp_path, text, fragments):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, text))
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "task: fim\ndata:\n  train: [a, b\n  eval: 0.1\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "malformed YAML" in str(err.value) and f"{path}:" in str(err.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (MINIMAL + "train:\n  epochz: 3\n", "unknown key 'train.epochz'"),  # unknown key
        (MINIMAL + "train:\n  batch_size: many\n", "train.batch_size"),  # wrong type
        (MINIMAL + "train:\n  lr: -0.1\n", "train.lr"),  # out of range
        ("task: fim\ndata: [oops\n", "malformed YAML"),  # malformed YAML
    ],
)
def test_cli_validate_exits_2_without_traceback(tmp_path, text, fragment, run_cli):
    result = run_cli("validate", str(write(tmp_path, text)))
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_validate_ok_and_print(tmp_path, run_cli):
    result = run_cli("validate", str(write(tmp_path, MINIMAL)), "train.lr=0.001", "--print")
    assert result.returncode == 0, result.stderr
    assert "lr: 0.001" in result.stdout


def test_cli_missing_file_and_bad_override(tmp_path, run_cli):
    result = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("validate", str(write(tmp_path, MINIMAL)), "trainlr")
    assert result.returncode == 2 and "key.sub=value" in result.stderr


def test_cli_schema_is_json_with_descriptions(run_cli):
    import json

    result = run_cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "task" in schema["properties"]
    lr = schema["$defs"]["TrainSpec"]["properties"]["lr"]
    assert lr["description"] and lr["exclusiveMinimum"] == 0


def test_recipe_from_dict_matches_file_loading(tmp_path):
    recipe = recipe_from_dict({"task": "fim", "data": {"train": "x"}})
    assert recipe.task == "fim" and recipe.data.train == "x"


def test_non_utf8_recipe_is_a_clear_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"task: instruct\ndata:\n  train: caf\xe9.jsonl\n")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(path)


def test_misspelt_section_in_an_override_is_blamed_on_the_override(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, MINIMAL), ["trian.lr=1"])
    assert "command-line override: unknown key 'trian'" in str(err.value)
    assert "did you mean 'train'" in str(err.value)


@pytest.mark.parametrize(("task", "head"), [("instruct", "causal-lm"), ("fim", "causal-lm"),
                                            ("classify", "sequence-classification")])
def test_the_task_decides_the_head_and_a_matching_model_head_is_an_alias(tmp_path, task, head):
    text = f"task: {task}\ndata: {{train: x}}\n"
    derived = load_recipe(write(tmp_path, text, "derived.yaml"))
    old = load_recipe(write(tmp_path, text + f"model: {{head: {head}}}\n", "old.yaml"))  # a pre-0.x run folder
    assert derived.model.head == old.model.head == head
    assert derived.model == old.model  # the alias leaves nothing behind
    assert "head" not in derived.model_dump()["model"]  # saved recipes no longer carry the key


def test_model_head_is_not_in_the_schema():
    from sc2tune.recipe import recipe_json_schema

    schema = recipe_json_schema()
    assert "head" not in schema["$defs"]["ModelSpec"]["properties"]


def test_a_saved_recipe_reloads_with_its_head(tmp_path):
    from sc2tune.recipe import recipe_to_yaml

    recipe = load_recipe(write(tmp_path, "task: classify\ndata: {train: x}\n"))
    again = load_recipe(write(tmp_path, recipe_to_yaml(recipe), "saved.yaml"))
    assert again.model.head == "sequence-classification" and again == recipe


def test_benchmark_switches_default_to_the_fast_paths(tmp_path):
    train = load_recipe(write(tmp_path, MINIMAL)).train
    assert (train.loss_impl, train.packed_attention, train.lora_dropout_impl) == ("chunked", "per-document", "sparse")
    train = load_recipe(write(tmp_path, MINIMAL), ["train.loss_impl=plain", "train.packed_attention=dense",
                                                   "train.lora_dropout_impl=peft"]).train
    assert (train.loss_impl, train.packed_attention, train.lora_dropout_impl) == ("plain", "dense", "peft")
