"""Recipe schema, --set overrides, registry lookups: strict, with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqtool.commands.recipes import dump_recipe, load_recipe
from seqtool.errors import SeqtoolError
from seqtool.recipe.overrides import apply_overrides, parse_override
from seqtool.registry import MODELS, Registry


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_tiny_recipe_loads_with_defaults(tiny_recipe):
    recipe = load_recipe(tiny_recipe)
    assert recipe.model.arch == "rnn_seq2seq"
    assert recipe.train.max_steps == 150
    assert recipe.decode.beam == 3
    assert recipe.train.clip_norm == 5.0  # schema default
    assert recipe.run_dir() == "runs/tiny"


@pytest.mark.parametrize("override,check", [
    ("train.max_steps=7", lambda r: r.train.max_steps == 7),
    ("train.optimizer.lr=1e-4", lambda r: r.train.optimizer.lr == 1e-4),
    ("model.cell=gru", lambda r: r.model.cell == "gru"),
    ("eval.metrics=[bleu]", lambda r: r.eval.metrics == ["bleu"]),
    ("train.max_minutes=null", lambda r: r.train.max_minutes is None),
    ("output_dir=elsewhere", lambda r: r.run_dir() == "elsewhere"),
])
def test_overrides_are_typed_yaml(tiny_recipe, override, check):
    assert check(load_recipe(tiny_recipe, [override]))


@pytest.mark.parametrize("override,expected", [
    ("train.max_stepz=3", "train.max_stepz: unknown key; did you mean 'train.max_steps'?"),
    ("model.hiden_dim=3", "model.hiden_dim: unknown key; did you mean 'model.hidden_dim'?"),
    ("train.max_steps=abc", "train.max_steps: Input should be a valid integer"),
    ("decode.beam=0", "decode.beam: Input should be greater than or equal to 1"),
    ("model.arch=lstmm", "model.arch: unknown model 'lstmm'"),
    ("train.optimizer.name=adamax", "train.optimizer.name: Input should be"),
    ("decode.n_best=9", "n_best (9) cannot exceed beam (3)"),
])
def test_bad_values_name_their_key(tiny_recipe, override, expected):
    with pytest.raises(SeqtoolError) as err:
        load_recipe(tiny_recipe, [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_cross_field_rules(tmp_path):
    lm = """
name: lm
task: lm
data: {corpus: ptb, tokenizer: {kind: word, vocab_size: null}}
model: {arch: rnnlm}
decode: {beta: 0.2}
"""
    with pytest.raises(SeqtoolError, match="coverage penalty.*needs attention"):
        load_recipe(write(tmp_path, lm))
    with pytest.raises(SeqtoolError, match="cannot do task 'translation'"):
        load_recipe(write(tmp_path, lm.replace("task: lm", "task: translation").replace("decode: {beta: 0.2}", "")))


def test_malformed_yaml_names_line(tmp_path):
    with pytest.raises(SeqtoolError, match=r"r.yaml:2: malformed YAML: mapping values are not allowed"):
        load_recipe(write(tmp_path, "name: x\nmodel: arch: rnnlm\n"))


def test_yaml_is_loaded_safely(tmp_path):
    evil = "name: !!python/object/apply:os.system ['touch pwned']\nmodel: {arch: rnnlm}\n"
    with pytest.raises(SeqtoolError, match="malformed YAML"):
        load_recipe(write(tmp_path, evil))
    assert not (tmp_path / "pwned").exists()


def test_corpus_preset_fills_paths_and_dump_round_trips(tmp_path, tiny_recipe):
    recipe = load_recipe(tiny_recipe, ["data.generate=null", "data.corpus=multi30k", "data.pair=en-de"])
    assert recipe.data.train.src == "multi30k/train.en"
    assert recipe.data.test.tgt == "multi30k/test2016.de"
    dump_recipe(recipe, tmp_path / "resolved.yaml")
    assert load_recipe(tmp_path / "resolved.yaml") == recipe


def test_override_syntax_errors():
    with pytest.raises(SeqtoolError, match="expected KEY.PATH=VALUE"):
        parse_override("train.max_steps")
    with pytest.raises(SeqtoolError, match="is a value, not a section"):
        apply_overrides({"train": {"max_steps": 3}}, ["train.max_steps.x=1"])
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


def test_registry_rejects_duplicates_and_suggests():
    reg = Registry("thing")
    reg.register("alpha", config=dict)(lambda: None)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha", config=dict)(lambda: None)
    with pytest.raises(SeqtoolError, match="did you mean 'alpha'"):
        reg.get("alpah")
    assert {"rnnlm", "rnn_seq2seq"} <= set(MODELS.names())


# The data section as checkpoints before task-owned data specs stored it: every task's keys, the others unset.
FLAT_DATA = {"corpus": None, "pair": "de-en", "generate": None, "babi": None, "synthetic": None, "music": None,
             "train": None, "valid": None, "test": None, "max_len": 256, "block_len": 35, "prepared_dir": None,
             "encoding_errors": "strict", "workers": 0}  # workers: retired too


@pytest.mark.parametrize("task, data", [
    ("translation", {"generate": {"task": "num2words"}, "tokenizer": {"kind": "word"}}),
    ("synthetic", {"synthetic": {"kind": "copy"}}),
])
def test_stored_recipes_with_the_flat_data_section_still_load(tiny_recipe, task, data):
    from seqtool.commands.recipes import drop_retired, recipe_from_dict

    new = load_recipe(tiny_recipe).model_dump(mode="json")
    new.update(task=task, data=data)
    if task == "synthetic":
        new["model"], new["train"]["early_stopping"] = {"arch": "rnn_sequence"}, {"metric": "loss"}
    current = recipe_from_dict(new)
    old = {**new, "data": {**FLAT_DATA, **data}}
    with pytest.raises(SeqtoolError, match="is read by task"):
        recipe_from_dict(old)  # a user's recipe stays strict
    assert recipe_from_dict(drop_retired(old)) == current
    assert recipe_from_dict(drop_retired({**old, "decode": {"sample": True}})).decode.strategy == "sample"
