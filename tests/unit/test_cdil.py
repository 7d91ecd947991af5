"""CDIL-CNN (seqtool/models/conv/cdil.py): circular padding wraps, the receptive field covers the
sequence, the TCN flag is causal, and a sequence's logits do not depend on what shares its batch."""

from __future__ import annotations

import re

import pytest
import torch

from seqtool.commands.recipes import recipe_from_dict
from seqtool.errors import SeqtoolError
from seqtool.models.base import VocabSizes
from seqtool.models.conv.cdil import CDIL, CDILConfig, covering_layers, receptive_field

N = 50


def model(**fields) -> CDIL:
    torch.manual_seed(0)
    return CDIL(CDILConfig(length=N, embed_dim=6, channels=8, **fields), VocabSizes(20, 3)).eval()


def reach(net: CDIL, position: int) -> torch.Tensor:
    """Which input positions the features at `position` depend on (bool, N)."""
    x = torch.randn(1, 6, N, requires_grad=True)
    net.blocks(x)[0, :, position].sum().backward()
    return x.grad[0].abs().sum(0) > 0


def test_circular_padding_wraps_around():
    one = model(layers=1)  # kernel 3, dilation 1: position 0 reads positions N-1, 0, 1
    assert reach(one, 0).nonzero().flatten().tolist() == [0, 1, N - 1]
    assert reach(model(layers=1, padding="zeros"), 0).nonzero().flatten().tolist() == [0, 1]


def test_the_receptive_field_covers_the_sequence():
    layers = covering_layers(3, N)
    assert receptive_field(3, layers) >= N > receptive_field(3, layers - 1)
    assert model().blocks.__len__() == layers and covering_layers(3, 1024) == 10
    assert reach(model(), 0).all() and reach(model(), N // 2).all()
    assert not reach(model(layers=layers - 1), 0).all()


def test_the_tcn_flag_is_causal_and_its_last_step_sees_everything():
    tcn = model(padding="causal", pool="last")
    assert not reach(tcn, 20)[21:].any() and reach(tcn, 20)[:21].all()
    assert reach(tcn, N - 1).all()


@pytest.mark.parametrize("fields", [{}, {"padding": "causal", "pool": "last"}, {"padding": "zeros"}])
def test_logits_do_not_depend_on_the_batch(fields):
    net = model(**fields)
    short, long = torch.randint(4, 20, (1, 17)), torch.randint(4, 20, (1, 40))
    alone = net(short, torch.ones_like(short, dtype=torch.bool))
    batch = torch.zeros(2, 40, dtype=torch.long)
    batch[0, :17], batch[1] = short[0], long[0]
    together = net(batch, batch != 0)
    torch.testing.assert_close(together[0], alone[0], rtol=1e-4, atol=1e-5)


def test_settings_the_model_cannot_keep_are_refused():
    with pytest.raises(ValueError, match="odd kernel"):
        CDILConfig(kernel=4)
    with pytest.raises(ValueError, match="wraps more than once"):
        CDILConfig(length=16, layers=6)
    problem = "model.length 512 is shorter than the data's longest sequence (1024)"
    with pytest.raises(SeqtoolError, match=re.escape(problem)):
        recipe_from_dict({"name": "x", "task": "classify", "data": {"xor": {"length": 1024}},
                          "model": {"arch": "cdil", "length": 512}})
