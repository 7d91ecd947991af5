"""Shared fixtures: real data slices from ../shared/data, tiny generated corpora, CPU only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEQTOOL_TEST_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(1)


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared corpus not available: {path}")
    return path


def head(src: Path, dst: Path, lines: int, skip: int = 0) -> Path:
    """The first `lines` lines of a file (after `skip`), as a small test corpus."""
    with open(src, encoding="utf-8") as handle:
        chunk = [line for i, line in enumerate(handle) if skip <= i < skip + lines]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(chunk), encoding="utf-8")
    return dst


def padded_batch(rows: int = 4, seed: int = 0):
    """(src, mask, tgt) over a vocabulary of 40: sources of 9 with every odd row padded from position
    3 + row % 5 (rows 1 and 3 of four keep 4 and 6 tokens), targets of 7."""
    torch.manual_seed(seed)
    src = torch.randint(4, 40, (rows, 9))
    for r in range(1, rows, 2):
        src[r, 3 + r % 5 :] = 0
    return src, src != 0, torch.randint(4, 40, (rows, 7))


def assert_incremental_equals_forward(model, src, mask, tgt, attn_atol: float = 1e-8):
    """The decoder contract: encode/start/step (with a reorder between steps, as search does) gives
    the teacher-forced forward's distributions, and attention is a distribution over real tokens
    (to `attn_atol`: ConvS2S averages its layers' attentions). Returns the final decoder state."""
    full = torch.log_softmax(model.out(model(src, mask, tgt)), -1)
    enc = model.encode(src, mask)
    state = model.start(enc)
    for t in range(tgt.size(1)):
        out = model.step(tgt[:, t], state, enc)
        state = out.state.reorder(torch.arange(src.size(0)))
        assert torch.allclose(out.log_probs, full[:, t], atol=1e-5), t
        assert torch.allclose(out.attn.sum(-1), torch.ones(src.size(0)), atol=attn_atol)
        assert (out.attn[~mask] == 0).all()
    return state


def assert_rows_independent(model, rows: int = 6):
    """Each row of a padded batch gets the features it gets alone and unpadded."""
    src, mask, tgt = padded_batch(rows, seed=rows)
    full = model(src, mask, tgt)
    for r in range(rows):
        n = int(mask[r].sum())
        alone = model(src[r : r + 1, :n], mask[r : r + 1, :n], tgt[r : r + 1])
        assert torch.allclose(full[r : r + 1], alone, atol=1e-5), r


def assert_search_independent_of_batch(model, rows: int = 5):
    """Beam search (length and coverage penalties on) finds the same best hypothesis for a sentence
    decoded with others as alone, at the same score."""
    from seqtool.decoding.search import search
    from seqtool.recipe.schema import DecodeSpec

    src, mask, _ = padded_batch(rows, seed=rows)
    settings = DecodeSpec(beam=3, alpha=0.6, beta=0.2, max_len_a=1.0, max_len_b=4)
    together = search(model, src, mask, settings)
    for r in range(rows):
        n = int(mask[r].sum())
        alone = search(model, src[r : r + 1, :n], mask[r : r + 1, :n], settings)
        assert alone[0][0].tokens == together[r][0].tokens
        assert alone[0][0].score == pytest.approx(together[r][0].score, abs=1e-4)


def assert_causal(lm, vocab: int, atol: float = 0.0):
    """Changing the token at t leaves a language model's features before t as they were (to `atol`)
    and changes those at t."""
    x = torch.randint(4, vocab, (2, 30))
    base = lm(x)[0]
    for t in (0, 7, 29):
        changed = x.clone()
        changed[:, t] = (changed[:, t] + 1 - 4) % (vocab - 4) + 4
        out = lm(changed)[0]
        assert torch.allclose(out[:, :t], base[:, :t], rtol=0.0, atol=atol), t
        assert not torch.allclose(out[:, t], base[:, t])


@pytest.fixture
def multi30k_slice(tmp_path: Path) -> Path:
    """A data root holding small slices of Multi30k de-en (train 2000, val 100, test 100)."""
    root = tmp_path / "data"
    sizes = {"train": 2000, "val": 100, "test2016": 100}
    for stem, n in sizes.items():
        for lang in ("de", "en"):
            head(shared("multi30k", f"{stem}.{lang}"), root / "multi30k" / f"{stem}.{lang}", n)
    return root


@pytest.fixture
def ptb_slice(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for split, n in {"train": 3000, "valid": 300, "test": 300}.items():
        head(shared("ptb", f"ptb.{split}.txt"), root / "ptb" / f"ptb.{split}.txt", n)
    return root


def run_cli(*args: str, cwd: Path, env: dict | None = None, stdin: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m seqtool ARGS` as a user would, capturing text output."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "seqtool", *args], cwd=cwd, env=full_env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


TINY_TRANSLATION = """
recipe_version: 1
name: tiny
task: translation
seed: 1
data:
  generate: {task: num2words, train: 1500, valid: 60, test: 60, max_digits: 3}
  tokenizer: {kind: word, vocab_size: null, joint: false}
model: {arch: rnn_seq2seq, embed_dim: 24, hidden_dim: 48, encoder_layers: 1, decoder_layers: 1, dropout: 0.0}
train:
  optimizer: {name: adam, lr: 0.01}
  batch_tokens: 600
  max_steps: 150
  validate_every: 50
  checkpoint: {every: 50, keep_last: 10, keep_best: 1}
  early_stopping: {metric: bleu}
decode: {beam: 3, max_len_a: 3.0, max_len_b: 5}
eval: {valid_beam: 1}
log: {tensorboard: false, progress: plain, every: 1}
"""


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_TRANSLATION, encoding="utf-8")
    return path
