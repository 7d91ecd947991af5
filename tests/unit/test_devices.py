"""Device paths: torch.compile gives eager's loss on CPU; CUDA paths run where a GPU exists."""

from __future__ import annotations

import pytest
import torch

from seqtool.data.batching import collate_pairs
from seqtool.data.datasets import ParallelSplit, Sequences
from seqtool.models.base import VocabSizes
from seqtool.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
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
