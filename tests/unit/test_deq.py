"""Deep equilibrium LM (papers.md card 9): both solvers reach the fixed point, the implicit gradient equals
the gradient through the unrolled iterations, the memory kept for the backward pass does not grow with
the solver's iterations (it does with the stacked baseline's layers), the solvers' mixing across
positions stays within the residual, bad settings fail at load, and a tiny model learns, logs its
solver and resumes exactly through the trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqtool.commands.recipes import recipe_from_dict
from seqtool.commands.runs import load_run
from seqtool.data.datasets import PreparedData
from seqtool.errors import SeqtoolError
from seqtool.models.implicit.deq import DEQLM, DEQLMConfig
from seqtool.models.implicit.solvers import anderson, broyden, relative_residual
from seqtool.models.layers import sinusoids
from tests.conftest import head, shared

VOCAB = 50


def tiny(**changes) -> DEQLM:
    torch.manual_seed(0)
    cfg = dict(embed_dim=16, ffn_dim=32, heads=2, dropout=0.0)
    return DEQLM(DEQLMConfig(**{**cfg, **changes}), VOCAB)


def trained_model(trained: Path, **model) -> DEQLM:
    """The trained tiny DEQ in float64, without dropout, with `model` keys changed."""
    return load_run(trained / "straight", {"model": {"dropout": 0.0, **model}}).model.double()


def valid_tokens(trained: Path, rows: int = 4, length: int = 16) -> torch.Tensor:
    tokens = PreparedData(trained / "straight" / "data").stream("valid").tokens[: rows * length]
    return torch.from_numpy(tokens.astype("int64")).view(rows, length)


def block_map(model: DEQLM, tokens: torch.Tensor):
    """f(.; x) of the model's block for the tokens, with the injection computed once."""
    positions = torch.arange(tokens.size(1))
    x = model.embed(tokens) * model.dim**0.5 + sinusoids(positions, model.dim).to(model.embed.weight.dtype)
    injection = model.inject(x).detach()
    return lambda z: model.block(z, injection)


@pytest.mark.parametrize("solver", [anderson, broyden], ids=["anderson", "broyden"])
def test_both_solvers_reach_a_relative_residual_of_1e_4_within_30_iterations_on_a_trained_block(trained, solver):
    model = trained_model(trained).float()
    f = block_map(model, valid_tokens(trained))
    with torch.no_grad():
        z0 = torch.zeros(4, 16, model.dim)
        kwargs = {"history": 5} if solver is anderson else {}
        found = solver(f, z0, tolerance=1e-4, max_iterations=30, **kwargs)
        assert found.residual < 1e-4 and found.iterations <= 30
        assert relative_residual(f(found.z), found.z) == pytest.approx(found.residual, rel=1e-2)


def test_the_implicit_gradient_equals_the_gradient_through_the_unrolled_iterations(trained):
    tokens = valid_tokens(trained, 2, 8)
    grads = {}
    for name, changes in {"implicit": dict(tolerance=1e-13, backward_tolerance=1e-13, max_iterations=100,
                                           backward_max_iterations=100),
                          "unrolled": dict(unrolled_layers=200)}.items():
        model = trained_model(trained, **changes).train()
        features, _ = model(tokens)
        (features * torch.linspace(-1, 1, features.numel(), dtype=torch.float64).view_as(features)).sum().backward()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert model.log.latest["forward_residual"] < 1e-13  # both reached the fixed point
    assert torch.allclose(grads["implicit"], grads["unrolled"], rtol=1e-4, atol=1e-9)


