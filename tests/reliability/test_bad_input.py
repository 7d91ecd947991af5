"""A table of bad inputs: each ends with one line on stderr naming the file, line or key, exit code 2,
no traceback, and nothing half-written."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

from seqtool.cli import main
from tests.conftest import TINY_TRANSLATION, run_cli

pytestmark = pytest.mark.reliability


def invoke(args: list[str], capsys, monkeypatch, stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run the CLI in this process (fast), returning (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["seqtool", *args])
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def check_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("seqtool: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


RECIPE_CASES = {
    "malformed yaml": ("name: x\nmodel: arch: rnnlm\n", [], ["r.yaml:2", "malformed YAML"]),
    "not a mapping": ("- a\n- b\n", [], ["a recipe is a YAML mapping"]),
    "python tag": ("name: !!python/object/apply:os.system [echo]\n", [], ["malformed YAML"]),
    "unknown top key": (None, ["--set", "trian.max_steps=3"], ["trian: unknown key", "did you mean 'train'"]),
    "unknown nested key": (None, ["--set", "train.max_stepz=3"], ["train.max_stepz", "did you mean 'train.max_steps'"]),
    "wrong type": (None, ["--set", "train.max_steps=many"], ["train.max_steps", "valid integer"]),
    "out of range": (None, ["--set", "train.label_smoothing=1.5"], ["train.label_smoothing"]),
    "unknown model": (None, ["--set", "model.arch=mamba"], ["model.arch", "unknown model 'mamba'"]),
    "unknown model key": (None, ["--set", "model.hiden_dim=8"], ["model.hiden_dim", "did you mean 'model.hidden_dim'"]),
    "set without value": (None, ["--set", "train.max_steps"], ["--set", "KEY.PATH=VALUE"]),
    "set into a value": (None, ["--set", "seed.x=1"], ["seed is a value"]),
    "version": (None, ["--set", "recipe_version=7"], ["recipe_version 7 is not supported"]),
    "n_best above beam": (None, ["--set", "decode.n_best=9"], ["n_best (9) cannot exceed beam"]),
    "task mismatch": (None, ["--set", "task=lm"], ["cannot do task 'lm'"]),
    "bad enum": (None, ["--set", "data.tokenizer.kind=bpe"], ["data.tokenizer.kind"]),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_bad_recipes(case, tmp_path, capsys, monkeypatch):
    text, overrides, needles = RECIPE_CASES[case]
    path = tmp_path / "r.yaml"
    path.write_text(text if text is not None else TINY_TRANSLATION)
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(["train", str(path), *overrides], capsys, monkeypatch)
    check_error(code, err, *needles)
    assert not (tmp_path / "runs").exists()


def test_missing_recipe(tmp_path, capsys, monkeypatch):
    check_error(*invoke(["train", str(tmp_path / "nope.yaml")], capsys, monkeypatch)[::2], "nope.yaml: no such file")


def _write(path: Path, data: bytes | str) -> None:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


DATA_CASES = {
    "missing file": (lambda r: (r / "train.tgt").unlink(), [], ["data.train.tgt", "train.tgt: no such file"]),
    "length mismatch": (lambda r: _write(r / "train.tgt", "a\nb\n"), [], ["train.src has 40 lines", "train.tgt has 2"]),
    "non-utf8": (lambda r: _write(r / "train.src", b"1 2\n3 \xff 4\n" * 20), [],
                 ["train.src:2: invalid UTF-8 at byte 2"]),
    "empty train": (lambda r: (_write(r / "train.src", ""), _write(r / "train.tgt", "")), [],
                    ["train split has no usable sentence pairs"]),
    "empty valid": (lambda r: (_write(r / "valid.src", ""), _write(r / "valid.tgt", "")), [],
                    ["valid split has no usable sentence pairs"]),
    "all too long": (lambda r: None, ["--set", "data.max_len=1"], ["no usable sentence pairs", "data.max_len=1"]),
    "vocab too large": (lambda r: None, ["--set", "data.tokenizer.vocab_size=5000"],
                        ["vocab_size 5000 is larger than the training data allows"]),
    "sentencepiece vocab too large": (lambda r: None, ["--set", "data.tokenizer.kind=sentencepiece",
                                                       "--set", "data.tokenizer.vocab_size=5000"],
                                      ["vocab_size 5000 is larger than the training data allows"]),
    "no validation split": (lambda r: None, ["--set", "data.valid=null"],
                            ["data.valid: a validation split is required"]),
    "directory as file": (lambda r: ((r / "train.src").unlink(), (r / "train.src").mkdir()), [],
                          ["train.src: not a regular file"]),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_corpora(case, corpus, capsys, monkeypatch):
    damage, overrides, needles = DATA_CASES[case]
    damage(corpus)
    code, _, err = invoke(["train", "r.yaml", *overrides], capsys, monkeypatch)
    check_error(code, err, *needles)
    run = Path("runs/tiny")
    assert not (run / "checkpoints").exists()
    assert not (run / "data").exists() and not (run / "data.partial").exists()


def test_bad_bytes_can_be_skipped_or_replaced(corpus, capsys, monkeypatch):
    text = "".join(f"{i} {i + 1}\n" if i != 3 else "3 \xff\n" for i in range(40))
    _write(corpus / "train.src", text.encode("latin-1"))
    for mode in ("skip", "replace"):
        code, _, err = invoke(["prepare", "r.yaml", "--set", f"data.encoding_errors={mode}",
                               "--set", f"output_dir=runs/{mode}"], capsys, monkeypatch)
        assert code == 0, err
    import json

    manifest = json.loads(Path("runs/skip/data/manifest.json").read_text())
    assert manifest["splits"]["train"]["lines"] == 39
    assert json.loads(Path("runs/replace/data/manifest.json").read_text())["splits"]["train"]["lines"] == 40


def test_control_characters_and_huge_lines_are_absorbed(corpus, capsys, monkeypatch):
    lines = [f"{i} {i + 1}" for i in range(40)]
    lines[5] = "5 \x00\x07 6"
    lines[6] = "x " * 500_000
    _write(corpus / "train.src", "\n".join(lines) + "\n")
    code, _, err = invoke(["prepare", "r.yaml"], capsys, monkeypatch)
    assert code == 0, err
    import json

    train = json.loads(Path("runs/tiny/data/manifest.json").read_text())["splits"]["train"]
    assert train["dropped"] == 1  # the 1 MB line is longer than data.max_len


CHECKPOINT_CASES = {
    "text file": (b"not a checkpoint", "not a readable seqtool checkpoint"),
    "empty file": (b"", "not a readable seqtool checkpoint"),
    "truncated": (None, "not a readable seqtool checkpoint"),
    "foreign": ("foreign", "not a seqtool checkpoint"),
    "missing": ("missing", "no such checkpoint"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
@pytest.mark.parametrize("command", ["eval", "translate"])
def test_bad_checkpoints(case, command, trained, tmp_path, capsys, monkeypatch):
    content, needle = CHECKPOINT_CASES[case]
    path = tmp_path / "x.pt"
    if content is None:
        data = (trained / "runs" / "tiny" / "checkpoints" / "latest.pt").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif content == "foreign":
        torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    elif content != "missing":
        path.write_bytes(content)
    code, out, err = invoke([command, "--checkpoint", str(path)], capsys, monkeypatch, stdin=b"1 2\n")
    check_error(code, err, "x.pt", needle)
    assert out == ""


def test_run_dir_without_checkpoints(tmp_path, capsys, monkeypatch):
    code, _, err = invoke(["eval", "--checkpoint", str(tmp_path)], capsys, monkeypatch)
    check_error(code, err, "no checkpoints/best.pt")


def test_translate_rejects_binary_input(trained, capsys, monkeypatch):
    code, _, err = invoke(["translate", "-c", str(trained / "runs" / "tiny")], capsys, monkeypatch,
                          stdin=b"1 2\n\x89PNG\r\n\x1a\n\x00\x00")
    check_error(code, err, "<stdin>:2: invalid UTF-8 at byte 0")


def test_translate_empty_and_overlong_lines(trained, capsys, monkeypatch):
    run = str(trained / "runs" / "tiny")
    long_line = " ".join(["7"] * 400)
    code, out, err = invoke(["translate", "-c", run, "--beam", "2"], capsys, monkeypatch,
                            stdin=f"1 2\n\n{long_line}\n3\n".encode())
    assert code == 0, err
    assert len(out.splitlines()) == 4 and out.splitlines()[1] == ""
    assert "line 3: 400 source tokens, truncated to decode.max_src_len=256" in err


@pytest.mark.parametrize("args,needles", [
    (["--beam", "0"], ["decode.beam"]),
    (["--beam", "2", "--n-best", "3"], ["n_best (3) cannot exceed beam (2)"]),
    (["--top-p", "2"], ["decode.top_p"]),
])
def test_translate_bad_options(trained, capsys, monkeypatch, args, needles):
    code, _, err = invoke(["translate", "-c", str(trained / "runs" / "tiny"), *args], capsys, monkeypatch, stdin=b"1\n")
    check_error(code, err, *needles)


def test_eval_unknown_split(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    code, _, err = invoke(["eval", "-c", "runs/tiny", "--split", "dev"], capsys, monkeypatch)
    check_error(code, err, "--split dev", "have: train, valid, test")


@pytest.mark.parametrize("setup,args,needles", [
    ("mismatch", ["--ref", "ref.txt", "hyp.txt"], ["hyp.txt has 1 lines", "ref.txt has 2"]),
    ("ok", ["--ref", "ref.txt", "ref.txt", "--metrics", "bleu,meteor"], ["unknown metric meteor"]),
    ("ok", ["--ref", "missing.txt", "ref.txt"], ["missing.txt: no such file"]),
    ("binary", ["--ref", "ref.txt", "hyp.txt"], ["hyp.txt:1: invalid UTF-8"]),
])
def test_bad_score_inputs(tmp_path, capsys, monkeypatch, setup, args, needles):
    monkeypatch.chdir(tmp_path)
    Path("ref.txt").write_text("a b\nc d\n")
    Path("hyp.txt").write_bytes(b"\xfe\n\n" if setup == "binary" else b"a b\n")
    code, _, err = invoke(["score", *args], capsys, monkeypatch)
    check_error(code, err, *needles)


def test_run_dir_protection_and_resume_checks(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    code, _, err = invoke(["train", "tiny.yaml"], capsys, monkeypatch)
    check_error(code, err, "already holds a trained run", "--resume")
    code, _, err = invoke(["train", "tiny.yaml", "--resume", "--set", "output_dir=runs/other"], capsys, monkeypatch)
    check_error(code, err, "nothing to resume")
    code, _, err = invoke(["train", "tiny.yaml", "--resume", "--set", "model.hidden_dim=64"], capsys, monkeypatch)
    check_error(code, err, "model section differs")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(tiny_recipe, capsys, monkeypatch):
    code, _, err = invoke(["train", str(tiny_recipe), "--device", "cuda"], capsys, monkeypatch)
    check_error(code, err, "no CUDA device")


def test_a_real_process_prints_one_line(tmp_path):
    (tmp_path / "r.yaml").write_text(TINY_TRANSLATION)
    out = run_cli("train", "r.yaml", "--set", "model.arch=rnnlmm", cwd=tmp_path)
    check_error(out.returncode, out.stderr, "did you mean")


def test_checkpoint_of_another_model_and_task(trained, tmp_path, capsys, monkeypatch):
    payload = torch.load(trained / "runs" / "tiny" / "checkpoints" / "latest.pt", weights_only=True)
    payload["recipe"]["model"]["hidden_dim"] = 64  # weights of a 48-wide model under a 64-wide recipe
    torch.save(payload, tmp_path / "other.pt")
    code, _, err = invoke(["translate", "-c", str(tmp_path / "other.pt")], capsys, monkeypatch, stdin=b"1\n")
    check_error(code, err, "other.pt", "weights do not fit model 'rnn_seq2seq'")
    lm = dict(torch.load(trained / "runs" / "tiny" / "checkpoints" / "latest.pt", weights_only=True))
    lm["recipe"] = {**lm["recipe"], "task": "lm", "model": {"arch": "rnnlm"}, "data": {"corpus": "ptb"}}
    torch.save(lm, tmp_path / "lm.pt")
    code, _, err = invoke(["translate", "-c", str(tmp_path / "lm.pt")], capsys, monkeypatch, stdin=b"1\n")
    check_error(code, err, "lm.pt")


def test_checkpoint_tokenizer_names_cannot_escape(trained, tmp_path, capsys, monkeypatch):
    payload = torch.load(trained / "runs" / "tiny" / "checkpoints" / "latest.pt", weights_only=True)
    payload["tokenizer"] = {"../../escaped.txt": torch.zeros(3, dtype=torch.uint8)}
    torch.save(payload, tmp_path / "evil.pt")
    code, _, err = invoke(["translate", "-c", str(tmp_path / "evil.pt")], capsys, monkeypatch, stdin=b"1\n")
    check_error(code, err, "escapes its directory")
    assert not list(tmp_path.parent.glob("escaped.txt"))
