"""End-to-end memory networks: the paper's position encoding on a hand-worked example, the parameter
sharing each tying mode claims, the linear-start switch (and its checkpointed state), random-noise
slots, the LM's banded memory against explicit windows, and a tiny model learning a bAbI task."""

from __future__ import annotations

import json

import pytest
import torch

from seqtool.commands.recipes import recipe_from_dict
from seqtool.errors import SeqtoolError
from seqtool.models.memory.memn2n import (
    LinearStart,
    MemN2N,
    MemN2NConfig,
    MemN2NLM,
    MemN2NLMConfig,
    encode_sentences,
    position_coefficients,
    sentence_bags,
)
from tests.conftest import shared


def test_position_encoding_matches_the_paper_on_a_hand_worked_example():
    # l_kj = (1 - j/J) - (k/d)(1 - 2j/J). For J = 3, d = 4, in twelfths (rows k = 1..4, columns j = 1..3):
    #   k=1: 7 5 3 | k=2: 6 6 6 | k=3: 5 7 9 | k=4: 4 8 12
    # Words 4, 5, 6 are the all-ones vector times 1, 10, 100, so m_k = (l_k1 + 10 l_k2 + 100 l_k3):
    #   (7 + 50 + 300)/12, (6 + 60 + 600)/12, (5 + 70 + 900)/12, (4 + 80 + 1200)/12.
    # A one-word sentence (J = 1) has l_k1 = k/d: word 5 gives 10 * (1/4, 2/4, 3/4, 1).
    words = torch.zeros(7, 4)
    words[4], words[5], words[6] = 1.0, 10.0, 100.0
    tokens = torch.tensor([[4, 5, 6, 0, 0], [5, 0, 0, 0, 0]])
    got = encode_sentences(words, sentence_bags(tokens, 7, "position"), position_coefficients(4))
    expected = torch.tensor([[357 / 12, 666 / 12, 975 / 12, 1284 / 12], [2.5, 5.0, 7.5, 10.0]])
    assert torch.allclose(got, expected)
    bow = encode_sentences(words, sentence_bags(tokens, 7, "bow"), None)
    assert torch.allclose(bow, torch.tensor([[111.0] * 4, [10.0] * 4]))


def test_absolute_position_encoding_matches_the_authors_formula():
    # l_kj = 1 + 4 (k - 5/2)(j - (J+1)/2) / (4 J) with d = 4 and J = 3 (the span, not the sentence length):
    #   k=1: 3/2 1 1/2 | k=2: 7/6 1 5/6 | k=3: 5/6 1 7/6 | k=4: 1/2 1 3/2
    # so words 1, 10, 100 give 61.5, 94.5, 127.5, 160.5; a one-word sentence is weighed at j = 1 all the same.
    words = torch.zeros(7, 4)
    words[4], words[5], words[6] = 1.0, 10.0, 100.0
    tokens = torch.tensor([[4, 5, 6, 0, 0], [5, 0, 0, 0, 0]])
    coefficients = position_coefficients(4, "position_absolute", span=3)
    got = encode_sentences(words, sentence_bags(tokens, 7, "position_absolute", span=3), coefficients)
    expected = torch.tensor([[61.5, 94.5, 127.5, 160.5], [15.0, 35 / 3, 25 / 3, 5.0]])
    assert torch.allclose(got, expected)


def _qa(**options) -> MemN2N:
    return MemN2N(MemN2NConfig(embed_dim=8, memory_size=6, **options), vocab=20)


def test_adjacent_tying_shares_the_claimed_tensors():
    model = _qa(hops=3, tying="adjacent")
    assert len(model.embeddings) == 4  # K + 1 distinct embeddings
    assert model.query_embedding() is model.memory_input(0)  # B = A^1
    for k in range(2):  # A^{k+1} = C^k, words and temporal vectors alike
        assert model.memory_input(k + 1).words is model.memory_output(k).words
        assert model.memory_input(k + 1).time is model.memory_output(k).time
    assert model.answer_weight() is model.memory_output(2).words  # W^T = C^K
    assert all(model.memory_input(k) is not model.memory_output(k) for k in range(3))
    assert model.H is None


