"""Edges of what a user can hand seqtool: nesting and duplicates in YAML, byte-order marks, a closed
stdout, unknown devices, recipes that never end, and files where directories belong (and back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from seqtool.data import textio
from seqtool.data.babi import parse_task_file
from seqtool.data.music import load_music
from seqtool.decoding.translate import CHUNK
from seqtool.errors import SeqtoolError
from tests.conftest import TINY_TRANSLATION
from tests.reliability.test_bad_input import check_error, invoke

pytestmark = pytest.mark.reliability
BOM = "\ufeff"


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


RECIPE_CASES = {
    "nested lists": ("[" * 10_000, ["r.yaml:1", "nested deeper than"]),
    "nested mappings": ("a: " + "{b: " * 10_000, ["r.yaml:1", "nested deeper than"]),
    "repeated section": (TINY_TRANSLATION + "train: {max_steps: 3}\n",
                         ["r.yaml:20", "duplicate key 'train'", "line 10"]),
    "repeated key": (TINY_TRANSLATION.replace("  max_steps: 150\n", "  max_steps: 150\n  max_steps: 20\n"),
                     ["r.yaml:14", "duplicate key 'max_steps'", "line 13"]),
    "non-utf8": ("name: tiny\nseed: \udcff\n", ["r.yaml:2", "invalid UTF-8"]),
    "empty": ("", ["r.yaml: empty recipe"]),
    "only a comment": ("# nothing yet\n", ["r.yaml: empty recipe"]),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_odd_recipes(case, tmp_path, capsys, monkeypatch):
    text, needles = RECIPE_CASES[case]
    code, out, err = invoke(["check", str(_recipe(tmp_path, text))], capsys, monkeypatch)
    check_error(code, err, *needles)
    assert out == ""


def test_a_merge_key_may_still_be_overridden(tmp_path, capsys, monkeypatch):
    path = _recipe(tmp_path, TINY_TRANSLATION.replace("decode: {beam: 3,", "decode: {<<: {beam: 3}, beam: 4,"))
    code, out, err = invoke(["check", str(path)], capsys, monkeypatch)
    assert code == 0, err
    assert "beam: 4" in out


SET_CASES = {
    "python tag": ("seed=!!python/object/apply:os.system [echo hi]", ["--set seed", "python/object"]),
    "deep value": ("seed=" + "[" * 5_000, ["--set seed", "nested deeper than"]),
    "infinite float": ("train.optimizer.lr=.inf", ["train.optimizer.lr", "finite number"]),
    "nan in a list": ("train.optimizer.betas=[.nan, 0.9]", ["train.optimizer.betas.0", "finite number"]),
    "nan in a model": ("model.dropout=.nan", ["model.dropout", "finite number"]),
    "unknown BLEU tokenizer": ("eval.tokenize=13b", ["eval.tokenize", "not a sacrebleu tokenizer"]),
    "duplicate in value": ("train={max_steps: 3, max_steps: 4}", ["--set train", "duplicate key 'max_steps'"]),
}


@pytest.mark.parametrize("case", sorted(SET_CASES))
def test_odd_set_values(case, tiny_recipe, capsys, monkeypatch):
    override, needles = SET_CASES[case]
    code, out, err = invoke(["check", str(tiny_recipe), "--set", override], capsys, monkeypatch)
    check_error(code, err, *needles)


def test_set_mapping_merges_into_the_section(tiny_recipe, capsys, monkeypatch):
    code, out, err = invoke(["check", str(tiny_recipe), "--set", "train={max_steps: 7, accumulate: 2}"],
                            capsys, monkeypatch)
    assert code == 0, err
    assert "max_steps: 7" in out and "accumulate: 2" in out
    assert "batch_tokens: 600" in out and "lr: 0.01" in out  # the recipe's other train keys stay


def _slow_fifo(path: Path, data: bytes) -> threading.Thread:
    """A FIFO at `path` fed `data` by a thread (like a shell's process substitution)."""
    try:
        os.mkfifo(path)
    except (OSError, AttributeError):
        pytest.skip("cannot make a FIFO here")

    def feed() -> None:
        try:
            with open(path, "wb") as handle:
                for start in range(0, len(data), 1 << 16):
                    handle.write(data[start:start + (1 << 16)])
        except BrokenPipeError:  # the reader stopped early, as it should
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    return writer


def test_recipe_size_is_bounded(tmp_path, capsys, monkeypatch):
    huge = b"# " + b"x" * (2 << 20) + b"\n" + TINY_TRANSLATION.encode()
    (tmp_path / "big.yaml").write_bytes(huge)
    check_error(*invoke(["check", str(tmp_path / "big.yaml")], capsys, monkeypatch)[::2], "big.yaml", "larger than")
    writer = _slow_fifo(tmp_path / "pipe.yaml", huge)
    check_error(*invoke(["check", str(tmp_path / "pipe.yaml")], capsys, monkeypatch)[::2], "pipe.yaml",
                "larger than")
    writer.join(timeout=10)
    assert not writer.is_alive()


def test_recipe_from_a_fifo_is_read(tmp_path, capsys, monkeypatch):
    writer = _slow_fifo(tmp_path / "pipe.yaml", TINY_TRANSLATION.encode())
    code, out, err = invoke(["check", str(tmp_path / "pipe.yaml")], capsys, monkeypatch)
    writer.join(timeout=10)
    assert code == 0, err
    assert "name: tiny" in out


def test_directory_where_a_file_belongs(tmp_path, trained, capsys, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "ref.txt").write_text("a b\n")
    check_error(*invoke(["check", str(folder)], capsys, monkeypatch)[::2], "folder", "cannot read")
    check_error(*invoke(["score", str(folder), "-r", "ref.txt"], capsys, monkeypatch)[::2], "folder", "cannot read")
    check_error(*invoke(["score", str(tmp_path / "ref.txt"), "-r", str(folder)], capsys, monkeypatch)[::2],
                "folder", "cannot read")
    code, _, err = invoke(["translate", "-c", str(trained / "runs" / "tiny"), "-i", str(folder)], capsys, monkeypatch)
    check_error(code, err, "folder", "cannot read")


def test_endless_lines_are_refused(trained, corpus, capsys, monkeypatch):
    """A line without end (a binary file, /dev/zero) fails by name instead of filling memory."""
    monkeypatch.setattr(textio, "MAX_LINE_BYTES", 1 << 20)
    endless = b"1 2\n" + b"7" * (2 << 20)
    Path("endless.txt").write_bytes(endless)
    Path("ok.txt").write_text("1 2\n")
    run = str(trained / "runs" / "tiny")
    check_error(*invoke(["translate", "-c", run, "-i", "endless.txt"], capsys, monkeypatch)[::2],
                "endless.txt:2: a line longer than 1 MiB")
    check_error(*invoke(["translate", "-c", run], capsys, monkeypatch, stdin=endless)[::2],
                "<stdin>:2: a line longer than 1 MiB")
    check_error(*invoke(["score", "ok.txt", "-r", "endless.txt"], capsys, monkeypatch)[::2],
                "endless.txt:2: a line longer than 1 MiB")
    (corpus / "train.src").write_bytes(endless)
    check_error(*invoke(["prepare", "r.yaml"], capsys, monkeypatch)[::2], "train.src:2: a line longer than 1 MiB")


def test_bom_does_not_change_a_score(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = "the cat sat on the mat\na dog ran in the park today\n"
    Path("ref.txt").write_text(text)
    Path("hyp.txt").write_text(BOM + text)
    for args in (["hyp.txt", "-r", "ref.txt"], ["ref.txt", "-r", "hyp.txt"]):
        code, out, err = invoke(["score", *args, "--json", "--metrics", "bleu,chrf,ter"], capsys, monkeypatch)
        assert code == 0, err
        scores = json.loads(out)
        assert scores["bleu"]["score"] == 100 and scores["chrf"]["score"] == 100 and scores["ter"]["score"] == 0


def _prepared(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def test_bom_in_a_corpus_prepares_the_same(corpus, capsys, monkeypatch):
    assert invoke(["prepare", "r.yaml", "--set", "output_dir=runs/plain"], capsys, monkeypatch)[0] == 0
    for name in ("train.src", "train.tgt", "valid.src"):
        lines = (corpus / name).read_text().splitlines(keepends=True)
        lines[20:20] = [BOM]  # as `cat` of two files that start with one leaves it
        (corpus / name).write_text(BOM + "".join(lines))
    code, _, err = invoke(["prepare", "r.yaml", "--set", "output_dir=runs/bom"], capsys, monkeypatch)
    assert code == 0, err
    assert _prepared(Path("runs/bom/data")) == _prepared(Path("runs/plain/data"))


def test_bom_in_translate_input_and_recipe(trained, tmp_path, capsys, monkeypatch):
    run = str(trained / "runs" / "tiny")
    lines = "1 2\n3\n"
    (tmp_path / "plain.txt").write_text(lines)
    (tmp_path / "bom.txt").write_text(BOM + lines)
    outputs = []
    for args, stdin in ((["-i", str(tmp_path / "plain.txt")], None), (["-i", str(tmp_path / "bom.txt")], None),
                        ([], (BOM + lines).encode())):
        code, out, err = invoke(["translate", "-c", run, "--beam", "2", "--n-best", "2", *args], capsys, monkeypatch,
                                stdin=stdin)
        assert code == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1] == outputs[2]
    path = _recipe(tmp_path, BOM + TINY_TRANSLATION)
    code, out, err = invoke(["check", str(path)], capsys, monkeypatch)
    assert code == 0, err


def test_babi_and_music_files_take_a_bom_and_refuse_what_is_not_text(tmp_path):
    story = "1 Mary went home.\n2 Where is Mary?\thome\t1\n"
    (tmp_path / "bom.txt").write_bytes((BOM + story).encode())
    assert parse_task_file(tmp_path / "bom.txt").questions[0].answer == "home"
    (tmp_path / "bytes.txt").write_bytes(story.encode() + b"3 Mary \xff.\n")
    with pytest.raises(SeqtoolError, match="bytes.txt:3: invalid UTF-8 at byte 7"):
        parse_task_file(tmp_path / "bytes.txt")
    (tmp_path / "digits.txt").write_text("\u00b2 Mary went home.\n")  # isdigit() but no int()
    with pytest.raises(SeqtoolError, match="digits.txt:1: expected 'ID statement'"):
        parse_task_file(tmp_path / "digits.txt")
    pieces = json.dumps({s: [[[60], [62]]] for s in ("train", "valid", "test")})
    (tmp_path / "music.json").write_text(BOM + pieces)
    assert load_music(tmp_path / "music.json", 21, 108)["test"].targets.shape == (2, 88)
    with pytest.raises(SeqtoolError, match="data.music.file: .*: cannot read"):
        load_music(tmp_path, 21, 108)
    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(SeqtoolError, match="deep.json: nested too deeply"):
        load_music(tmp_path / "deep.json", 21, 108)


def _closed_pipe_run(args: list[str], cwd: Path, first: bytes = b"", rest: bytes = b"",
                     lines_read: int = 0) -> tuple[int, str]:
    """Run seqtool with stdout into a pipe that its reader closes after `lines_read` lines; stdin gets
    `first`, and `rest` only once stdout is closed, so output is still to come when it closes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "seqtool", *args], cwd=cwd, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    feeder = threading.Thread(target=proc.stdin.write, args=(first,), daemon=True)
    feeder.start()
    for _ in range(lines_read):
        assert proc.stdout.readline()
    proc.stdout.close()
    feeder.join()
    try:
        proc.stdin.write(rest)
        proc.stdin.close()
    except BrokenPipeError:  # seqtool ended without reading it
        pass
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), err


@pytest.mark.parametrize("n_best", [1, 2])
def test_translate_into_a_closed_pipe_exits_quietly(trained, n_best):
    chunk = "".join(f"{i % 100} {i % 7}\n" for i in range(CHUNK)).encode()  # one chunk is decoded, then written
    args = ["translate", "-c", "runs/tiny", "--beam", str(n_best), "--n-best", str(n_best)]
    code, err = _closed_pipe_run(args, trained, first=chunk, rest=b"1 2\n", lines_read=1)
    assert (code, err) == (0, "")


@pytest.mark.parametrize("args", [["keys"], ["check", "r.yaml"], ["score", "r.yaml", "-r", "r.yaml"]])
def test_other_commands_into_a_closed_pipe_exit_quietly(args, tmp_path):
    (tmp_path / "r.yaml").write_text(TINY_TRANSLATION)
    assert _closed_pipe_run(args, tmp_path) == (0, "")


@pytest.mark.parametrize("args,needles", [
    (["tranlate"], ["No such command 'tranlate'", "Did you mean 'translate'"]),
    (["score", "hyp.txt"], ["Missing option '--ref'", "see seqtool score --help"]),
    (["translate", "--bem", "3"], ["No such option: --bem", "--beam"]),
    (["average", "--last", "0"], ["'--last'", "greater than or equal to 1"]),
    (["keys", "extra"], ["unexpected extra argument"]),
    (["translate", "--sample", "--seed", str(2**64)], ["'--seed'", "less than or equal to"]),
    (["score", "hyp.txt", "-r", "hyp.txt", "--tokenize", "13b"], ["--tokenize 13b: not a sacrebleu tokenizer"]),
])
def test_usage_errors_are_one_line(args, needles, capsys, monkeypatch):
    check_error(*invoke(args, capsys, monkeypatch)[::2], *needles)


def test_no_command_still_shows_the_help(capsys, monkeypatch):
    code, out, err = invoke([], capsys, monkeypatch)
    assert "translate" in out + err and "Traceback" not in err


@pytest.mark.parametrize("command", ["train", "eval", "translate", "automaton"])
def test_unknown_device_is_one_line(command, trained, capsys, monkeypatch):
    target = [str(trained / "tiny.yaml")] if command == "train" else ["-c", str(trained / "runs" / "tiny")]
    code, out, err = invoke([command, *target, "--device", "gpu0"], capsys, monkeypatch, stdin=b"1\n")
    check_error(code, err, "--device gpu0", "auto, cpu, cuda")


def test_data_workers_is_gone_but_old_checkpoints_load(trained, tmp_path, capsys, monkeypatch):
    code, _, err = invoke(["check", str(trained / "tiny.yaml"), "--set", "data.workers=2"], capsys, monkeypatch)
    check_error(code, err, "data.workers: unknown key")
    payload = torch.load(trained / "runs" / "tiny" / "checkpoints" / "latest.pt", weights_only=True)
    payload["recipe"]["data"]["workers"] = 0  # what every checkpoint written before the key went holds
    torch.save(payload, tmp_path / "old.pt")
    code, out, err = invoke(["translate", "-c", str(tmp_path / "old.pt")], capsys, monkeypatch, stdin=b"1 2\n")
    assert code == 0, err
    assert len(out.splitlines()) == 1
