"""Cost of a DP-SGD step (train.privacy) against a non-private one, on the model of recipes/dp-listops-*.yaml.

    python bench/privacy.py [--batch 32] [--length 20] [--repeats 10]

For an LSTM classifier (embed 32, hidden 64, the Python time loop) without a norm and with layer norm, it
times one optimizer step on the same random batch: non-private (one batched forward and backward), and
private (per-example gradients by grad vmapped over the examples, then Opacus's clipping, noise and
step), alternating the two so that a load change on a shared machine hits both. Prints seconds per step
and the ratio, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.data.classify import ClassifyBatch  # noqa: E402
from seqtool.models.base import VocabSizes  # noqa: E402
from seqtool.models.recurrent.classifier import RNNClassifier, RNNClassifierConfig  # noqa: E402
from seqtool.recipe.schema import PrivacySpec  # noqa: E402
from seqtool.training.privacy import PrivateTraining  # noqa: E402
from seqtool.training.trainer import LossModule  # noqa: E402


def steps(norm: str, batch: ClassifyBatch, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    cfg = RNNClassifierConfig(cell={"name": "lstm", "fused": False}, norm=norm, embed_dim=32, hidden_dim=64)
    model = RNNClassifier(cfg, VocabSizes(20, 10))
    plain = torch.optim.Adam(model.parameters())
    private = PrivateTraining(PrivacySpec(noise_multiplier=1.0), LossModule(model),
                              torch.optim.Adam(model.parameters()), examples=3200, batch_size=len(batch.labels),
                              max_steps=1000, world=1)

    def plain_step():
        model.loss(batch).loss.backward()
        plain.step()
        plain.zero_grad()

    def private_step():
        private.backward(batch, 0.0)
        private.optimizer.step()
        private.optimizer.zero_grad()

    times = {"plain": [], "private": []}
    for i in range(repeats + 1):
        for name, step in (("plain", plain_step), ("private", private_step)):
            start = time.perf_counter()
            step()
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    result = {k: statistics.median(v) for k, v in times.items()}
    return {**result, "ratio": result["private"] / result["plain"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 20, (args.batch, args.length), generator=g)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    batch = ClassifyBatch(tokens, mask, torch.randint(0, 10, (args.batch,), generator=g), args.batch)
    results = {}
    for norm in ("none", "layer"):
        results[norm] = steps(norm, batch, args.repeats)
        r = results[norm]
        print(f"norm {norm}: plain {r['plain']:.3f} s/step, private {r['private']:.3f} s/step, "
              f"x{r['ratio']:.1f}", file=sys.stderr)
    print(json.dumps({"batch": args.batch, "length": args.length, **results}))


if __name__ == "__main__":
    main()