def test_layerwise_tying_shares_the_claimed_tensors():
    model = _qa(hops=3, tying="layerwise")
    assert len(model.embeddings) == 3  # B, A, C
    for k in range(3):
        assert model.memory_input(k).words is model.memory_input(0).words
        assert model.memory_output(k).time is model.memory_output(0).time
    assert model.memory_input(0) is not model.memory_output(0)
    assert model.query_embedding() is not model.memory_input(0)
    assert model.answer_weight() is model.W and model.H.weight.shape == (8, 8)
    vd, md = 20 * 8, 6 * 8
    assert sum(p.numel() for p in model.parameters()) == 3 * (vd + md) + 8 * 8 + vd


def _story():
    torch.manual_seed(0)
    story = torch.randint(4, 20, (3, 5, 4))
    story[0, 3:] = 0  # a story of three statements
    story[1, :, 2:] = 0
    return story, torch.randint(4, 20, (3, 3))


def test_linear_start_removes_the_softmax_until_validation_stalls():
    model = _qa(hops=2, linear_start=True, linear_start_patience=2, empty_slots_attend=False).eval()
    story, query = _story()
    _, attention = model(story, query)
    assert not torch.allclose(attention.sum(-1), torch.ones(3, 2))  # raw scores u . m_i
    assert (attention[0, :, 3:] == 0).all()  # empty slots contribute nothing
    switch = model.linear_start
    assert model.schedule_clock(700) == (0, 0.5)  # the paper's LS: lr 0.005 against 0.01, not decayed
    for loss in (2.0, 1.5, 1.6):  # one validation without a lower loss: patience 2 not reached
        switch.observe(loss)
    assert switch.linear and int(switch.phase) == LinearStart.LINEAR
    switch.observe(1.55)
    assert int(switch.phase) == LinearStart.ASKED
    assert switch.linear and not torch.allclose(model(story, query)[1].sum(-1), torch.ones(3, 2))  # eval: unchanged

    resumed = _qa(hops=2, linear_start=True, linear_start_patience=2, empty_slots_attend=False)
    resumed.load_state_dict(model.state_dict())  # the switch travels in the checkpointed weights
    for net in (model, resumed):
        net.train()(story, query)  # the next training step re-inserts the softmaxes
        _, attention = net.eval()(story, query)
        assert not net.linear_start.linear
        assert net.schedule_clock(900) == (0, 1.0) and net.schedule_clock(950) == (50, 1.0)  # a fresh schedule
        assert torch.allclose(attention.sum(-1), torch.ones(3, 2))
        assert (attention[0, :, 3:] == 0).all()
    restored = _qa(hops=2, linear_start=True, linear_start_patience=2)
    restored.load_state_dict(model.state_dict())
    assert restored.schedule_clock(950) == (50, 1.0)  # the switch's step is checkpointed too


def test_empty_slots_of_the_fixed_memory_take_attention_with_score_zero():
    model = _qa(hops=1, temporal=False).eval()  # memory_size 6; the stories hold 3, 5 and 5 statements
    story, query = _story()
    _, attention = model(story, query)
    with torch.no_grad():
        m = model.memory_input(0)
        u = encode_sentences(model.query_embedding().words, sentence_bags(query, 20), model.coefficients)
        for row, n in enumerate((3, 5, 5)):
            scores = encode_sentences(m.words, sentence_bags(story[row, :n], 20), model.coefficients) @ u[row]
            # the 6 - n empty slots are zero vectors: score 0, weight exp(0) each, nothing read from them
            expected = scores.exp() / (scores.exp().sum() + 6 - n)
            assert torch.allclose(attention[row, 0, :n], expected, atol=1e-6)
            assert (attention[row, 0, n:] == 0).all()
    masked = _qa(hops=1, temporal=False, empty_slots_attend=False).eval()
    masked.load_state_dict(model.state_dict())
    assert torch.allclose(masked(story, query)[1].sum(-1), torch.ones(3, 1))  # only statements share it


def test_linear_start_for_a_fixed_number_of_updates_ignores_validation():
    model = _qa(hops=2, linear_start=True, linear_start_steps=3)
    switch = model.linear_start
    for loss in (2.0, 2.5, 3.0, 3.5):  # stalled validation losses do not end it
        switch.observe(loss)
    story, query = _story()
    clocks = []
    for step in range(5):
        model.train()(story, query)  # the training forward of update `step`
        clocks.append(model.schedule_clock(step))
    # three linear updates at the LS rate, then the softmaxes return with a fresh schedule
    assert clocks == [(0, 0.5), (0, 0.5), (0, 0.5), (0, 1.0), (1, 1.0)]


