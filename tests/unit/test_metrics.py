"""`seqtool score` gives sacrebleu's numbers and signatures."""

import json
import shutil
import subprocess

import pytest

from seqtool.commands.score import score_files
from seqtool.evaluation.metrics import corpus_metrics
from tests.conftest import head, shared


def test_score_equals_the_sacrebleu_command(tmp_path):
    ref = head(shared("multi30k", "test2016.en"), tmp_path / "ref.en", 200)
    hyp = head(shared("multi30k", "val.en"), tmp_path / "hyp.en", 200)  # unrelated sentences: low, nonzero
    ours = score_files(hyp, ref, ["bleu", "chrf", "ter"])
    exe = shutil.which("sacrebleu")
    if exe is None:
        pytest.skip("sacrebleu command not on PATH")
    out = subprocess.run([exe, str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "ter", "-w", "4"],
                         capture_output=True, text=True, check=True).stdout
    theirs = {entry["name"].lower().rstrip("2"): entry for entry in json.loads(out)}
    for name in ("bleu", "chrf", "ter"):
        assert round(ours[name].score, 4) == pytest.approx(theirs[name]["score"])
        assert ours[name].signature == theirs[name]["signature"]
    assert 0 < ours["bleu"].score < 20


def test_identical_text_scores_100():
    lines = ["A man rides a horse .", "Two dogs play in the snow ."]
    result = corpus_metrics(lines, lines, ["bleu", "chrf"])
    assert result["bleu"].score == pytest.approx(100.0)
    assert result["chrf"].score == pytest.approx(100.0)
