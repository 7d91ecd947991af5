"""prepare -> train -> eval -> translate -> score through the real command line."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_help_lists_the_commands(tmp_path):
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    for command in ("prepare", "train", "eval", "translate", "score"):
        assert command in out.stdout


def test_translation_pipeline_end_to_end(tmp_path, tiny_recipe):
    prep = run_cli("prepare", str(tiny_recipe), cwd=tmp_path)
    assert prep.returncode == 0, prep.stderr
    again = run_cli("prepare", str(tiny_recipe), cwd=tmp_path)
    assert "up to date" in again.stderr

    train = run_cli("train", str(tiny_recipe), cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    result = json.loads(train.stdout)
    assert result["split"] == "test" and result["bleu"] > 5
    # where the time went: three validations and saves (steps 50, 100, 150) inside the loop
    seconds = result["seconds"]
    assert set(seconds) == {"startup", "train", "validate", "save", "other", "test"}
    assert seconds["train"] > 0 and seconds["validate"] > 0 and min(seconds.values()) >= 0  # a tiny save rounds to 0.0
    run = tmp_path / "runs" / "tiny"
    logged = f"time (s): startup {seconds['startup']:.1f}, train {seconds['train']:.1f}"
    assert logged in (run / "train.log").read_text()
    for name in ("recipe.yaml", "train.log", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/latest.pt"):
        assert (run / name).exists(), name

    evaluation = run_cli("eval", "--checkpoint", str(run), "--split", "test", "--json", cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads(evaluation.stdout)
    assert metrics["bleu"] == pytest.approx(result["bleu"])

    sources = (run / "data" / "refs" / "test.src").read_text()
    translated = run_cli("translate", "--checkpoint", str(run), "--beam", "3", cwd=tmp_path, stdin=sources)
    assert translated.returncode == 0, translated.stderr
    assert len(translated.stdout.splitlines()) == len(sources.splitlines())
    (tmp_path / "hyp.txt").write_text(translated.stdout)
    scored = run_cli("score", "--ref", str(run / "data" / "refs" / "test.tgt"), "hyp.txt", "--json", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    # the BLEU eval reports is the BLEU of translate + score on the same text
    assert json.loads(scored.stdout)["bleu"]["score"] == pytest.approx(round(metrics["bleu"], 1))


def test_translate_writes_files_and_nbest(tmp_path, tiny_recipe):
    assert run_cli("train", str(tiny_recipe), "--set", "train.max_steps=10", cwd=tmp_path).returncode == 0
    (tmp_path / "in.txt").write_text("1 2 3\n\n4 5\n")
    out = run_cli("translate", "-c", "runs/tiny", "-i", "in.txt", "-o", "out.txt", "--beam", "3", "--n-best", "2",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert len(lines) == 6 and [line.split(" ||| ")[0] for line in lines] == ["0", "0", "1", "1", "2", "2"]


def test_language_model_pipeline(tmp_path, ptb_slice):
    recipe = tmp_path / "lm.yaml"
    recipe.write_text("""# tiny PTB LM
name: lm
task: lm
data: {corpus: ptb, tokenizer: {kind: word, vocab_size: null}, block_len: 10}
model: {arch: rnnlm, embed_dim: 32, hidden_dim: 32, layers: 1}
train: {optimizer: {name: sgd, lr: 1.0}, batch_size: 10, max_steps: 60, validate_every: 30,
        early_stopping: {metric: ppl}, checkpoint: {every: 30}}
log: {tensorboard: false, every: 10}
""")
    env = {"SEQTOOL_DATA": str(ptb_slice)}
    train = run_cli("train", str(recipe), cwd=tmp_path, env=env)
    assert train.returncode == 0, train.stderr
    out = run_cli("eval", "--checkpoint", "runs/lm", "--json", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert metrics["words"] == metrics["tokens"]  # word level: every word and line end, once
    assert 10 < metrics["ppl_word"] < 3000
