"""Values the schema used to accept and training could not take (seeds, sizes, fp16 on a CPU), and
running out of memory: each ends in one line naming the key."""

from __future__ import annotations

import pytest
import torch

import seqtool.decoding.translate as translate_module
from seqtool.models.base import Seq2SeqModel
from seqtool.tasks.translation import TranslationTask
from tests.reliability.conftest import assert_one_line_error
from tests.reliability.test_bad_input import check_error, invoke

pytestmark = pytest.mark.reliability


@pytest.mark.parametrize("override,key", [
    ("seed=-5", "seed"),
    (f"seed={2**64}", "seed"),
    ("data.generate.seed=-1", "data.generate.seed"),
    ("data.generate.train=2000000000", "data.generate.train"),
    ("decode.beam=10000", "decode.beam"),
    ("eval.valid_beam=10000", "eval.valid_beam"),
    ("train.batch_tokens=10000000000", "train.batch_tokens"),
])
def test_check_bounds_what_training_cannot_take(override, key, tiny_recipe, capsys, monkeypatch):
    code, _, err = invoke(["check", str(tiny_recipe), "--set", override], capsys, monkeypatch)
    check_error(code, err, f"{key}: Input should be")


def test_the_largest_seed_trains(tmp_path, tiny_recipe, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(["train", str(tiny_recipe), "--set", f"seed={2**64 - 1}", "--set", "train.max_steps=1"],
                          capsys, monkeypatch)
    assert code == 0, err


def test_translate_beam_beyond_the_bound(trained, capsys, monkeypatch):
    code, _, err = invoke(["translate", "-c", str(trained / "runs" / "tiny"), "--beam", "10000"], capsys, monkeypatch,
                          stdin=b"1 2\n")
    check_error(code, err, "decode.beam")


@pytest.mark.parametrize("key", ["train.precision", "decode.precision"])
def test_fp16_on_a_cpu_is_refused(key, tmp_path, tiny_recipe, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(["train", str(tiny_recipe), "--device", "cpu", "--set", f"{key}=fp16"], capsys, monkeypatch)
    check_error(code, err, f"{key}: fp16 needs a CUDA device")
    assert not (tmp_path / "runs").exists()


CPU_ALLOCATION = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                              "you tried to allocate 6000000000 bytes.")


def _fail_on_call(monkeypatch, owner, name: str, error: BaseException, after: int = 0) -> None:
    """Make owner.name raise `error` from its (after+1)-th call on: an allocation the machine refuses."""
    real, calls = getattr(owner, name), {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   CPU_ALLOCATION, MemoryError()])
def test_out_of_memory_while_training(error, tmp_path, tiny_recipe, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fail_on_call(monkeypatch, Seq2SeqModel, "loss", error, after=3)
    code, _, err = invoke(["train", str(tiny_recipe)], capsys, monkeypatch)
    assert_one_line_error(code, err, "out of memory while training", "lower train.batch_tokens")


def test_out_of_memory_while_validating(tmp_path, tiny_recipe, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fail_on_call(monkeypatch, TranslationTask, "validate", CPU_ALLOCATION)
    code, _, err = invoke(["train", str(tiny_recipe), "--set", "train.validate_every=2"], capsys, monkeypatch)
    assert_one_line_error(code, err, "out of memory while validating", "decode.batch_tokens", "eval.valid_beam")


@pytest.mark.parametrize("command", ["translate", "eval"])
def test_out_of_memory_while_decoding(command, trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    _fail_on_call(monkeypatch, translate_module, "search", MemoryError())
    code, out, err = invoke([command, "-c", "runs/tiny"], capsys, monkeypatch, stdin=b"1 2\n")
    check_error(code, err, "out of memory while", "decode.batch_tokens", "decode.beam")
    assert out == ""


def test_other_runtime_errors_are_not_called_memory(tmp_path, tiny_recipe, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fail_on_call(monkeypatch, Seq2SeqModel, "loss", RuntimeError("a bug"), after=3)
    with pytest.raises(RuntimeError, match="a bug"):
        invoke(["train", str(tiny_recipe)], capsys, monkeypatch)
