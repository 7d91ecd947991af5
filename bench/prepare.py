"""Preparation throughput: lines/s to train the tokenizer and to encode + binarize every split.

    SEQTOOL_DATA=../shared/data python bench/prepare.py recipes/lstm-attn-multi30k.yaml recipes/lstm-ptb.yaml \
        --set data.corpus=wikitext2

Each recipe is prepared from scratch in a temporary directory; the phases are timed separately,
because peers' binarizers (fairseq-preprocess) take an already trained subword model.

    SEQTOOL_DATA=../shared/data python bench/prepare.py --lines 10000000

A large corpus instead: Tatoeba de-en repeated to N training lines in a directory under /tmp/bench10m
(removed afterwards unless --keep), with lstm-attn-multi30k's data settings (joint 8k sentencepiece)
and a tiny model. `seqtool prepare` and the first --steps training steps each run in a fresh process,
so each phase's peak RSS is its own (the child's ru_maxrss from wait4).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

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


ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = 500  # valid and test lines, taken from Tatoeba's end; the train lines repeat the rest
SMALL_CORPUS = 20_000  # below this many lines sentencepiece cannot fill 8k pieces: the smoke run takes 1k
TINY_MODEL = {"embed_dim": 32, "hidden_dim": 32, "encoder_layers": 1, "decoder_layers": 1}


def write_corpus(directory: Path, lines: int) -> dict[str, dict[str, str]]:
    """Tatoeba de-en as train/valid/test .de/.en files, the train split cycled to `lines` lines."""
    rows = (prep.data_root() / "tatoeba-deu-eng" / "deu.txt").read_text(encoding="utf-8").splitlines()
    pairs = [row.split("\t")[:2] for row in rows]
    parts = {"train": pairs[: -2 * HELD_OUT], "valid": pairs[-2 * HELD_OUT : -HELD_OUT], "test": pairs[-HELD_OUT:]}
    splits = {}
    for name, chunk in parts.items():
        count = lines if name == "train" else len(chunk)
        splits[name] = {}
        for side, column in (("src", 1), ("tgt", 0)):  # German to English, as the Multi30k recipe
            path = directory / f"{name}.{side}"
            block = "".join(pair[column] + "\n" for pair in chunk)
            with open(path, "w", encoding="utf-8") as out:
                for _ in range(count // len(chunk)):
                    out.write(block)
                out.writelines(pair[column] + "\n" for pair in itertools.islice(chunk, count % len(chunk)))
            splits[name][side] = str(path)
    return splits


def large_recipe(directory: Path, splits: dict, steps: int, vocab_size: int) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes" / "lstm-attn-multi30k.yaml").read_text(encoding="utf-8"))
    recipe["name"], recipe["output_dir"] = "bench-prepare-large", str(directory / "run")
    data = recipe["data"]
    del data["corpus"], data["pair"]
    data.update(splits)
    data["tokenizer"]["vocab_size"] = vocab_size
    recipe["model"].update(TINY_MODEL)
    recipe["train"].update({"max_steps": steps, "max_minutes": None, "validate_every": 10 * steps,
                            "checkpoint": {"every": 10 * steps, "keep_last": 1, "keep_best": 1}})
    recipe["decode"]["beam"] = 1
    recipe["eval"].update({"valid_beam": 1, "valid_decode_limit": 50})
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def run_phase(args: list[str], log: Path) -> tuple[float, float, str]:
    """Seconds, peak RSS in MB and output of `python -m seqtool <args>` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        child = subprocess.Popen([sys.executable, "-m", "seqtool", *args], stdout=out, stderr=subprocess.STDOUT,
                                 env=env, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds, text = time.perf_counter() - start, log.read_text(encoding="utf-8")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"seqtool {args[0]} failed (log {log}):\n{text[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, text


def measure_large(lines: int, steps: int, keep: bool) -> dict:
    base = Path("/tmp/bench10m")
    base.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"lines{lines}-", dir=base))
    vocab_size = 8000 if lines >= SMALL_CORPUS else 1000
    try:
        recipe = large_recipe(directory, write_corpus(directory, lines), steps, vocab_size)
        prep_s, prep_mb, _ = run_phase(["prepare", str(recipe)], directory / "prepare.log")
        _, train_mb, text = run_phase(["train", str(recipe)], directory / "train.log")
        seconds = json.loads(text.strip().splitlines()[-1])["seconds"]  # the test report closes the log
        manifest = json.loads((directory / "run" / "data" / "manifest.json").read_text(encoding="utf-8"))
    finally:
        if not keep:
            shutil.rmtree(directory)
    total = sum(split.get("lines", 0) for split in manifest["splits"].values())
    return {"lines": lines, "prepared_lines": total, "prepare_s": prep_s, "prepare_lines_per_s": total / prep_s,
            "prepare_peak_rss_mb": prep_mb, "train_steps": steps, "train_startup_s": seconds["startup"],
            "train_loop_s": seconds["train"], "train_steps_per_s": steps / seconds["train"],
            "train_peak_rss_mb": train_mb, "vocab_size": vocab_size, "model": TINY_MODEL,
            "kept": str(directory) if keep else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="applied to the last recipe only (e.g. data.corpus=wikitext2)")
    parser.add_argument("--lines", type=int, help="prepare and train on Tatoeba repeated to this many lines")
    parser.add_argument("--steps", type=int, default=100, help="training steps measured with --lines")
    parser.add_argument("--keep", action="store_true", help="keep the --lines corpus and run under /tmp/bench10m")
    args = parser.parse_args()
    if args.lines:
        print(json.dumps(measure_large(args.lines, args.steps, args.keep)))
        return
    rows = []
    for index, path in enumerate(args.recipes):
        overrides = args.overrides if index == len(args.recipes) - 1 else []
        rows.append(measure(load_recipe(path, overrides)))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
