"""Seqtool deletes or replaces only what it made: directories that carry its manifest or run marker,
or its own staging names. A refused command leaves every file as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from seqtool.recipe.schema import own_directory
from seqtool.util.ownership import PREPARED_MARKER
from tests.reliability.test_bad_input import check_error, invoke

pytestmark = pytest.mark.reliability


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for directories)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def repo_like(corpus) -> Path:
    """The corpus fixture's tmp_path with a user's file in its data root, like a repository checkout."""
    (corpus / "README.md").write_text("the user's notes\n")
    return corpus.parent


@pytest.mark.parametrize("override,key", [
    ("name=.", "name"), ("name=..", "name"),
    ("output_dir=.", "output_dir"), ("output_dir=..", "output_dir"), ("output_dir=runs/..", "output_dir"),
    ("output_dir=''", "output_dir"),
    ("data.prepared_dir=.", "data.prepared_dir"), ("data.prepared_dir=..", "data.prepared_dir"),
    ("data.prepared_dir=''", "data.prepared_dir"),
])
@pytest.mark.parametrize("command", ["prepare", "train"])
def test_dot_names_are_refused(repo_like, capsys, monkeypatch, override, key, command):
    before = snapshot(repo_like)
    code, _, err = invoke([command, "r.yaml", "--set", override], capsys, monkeypatch)
    check_error(code, err, key)
    assert snapshot(repo_like) == before


@pytest.mark.parametrize("value", ["/", "//", "a/..", "./", "", "..", "../.."])
def test_the_root_and_dot_paths_name_no_directory(value):
    """The rule alone, on strings (nothing is pointed at the real root)."""
    with pytest.raises(ValueError, match="names no directory of its own"):
        own_directory(value)
    assert own_directory("../runs/x") == "../runs/x" and own_directory(None) is None


@pytest.mark.parametrize("prepared", ["data", "data/train.src", "."])
def test_a_prepared_dir_holding_an_input_is_refused(repo_like, capsys, monkeypatch, prepared):
    """The corpus folder itself, one of its files, or a folder above them: prepare would replace its input."""
    before = snapshot(repo_like)
    where = str((repo_like / prepared).resolve())
    code, _, err = invoke(["prepare", "r.yaml", "--set", f"data.prepared_dir={where}"], capsys, monkeypatch)
    check_error(code, err, "data.prepared_dir")
    assert snapshot(repo_like) == before


def test_a_directory_seqtool_did_not_make_is_never_replaced(repo_like, capsys, monkeypatch):
    mine = repo_like / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    before = snapshot(repo_like)
    code, _, err = invoke(["prepare", "r.yaml", "--set", "data.prepared_dir=mine"], capsys, monkeypatch)
    check_error(code, err, "mine", "not made by seqtool")
    for command in ("prepare", "train"):  # a run directory that is someone's folder
        code, _, err = invoke([command, "r.yaml", "--set", "output_dir=mine"], capsys, monkeypatch)
        check_error(code, err, "output_dir", "mine", "not a seqtool run")
    assert snapshot(repo_like) == before


def test_foreign_staging_names_are_not_removed(repo_like, capsys, monkeypatch):
    """`<dir>.partial` and `<dir>.old` are seqtool's names only when seqtool made them."""
    for suffix in ("partial", "old"):
        other = repo_like / f"prep.{suffix}"
        other.mkdir()
        (other / "thesis.tex").write_text("years of work\n")
        before = snapshot(repo_like)
        code, _, err = invoke(["prepare", "r.yaml", "--set", "data.prepared_dir=prep"], capsys, monkeypatch)
        check_error(code, err, f"prep.{suffix}", "not made by seqtool")
        assert snapshot(repo_like) == before
        shutil.rmtree(other)


def test_seqtool_still_replaces_what_it_made(repo_like, capsys, monkeypatch):
    for max_len in (256, 100):  # new settings: the old prepared directory (with its manifest) is replaced
        code, _, err = invoke(["prepare", "r.yaml", "--set", "data.prepared_dir=prep",
                               "--set", f"data.max_len={max_len}"], capsys, monkeypatch)
        assert code == 0, err
        assert f'"max_len": {max_len}' in (repo_like / "prep" / "manifest.json").read_text()
    assert sorted(p.name for p in repo_like.iterdir() if p.name.startswith("prep")) == ["prep"]


def test_a_manifest_marks_older_prepared_dirs_but_only_seqtools(repo_like, capsys, monkeypatch):
    """Prepared directories made before the marker file existed are known by seqtool's manifest; a web
    app's manifest.json is not seqtool's."""
    code, _, err = invoke(["prepare", "r.yaml", "--set", "data.prepared_dir=prep"], capsys, monkeypatch)
    assert code == 0, err
    (repo_like / "prep" / PREPARED_MARKER).unlink()
    code, _, err = invoke(["prepare", "r.yaml", "--set", "data.prepared_dir=prep", "--set", "data.max_len=99"],
                          capsys, monkeypatch)
    assert code == 0, err
    site = repo_like / "site"
    site.mkdir()
    (site / "manifest.json").write_text('{"name": "my app", "icons": []}')
    code, _, err = invoke(["prepare", "r.yaml", "--set", "data.prepared_dir=site"], capsys, monkeypatch)
    check_error(code, err, "site", "not made by seqtool")
    assert (site / "manifest.json").read_text() == '{"name": "my app", "icons": []}'


