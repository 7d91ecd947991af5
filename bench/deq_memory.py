"""Training memory of the deep equilibrium LM against its solver iterations (papers.md card 9: O(1) in
depth), beside the same block stacked as that many layers.

    python bench/deq_memory.py [--recipe recipes/deq-ptb.yaml] [--iterations 2 4 8 16 32] [--vocab 10000]

One training step (forward, loss, backward) of the recipe's model at its batch size and block length, on
random tokens, for each count n: the DEQ forced to take exactly n forward and n backward iterations
(tolerances 1e-30), with Anderson backward and with Broyden backward, and the block stacked n times
(`unrolled_layers: n`). Two measures, both exact counts rather than process sizes:
  saved  bytes autograd keeps for the backward pass (tensors packed by saved_tensors_hooks, each
         storage once): the activations
  peak   the most CPU memory allocated at once during the step, above what was allocated before it
         (torch.profiler's memory timeline), which adds the solvers' working memory and the gradients
Prints a table to stderr and one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.recipes import load_recipe  # noqa: E402
from seqtool.commands.runs import build_model  # noqa: E402
from seqtool.models.base import VocabSizes  # noqa: E402
from seqtool.models.losses import output_loss  # noqa: E402

VARIANTS = {
    "deq, anderson backward": {"backward_solver": "anderson"},
    "deq, broyden backward": {"backward_solver": "broyden"},
    "stacked": {},
}


def model_for(recipe, variant: str, n: int, vocab: int):
    changes = {"tolerance": 1e-30, "backward_tolerance": 1e-30, "max_iterations": n,
               "backward_max_iterations": n, "unrolled_layers": None, **VARIANTS[variant]}
    if variant == "stacked":
        changes["unrolled_layers"] = n
    model_cfg = recipe.model.model_copy(update=changes)
    torch.manual_seed(0)
    return build_model(recipe.model_copy(update={"model": model_cfg}), VocabSizes(vocab, vocab)).train()


def step(model, tokens: torch.Tensor) -> None:
    features, _ = model(tokens)
    loss, _ = output_loss(features, tokens, model.out)
    loss.backward()


def saved_bytes(model, tokens: torch.Tensor) -> int:
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step(model, tokens)
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def peak_bytes(model, tokens: torch.Tensor) -> int:
    with profile(profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step(model, tokens)
    model.zero_grad(set_to_none=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # deprecated in favour of CUDA memory snapshots, which do not cover the CPU
        warnings.simplefilter("ignore", FutureWarning)
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    totals = [sum(row) for row in sizes]
    return max(totals) - totals[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/deq-ptb.yaml")
    parser.add_argument("--iterations", nargs="+", type=int, default=[2, 4, 8, 16, 32])
    parser.add_argument("--vocab", type=int, default=10000, help="PTB's word vocabulary")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = load_recipe(args.recipe)
    tokens = torch.randint(4, args.vocab, (recipe.train.batch_size, recipe.data.block_len),
                           generator=torch.Generator().manual_seed(0))
    rows = []
    for variant in VARIANTS:
        for n in args.iterations:
            model = model_for(recipe, variant, n, args.vocab)
            rows.append({"model": variant, "iterations": n, "saved_mb": saved_bytes(model, tokens) / 2**20,
                         "peak_mb": peak_bytes(model, tokens) / 2**20})
            print(f"{variant:<24} n={n:<3} saved {rows[-1]['saved_mb']:7.2f} MB  peak {rows[-1]['peak_mb']:7.2f} MB",
                  file=sys.stderr)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