def test_random_noise_spreads_slots_while_training_only():
    model = _qa(random_noise=0.5)
    mask = torch.zeros(200, 6, dtype=torch.bool)
    counts = torch.randint(1, 7, (200,))
    mask[torch.arange(6) < counts.unsqueeze(1)] = True
    torch.manual_seed(0)
    slots = model.train()._slots(mask)
    for row, n in zip(slots, counts.tolist()):
        used = row[:n]
        assert ((used[1:] > used[:-1]) | (used[1:] == 5)).all()  # in order; the last slot caps
        assert used.max() < n + -(-n // 2)  # drawn from 0..n+k-1, k <= ceil(0.5 n)
    assert (slots[:, 0] > 0).any()  # some gaps really appear
    assert torch.equal(model.eval()._slots(mask), torch.arange(6).expand(200, 6))


def test_lm_memory_equals_explicit_windows_and_carries_state():
    torch.manual_seed(0)
    cfg = MemN2NLMConfig(embed_dim=6, linear_dim=3, hops=2, memory_size=4)
    model = MemN2NLM(cfg, 30).eval()
    x = torch.randint(4, 30, (2, 7))
    full, state = model(x)
    assert torch.equal(state, x[:, -4:])
    history = torch.cat([torch.zeros(2, 4, dtype=torch.long), x], 1)
    for b in range(2):
        for t in range(7):
            window = history[b, t + 1 : t + 5]  # the 4 words ending with x[b, t]
            keep = window != 0
            m = model.A.words[window] + model.A.time
            c = model.C.words[window] + model.C.time
            u = torch.full((6,), 0.1)
            for _ in range(2):
                p = torch.softmax((m @ u)[keep], 0)
                h = model.H(u) + p @ c[keep]
                u = torch.cat([h[:3], torch.relu(h[3:])])
            assert torch.allclose(full[b, t], u, atol=1e-5)
    first, carried = model(x[:, :3])
    second, _ = model(x[:, 3:], carried)
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-5)


def _qa_recipe(tmp_path, **babi) -> dict:
    return {"name": "qa", "task": "qa", "output_dir": str(tmp_path / "run"),
            "data": {"babi": {"set": "en", "tasks": [1], "memory_size": 10, **babi},
                     "tokenizer": {"kind": "word", "vocab_size": None, "lowercase": True}},
            "model": {"arch": "memn2n", "embed_dim": 20, "hops": 2, "memory_size": 10, "linear_start": True,
                      "random_noise": 0.1},
            "train": {"optimizer": {"name": "sgd", "lr": 0.5}, "batch_size": 32, "max_steps": 580,
                      "clip_norm": 1.25, "validate_every": 29, "early_stopping": {"metric": "accuracy"}},
            "log": {"tensorboard": False, "progress": "none"}}


def test_recipe_errors_name_the_key(tmp_path):
    raw = _qa_recipe(tmp_path, memory_size=50)
    with pytest.raises(SeqtoolError, match=r"model.memory_size \(10\) must be at least data.babi.memory_size"):
        recipe_from_dict(raw)
    with pytest.raises(SeqtoolError, match="distinct numbers from 1 to 20"):
        recipe_from_dict(_qa_recipe(tmp_path, tasks=[0, 21]))
    lm = {**_qa_recipe(tmp_path), "task": "lm", "model": {"arch": "memn2n_lm"}, "train": {}}
    with pytest.raises(SeqtoolError, match="data.babi is read by task 'qa'"):
        recipe_from_dict(lm)


def test_tiny_memory_network_learns_babi_task_1(tmp_path, monkeypatch):
    from seqtool.commands.evaluate import evaluate_run, format_result
    from seqtool.commands.train import train_recipe

    monkeypatch.setenv("SEQTOOL_DATA", str(shared("babi").parent))
    recipe = recipe_from_dict(_qa_recipe(tmp_path))
    result = train_recipe(recipe)
    curve = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [row for row in curve if row["split"] == "valid"]
    assert valid[0]["accuracy"] < 0.6 and max(r["accuracy"] for r in valid) > 0.9
    assert valid[0]["linear"] == 1.0 and valid[-1]["linear"] == 0.0  # linear start ended on a plateau
    assert result["split"] == "test" and result["error_qa1"] < 10.0
    evaluated = evaluate_run(tmp_path / "run", "test", {}, "cpu")
    assert evaluated["mean_error"] == pytest.approx(result["mean_error"])
    table = format_result(evaluated)
    assert " 1 single-supporting-fact" in table and "failed tasks (error > 5%)" in table
