"""Device paths: torch.compile gives eager's loss on CPU; CUDA paths run where a GPU exists."""

from __future__ import annotations

import pytest
import torch

from seqtool.data.batching import collate_pairs
from seqtool.data.datasets import ParallelSplit, Sequences
from seqtool.models.base import VocabSizes
from seqtool.models.recurrent.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from seqtool.training.trainer import LossModule


def _split() -> ParallelSplit:
    torch.manual_seed(0)
    rows = [torch.randint(4, 30, (n,)).numpy() for n in (5, 7, 3, 6)]
    flat = torch.cat([torch.from_numpy(r) for r in rows]).numpy()
    offsets = torch.tensor([0, 5, 12, 15, 21]).numpy()
    return ParallelSplit(Sequences(flat, offsets), Sequences(flat, offsets))


def _model() -> RNNSeq2Seq:
    torch.manual_seed(0)
    return RNNSeq2Seq(RNNSeq2SeqConfig(embed_dim=16, hidden_dim=16, dropout=0.0), VocabSizes(30, 30))


def test_compiled_loss_equals_eager_on_cpu():
    batch = collate_pairs(_split(), torch.arange(4).numpy())
    model = _model()
    eager = LossModule(model)(batch, 0.1)
    compiled = torch.compile(LossModule(model))(batch, 0.1)
    assert compiled.loss.item() == pytest.approx(eager.loss.item(), rel=1e-5)
    compiled.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_cpu_losses_agree():
    batch = collate_pairs(_split(), torch.arange(4).numpy())
    cpu = LossModule(_model())(batch, 0.0).loss.item()
    gpu_model = LossModule(_model().cuda())
    gpu = gpu_model(batch.to(torch.device("cuda")), 0.0).loss.item()
    assert gpu == pytest.approx(cpu, rel=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = gpu_model(batch.to(torch.device("cuda")), 0.0).loss.item()
    assert bf16 == pytest.approx(cpu, rel=2e-2)


@pytest.mark.parametrize("native", [True, False])
def test_precision_takes_bf16_only_where_the_device_computes_it(monkeypatch, native):
    from seqtool.util import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision.autocast_dtype("bf16", cpu) == (torch.bfloat16 if native else None)
    assert [precision.autocast_dtype(p, cpu) for p in ("auto", "fp32", "fp16")] == [None, None, None]
    assert [precision.autocast_dtype(p, cuda) for p in ("auto", "bf16", "fp16", "fp32")] == [
        torch.bfloat16, torch.bfloat16, torch.float16, None]


def test_fused_loss_under_bf16_autocast_stays_close_to_fp32():
    from torch import nn

    from seqtool.models.losses import output_loss

    torch.manual_seed(0)
    out = nn.Linear(64, 500)
    feats = torch.randn(300, 64, requires_grad=True)
    targets = torch.randint(4, 500, (300,))
    runs = []
    for enabled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            loss, nll = output_loss(feats, targets, out, 0.1)
        assert loss.dtype == torch.float32  # the loss itself is always summed in fp32
        loss.backward()
        runs.append((loss.item(), nll.item(), feats.grad.clone(), out.weight.grad.clone(), out.bias.grad.clone()))
        feats.grad = out.weight.grad = out.bias.grad = None
    (loss32, nll32, *grads32), (loss16, nll16, *grads16) = runs
    assert loss16 == pytest.approx(loss32, rel=1e-2) and nll16 == pytest.approx(nll32, rel=1e-2)
    for a, b in zip(grads32, grads16):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999
