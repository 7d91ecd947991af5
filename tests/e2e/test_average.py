"""`seqtool average`: the mean of a run's checkpoints as a new checkpoint that `eval` reads."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from seqtool.commands.average import average_run
from seqtool.errors import SeqtoolError
from seqtool.training.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import TINY_TRANSLATION, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def trained(tmp_path):
    """A tiny GNMT trained for 20 steps, with checkpoints at steps 10 and 20."""
    recipe = yaml.safe_load(TINY_TRANSLATION)
    recipe["model"] = {"arch": "gnmt", "embed_dim": 8, "hidden_dim": 16, "encoder_layers": 2, "decoder_layers": 2}
    recipe["train"].update(max_steps=20, validate_every=10, checkpoint={"every": 10, "keep_last": 5})
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    out = run_cli("train", "tiny.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return tmp_path / "runs" / "tiny"


def test_average_of_two_is_the_mean_and_eval_reads_it(tmp_path, trained):
    out = run_cli("average", "-c", str(trained), "--last", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    written = json.loads(out.stdout)
    ckpt = trained / "checkpoints"
    assert written["output"] == str(ckpt / "avg_last2.pt") and written["step"] == 20
    a, b = (load_checkpoint(ckpt / f"step_000000{n}.pt")["model"] for n in (10, 20))
    averaged = load_checkpoint(ckpt / "avg_last2.pt")["model"]
    assert averaged.keys() == a.keys()
    for key in a:
        assert torch.allclose(averaged[key], (a[key] + b[key]) / 2, atol=1e-7), key
    assert not torch.equal(a["out.weight"], b["out.weight"])  # the two really differ

    evaluation = run_cli("eval", "-c", str(ckpt / "avg_last2.pt"), "--json", "--beam", "2", cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads(evaluation.stdout)
    assert metrics["step"] == 20 and 0 <= metrics["bleu"] <= 100


def test_named_files_and_clear_errors(tmp_path, trained):
    ckpt = trained / "checkpoints"
    named = [ckpt / "step_00000010.pt", ckpt / "step_00000020.pt"]
    result = average_run(named, None, 5, tmp_path / "avg.pt")
    assert result["averaged"] == [str(p) for p in named]
    with pytest.raises(SeqtoolError, match="cannot average the last 5"):
        average_run([], trained, 5, None)
    with pytest.raises(SeqtoolError, match="either checkpoint files or --checkpoint"):
        average_run(named, trained, 2, None)
    other = load_checkpoint(named[0])
    other["recipe"]["model"]["hidden_dim"] = 32
    save_checkpoint(tmp_path / "other.pt", other)
    with pytest.raises(SeqtoolError, match="another model"):
        average_run([named[0], tmp_path / "other.pt"], None, 2, tmp_path / "x.pt")