def test_output_dir_naming_a_file_is_one_line(repo_like, capsys, monkeypatch):
    (repo_like / "afile").write_text("x\n")
    before = snapshot(repo_like)
    for command in ("prepare", "train"):
        code, _, err = invoke([command, "r.yaml", "--set", "output_dir=afile"], capsys, monkeypatch)
        check_error(code, err, "output_dir", "afile", "not a directory")
    assert snapshot(repo_like) == before


def _copied_checkpoint(checkpoint: Path, tmp_path: Path) -> Path:
    """A checkpoint copied out of its run into `models/`, with someone's unrelated data/ beside it."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("unrelated\n")
    (tmp_path / "models").mkdir()
    return Path(shutil.copy(checkpoint, tmp_path / "models"))


def test_eval_of_a_copied_checkpoint_writes_nothing(trained, tmp_path, capsys, monkeypatch):
    copied = _copied_checkpoint(trained / "runs" / "tiny" / "checkpoints" / "best.pt", tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, out, err = invoke(["eval", "-c", str(copied)], capsys, monkeypatch)
    check_error(code, err, "best.pt", "no prepared data")
    assert out == "" and snapshot(tmp_path) == before


def test_eval_of_a_copied_checkpoint_reads_existing_prepared_data(trained, tmp_path, capsys, monkeypatch):
    """From the directory it was trained in, the checkpoint's recipe finds its prepared data, read only."""
    copied = _copied_checkpoint(trained / "runs" / "tiny" / "checkpoints" / "best.pt", tmp_path)
    monkeypatch.chdir(trained)
    before = snapshot(trained), snapshot(tmp_path)
    code, out, err = invoke(["eval", "-c", str(copied), "--json"], capsys, monkeypatch)
    assert code == 0, err
    assert '"bleu"' in out
    assert (snapshot(trained), snapshot(tmp_path)) == before


TOMITA = """
recipe_version: 1
name: tom
task: synthetic
data: {synthetic: {kind: tomita, grammar: 4, train: 64, valid: 16, test: 16, test_lengths: [5, 8]}}
model: {arch: rnn_sequence, cell: {name: sr_gru, centroids: 4}, hidden_dim: 8}
train: {batch_size: 16, max_steps: 2, validate_every: 2, checkpoint: {every: 2}, early_stopping: {metric: accuracy}}
log: {tensorboard: false, progress: none}
"""


def test_automaton_of_a_copied_checkpoint_writes_nothing(tmp_path, capsys, monkeypatch):
    """The same fault in another command: `automaton` prepared Tomita data beside a loose checkpoint."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text(TOMITA)
    code, _, err = invoke(["train", "t.yaml"], capsys, monkeypatch)
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copied = _copied_checkpoint(tmp_path / "runs" / "tom" / "checkpoints" / "latest.pt", elsewhere)
    monkeypatch.chdir(elsewhere)
    before = snapshot(elsewhere)
    code, _, err = invoke(["automaton", "-c", str(copied)], capsys, monkeypatch)
    check_error(code, err, "latest.pt", "no prepared data")
    assert snapshot(elsewhere) == before


def test_a_refused_resume_changes_nothing(corpus, capsys, monkeypatch):
    """Changed input data gives another tokenizer: the refusal comes before re-preparing or rewriting recipe.yaml."""
    code, _, err = invoke(["train", "r.yaml", "--set", "train.max_steps=4"], capsys, monkeypatch)
    assert code == 0, err
    run = Path("runs/tiny")
    before = snapshot(run)
    (corpus / "train.src").write_text("".join(f"{i} x{i} y\n" for i in range(40)))
    code, _, err = invoke(["train", "r.yaml", "--resume", "--set", "train.max_steps=8"], capsys, monkeypatch)
    check_error(code, err, "another tokenizer")
    assert snapshot(run) == before


def test_a_refused_resume_with_changed_settings_changes_nothing(corpus, capsys, monkeypatch):
    code, _, err = invoke(["train", "r.yaml", "--set", "train.max_steps=4"], capsys, monkeypatch)
    assert code == 0, err
    before = snapshot(Path("runs/tiny"))
    code, _, err = invoke(["train", "r.yaml", "--resume", "--set", "data.tokenizer.joint=true"], capsys, monkeypatch)
    check_error(code, err, "another tokenizer")
    assert snapshot(Path("runs/tiny")) == before



def test_a_prepared_dir_naming_a_run_is_refused(corpus, capsys, monkeypatch):
    """Another path: data.prepared_dir naming a trained run replaced the whole run, checkpoints and all."""
    code, _, err = invoke(["train", "r.yaml", "--set", "train.max_steps=2"], capsys, monkeypatch)
    assert code == 0, err
    before = snapshot(Path("runs"))
    code, _, err = invoke(["prepare", "r.yaml", "--set", "data.prepared_dir=runs/tiny"], capsys, monkeypatch)
    check_error(code, err, "runs/tiny", "not made by seqtool")
    assert snapshot(Path("runs")) == before
