"""`seqtool export` end to end: a trained run exported to ONNX translates its test split, through
onnxruntime and seqtool's search, exactly as `seqtool translate` does (greedy and beam); the export
directory is refused where seqtool did not make it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqtool.commands.export import export_run, translate_exported
from seqtool.commands.translate import run_translate
from seqtool.errors import SeqtoolError
from tests.conftest import TINY_TRANSLATION, run_cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    (root / "tiny.yaml").write_text(TINY_TRANSLATION)
    out = run_cli("train", "tiny.yaml", "--set", "train.max_steps=60", "--set", "train.validate_every=60", cwd=root)
    assert out.returncode == 0, out.stderr
    out = run_cli("export", "-c", "runs/tiny", "-o", "tiny.onnx", "--format", "onnx", cwd=root)
    assert out.returncode == 0, out.stderr
    return root


@pytest.mark.parametrize("beam", [1, 5])
def test_the_onnx_export_translates_as_translate_does(exported, beam):
    source = exported / "runs" / "tiny" / "data" / "raw" / "test.src"
    run_translate([exported / "runs" / "tiny"], source, exported / f"out{beam}.txt", {"decode": {"beam": beam}},
                  device="cpu", seed=1, warn=print)
    ours = (exported / f"out{beam}.txt").read_text().splitlines()
    assert len(set(ours)) > 3  # several distinct translations, not one string repeated
    lines = source.read_text().splitlines()
    assert translate_exported(exported / "tiny.onnx", lines, {"beam": beam}) == ours


def test_the_export_directory_holds_graphs_tokenizer_and_manifest(exported):
    manifest = json.loads((exported / "tiny.onnx" / "manifest.json").read_text())
    assert manifest["arch"] == "rnn_seq2seq" and manifest["format"] == "onnx"
    for name in [*manifest["files"].values(), "tokenizer/vocabs.json", ".seqtool-export"]:
        assert (exported / "tiny.onnx" / name).is_file(), name


def test_a_directory_seqtool_did_not_make_is_refused(exported, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(SeqtoolError, match="not a seqtool export"):
        export_run(exported / "runs" / "tiny", "onnx", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(SeqtoolError, match="--format tflite: expected one of onnx, torchscript"):
        export_run(exported / "runs" / "tiny", "tflite", tmp_path / "x")
    with pytest.raises(SeqtoolError, match="--format ctranslate2: model.arch 'rnn_seq2seq' has no CTranslate2 model"):
        export_run(exported / "runs" / "tiny", "ctranslate2", tmp_path / "x")
    assert not (tmp_path / "x").exists()
