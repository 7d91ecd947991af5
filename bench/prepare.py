"""Preparation throughput: lines/s to train the tokenizer and to encode + binarize every split.

    SEQTOOL_DATA=../shared/data python bench/prepare.py recipes/lstm-attn-multi30k.yaml recipes/lstm-ptb.yaml \
        --set data.corpus=wikitext2

Each recipe is prepared from scratch in a temporary directory; the phases are timed separately,
because peers' binarizers (fairseq-preprocess) take an already trained subword model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.recipes import load_recipe  # noqa: E402
from seqtool.data import prepare as prep  # noqa: E402


def measure(recipe) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        splits = prep._resolve_splits(recipe.data, stage)
        start = time.perf_counter()
        vocabs = prep._train_vocabs(recipe, splits["train"])
        trained = time.perf_counter()
        counts = {name: prep._encode_split(recipe, name, split, vocabs, stage) for name, split in splits.items()}
        encoded = time.perf_counter()
    lines = sum(c["lines"] for c in counts.values())
    tokens = sum(c.get("tokens", c.get("src_tokens", 0) + c.get("tgt_tokens", 0)) for c in counts.values())
    return {"recipe": recipe.name, "tokenizer": recipe.data.tokenizer.kind, "lines": lines, "tokens": tokens,
            "train_tokenizer_s": trained - start, "encode_s": encoded - trained,
            "encode_lines_per_s": lines / (encoded - trained), "total_lines_per_s": lines / (encoded - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="applied to the last recipe only (e.g. data.corpus=wikitext2)")
    args = parser.parse_args()
    rows = []
    for index, path in enumerate(args.recipes):
        overrides = args.overrides if index == len(args.recipes) - 1 else []
        rows.append(measure(load_recipe(path, overrides)))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