def saved_bytes(model: DEQLM, tokens: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of the model's forward (each storage once)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(tokens)
    return sum(storages.values())


def test_memory_kept_for_backward_does_not_grow_with_solver_iterations():
    tokens = torch.randint(4, VOCAB, (2, 10), generator=torch.Generator().manual_seed(3))
    deq = [saved_bytes(tiny(tolerance=1e-30, max_iterations=n).train(), tokens) for n in (4, 16)]
    stacked = [saved_bytes(tiny(unrolled_layers=n).train(), tokens) for n in (4, 16)]
    assert deq[0] == deq[1]
    assert stacked[1] > 3 * stacked[0] and stacked[0] > deq[0]


def test_later_tokens_move_earlier_outputs_no_more_than_the_residual(trained):
    """The solvers mix positions within a sequence (module docstring); at the fixed point f is causal."""
    model = trained_model(trained, tolerance=1e-12, max_iterations=100).eval()
    tokens = valid_tokens(trained)
    changed = tokens.clone()
    changed[:, 8] = (changed[:, 8] + 1) % model.out.weight.size(0)
    with torch.no_grad():
        base, out = model(tokens)[0], model(changed)[0]
    assert (out[:, :8] - base[:, :8]).abs().max() < 1e-9
    assert (out[:, 8] - base[:, 8]).abs().max() > 1e-2


@pytest.mark.parametrize("model,message", [
    ({"embed_dim": 30, "heads": 4}, "divisible by heads"),
    ({"solver": "newton"}, "model.solver"),
    ({"unrolled_layers": 0}, "model.unrolled_layers"),
])
def test_bad_settings_fail_at_load(model, message):
    recipe = {"name": "d", "task": "lm", "data": {"corpus": "ptb"}, "model": {"arch": "deq_lm", **model}}
    with pytest.raises(SeqtoolError, match=message):
        recipe_from_dict(recipe)


def _recipe(root, name: str, steps: int) -> dict:
    return {
        "name": name, "task": "lm", "output_dir": str(root / name), "seed": 3,
        "data": {"corpus": "ptb", "tokenizer": {"kind": "word", "vocab_size": None}, "block_len": 16},
        "model": {"arch": "deq_lm", "embed_dim": 16, "ffn_dim": 32, "heads": 2, "dropout": 0.1,
                  "max_iterations": 8, "backward_max_iterations": 8, "backward_solver": "broyden"},
        "train": {"optimizer": {"name": "adam", "lr": 1e-2}, "batch_size": 8, "max_steps": steps,
                  "validate_every": 10, "checkpoint": {"every": 10}, "clip_norm": 1.0},
        "eval": {"lm_streams": 4},
        "log": {"tensorboard": False, "progress": "none", "every": 5}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny DEQ trained 20 steps on a PTB slice ("straight"), and the same run stopped at 10 and
    resumed ("broken")."""
    from seqtool.commands.train import train_recipe

    root = tmp_path_factory.mktemp("deq")
    for split, lines in {"train": 1500, "valid": 60, "test": 30}.items():
        head(shared("ptb", f"ptb.{split}.txt"), root / "data" / "ptb" / f"ptb.{split}.txt", lines)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEQTOOL_DATA", str(root / "data"))
        train_recipe(recipe_from_dict(_recipe(root, "straight", 20)))
        train_recipe(recipe_from_dict(_recipe(root, "broken", 10)))
        train_recipe(recipe_from_dict(_recipe(root, "broken", 20)), resume=True)
    return root


def _rows(run) -> list[dict]:
    """metrics.jsonl without the timing."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("tokens_per_s", "elapsed")} for row in rows]


def test_tiny_deq_learns_logs_its_solver_and_resumes_exactly(trained):
    straight, resumed = _rows(trained / "straight"), _rows(trained / "broken")
    assert resumed == straight
    train = [r for r in straight if r["split"] == "train"]
    assert train[-1]["loss"] < 0.9 * train[0]["loss"]
    assert {"forward_iterations", "forward_residual", "backward_iterations", "backward_residual"} <= set(train[-1])
    valid = [r for r in straight if r["split"] == "valid"]
    assert 1 <= valid[-1]["forward_iterations"] <= 8 and valid[-1]["forward_residual"] < 0.1
