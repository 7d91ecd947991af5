"""Quantized training (fake quantization with the STE) and int8 decoding: the quantizer's grid and
gradient, checkpoints of quantized models, the int8 conversion and `seqtool quantize`'s refusal."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from seqtool.cli import main
from seqtool.commands.quantize import quantize_run
from seqtool.commands.runs import load_run
from seqtool.decoding.int8 import int8_model
from seqtool.decoding.translate import translate_lines
from seqtool.errors import SeqtoolError
from seqtool.models.quantize import fake_quantize, fold_quantization, quantize_model
from tests.reliability.conftest import assert_one_line_error, trained  # noqa: F401 (a fixture)


def test_ste_gradient_is_identity_inside_the_clip_range_and_zero_outside():
    x = torch.tensor([-3.0, -0.9, -0.2, 0.0, 0.4, 0.99, 1.5], requires_grad=True)
    fake_quantize(x, 4, 1.0).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_k_bit_quantizer_emits_at_most_2_to_the_k_levels(bits):
    levels = fake_quantize(torch.linspace(-2, 2, 5001), bits, 1.5).unique()
    assert len(levels) == 2**bits
    assert levels.abs().max() == pytest.approx(1.5)


def test_one_bit_is_sign_binarization():
    x = torch.randn(1000)
    x = x[x != 0]
    assert torch.equal(fake_quantize(x, 1, 0.7), 0.7 * x.sign())


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.LSTM(16, 16, batch_first=True))


def test_quantized_layers_keep_k_bit_weights_per_row_and_learn_through_the_ste():
    model = quantize_model(_model(), weights=2, activations=4)
    out, _ = model(torch.randn(3, 5, 6))
    out.sum().backward()
    for weight in (model[0].weight, model[2].weight_ih_l0, model[2].weight_hh_l0):
        assert all(len(row.unique()) <= 4 for row in weight)
    assert model[0].parametrizations.weight.original.grad.abs().sum() > 0
    assert model[2].input_quantizer.clip > 0  # the running range followed the training batch


def test_quantized_checkpoint_round_trip_decodes_the_same():
    model = quantize_model(_model(), weights=4, activations=4)
    x = torch.randn(2, 4, 6)
    model(x)  # one training forward sets the activation ranges
    model.eval()
    again = quantize_model(_model(), weights=4, activations=4)
    again.load_state_dict(model.state_dict())
    again.eval()
    assert torch.equal(again(x)[0], model(x)[0])
    # folding keeps what the quantized model computes, as a plain float model
    folded_weights = fold_quantization(again)[0].weight
    assert isinstance(folded_weights, nn.Parameter) and len(folded_weights[0].unique()) <= 16


def test_int8_refused_off_a_cpu():
    with pytest.raises(SeqtoolError, match="CPU only"):
        int8_model(_model(), torch.device("cuda"))


def test_int8_round_trip_of_a_trained_translation_model(trained, tmp_path):  # noqa: F811
    run = trained / "runs" / "tiny"
    out = tmp_path / "int8.pt"
    result = quantize_run(run, out, max_drop=100.0, overrides={})
    assert result["int8"]["sentences"] == result["fp32"]["sentences"] == 60
    # a tiny model decodes 60 sentences in milliseconds of CPU: the ratio is reported, its size is the bench's
    assert result["int8"]["cpu_seconds"] >= 0 and result["cpu_speedup"] >= 0
    payload = torch.load(out, weights_only=True)  # no pickled modules in the int8 model
    assert payload["recipe"]["decode"]["precision"] == "int8" and "optimizer" not in payload
    int8, fp32 = load_run(out), load_run(run)
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in int8.model.modules())
    lines = [f"{n} {n + 7}" for n in range(20, 40)]
    translations = [[t.text for t in translate_lines(r.model, r.vocabs, lines, r.recipe.decode,
                                                     device=torch.device("cpu"))] for r in (fp32, int8)]
    assert sum(a == b for a, b in zip(*translations)) >= 0.8 * len(lines)


def test_quantize_refuses_a_bleu_drop_over_max_drop(trained, tmp_path, monkeypatch, capsys):  # noqa: F811
    """As a user runs it (in-process: the measurement is the cost, not a second interpreter)."""
    monkeypatch.chdir(trained)
    monkeypatch.setattr(sys, "argv", ["seqtool", "quantize", "-c", "runs/tiny", "--max-drop", "-1",
                                      "-o", str(tmp_path / "q.pt")])
    with pytest.raises(SystemExit) as stop:
        main()
    assert_one_line_error(stop.value.code, capsys.readouterr().err, "int8 loses", "--max-drop -1")
    assert not (tmp_path / "q.pt").exists()
