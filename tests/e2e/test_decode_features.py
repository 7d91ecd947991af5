"""Decoding features on a trained model (the tiny quickstart: digits to English words) and an LM of
its target text: ensembles, shallow fusion, lexical constraints, word alignments and attention plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqtool.commands.combine import load_translator
from seqtool.commands.recipes import load_recipe
from seqtool.commands.runs import load_run
from seqtool.commands.train import train_recipe
from seqtool.decoding.translate import Source, translate_lines
from seqtool.errors import SeqtoolError
from tests.conftest import TINY_TRANSLATION
from tests.reliability.test_bad_input import check_error, invoke

pytestmark = pytest.mark.slow

CPU = torch.device("cpu")
SOURCES = ["4 2 1", "1 8 8", "7 4", "9 0 5", "3 3"]  # the tiny corpus has numbers below 1000

LM = """
recipe_version: 1
name: lm
task: lm
seed: 1
data:
  train: {text: train.tgt}
  valid: {text: valid.tgt}
  tokenizer: {kind: word, vocab_size: null}
  block_len: 8
model: {arch: rnnlm, embed_dim: 16, hidden_dim: 16, layers: 1}
train: {optimizer: {name: adam, lr: 0.01}, batch_size: 8, max_steps: 3, validate_every: 3, checkpoint: {every: 3}}
log: {tensorboard: false, progress: none}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A tiny translation run (runs/tiny) and an LM trained on its target side (runs/lm), trained in
    this process (no interpreter start-up)."""
    root = tmp_path_factory.mktemp("decode")
    (root / "tiny.yaml").write_text(TINY_TRANSLATION)
    (root / "lm.yaml").write_text(LM)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        train_recipe(load_recipe(Path("tiny.yaml"), ["train.max_steps=40", "train.validate_every=40",
                                                     "data.generate.test=10", "log.progress=none"]))
        patch.setenv("SEQTOOL_DATA", str(root / "runs" / "tiny" / "data" / "raw"))
        train_recipe(load_recipe(Path("lm.yaml"), []))
    return root / "runs"


def _translate(run, lines, **decode):
    spec = run.recipe.decode.model_copy(update=decode)
    return list(translate_lines(run.model, run.vocabs, lines, spec, device=CPU))


def test_one_model_given_twice_decodes_as_the_model_alone(runs):
    alone = _translate(load_translator([runs / "tiny"], {}, CPU), SOURCES, n_best=3)
    twice = _translate(load_translator([runs / "tiny", runs / "tiny"], {}, CPU, weights=[0.3, 0.7]), SOURCES, n_best=3)
    assert [t.text for t in twice] == [t.text for t in alone]
    for a, b in zip(alone, twice):
        assert [text for text, _ in a.nbest] == [text for text, _ in b.nbest]
        assert [score for _, score in a.nbest] == pytest.approx([score for _, score in b.nbest], abs=1e-4)


def test_fusion_adds_the_weighted_lm_and_refuses_another_vocabulary(runs, tmp_path):
    alone = _translate(load_translator([runs / "tiny"], {}, CPU), SOURCES)
    off = _translate(load_translator([runs / "tiny"], {}, CPU, lm=runs / "lm", lm_weight=0.0), SOURCES)
    fused = _translate(load_translator([runs / "tiny"], {}, CPU, lm=runs / "lm", lm_weight=0.5), SOURCES)
    assert [(t.text, t.nbest[0][1]) for t in off] == [(t.text, pytest.approx(t.nbest[0][1], abs=1e-5)) for t in alone]
    assert [t.nbest[0][1] for t in fused] != pytest.approx([t.nbest[0][1] for t in alone], abs=1e-3)
    # the same LM with two target words swapped in its vocabulary: same shapes, another vocabulary
    payload = torch.load(runs / "lm" / "checkpoints" / "best.pt", weights_only=True)
    words = bytes(payload["tokenizer"]["src/vocab.txt"].numpy()).decode().split("\n")
    words[4], words[5] = words[5], words[4]
    payload["tokenizer"]["src/vocab.txt"] = torch.frombuffer(bytearray("\n".join(words).encode()), dtype=torch.uint8)
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(SeqtoolError, match="its vocabulary differs from the target vocabulary"):
        load_translator([runs / "tiny"], {}, CPU, lm=tmp_path / "other.pt")
    with pytest.raises(SeqtoolError, match="shallow fusion needs a language model"):
        load_translator([runs / "tiny"], {}, CPU, lm=runs / "tiny")


def test_every_constraint_appears_and_unconstrained_lines_are_unchanged(runs):
    run = load_run(runs / "tiny")
    wanted = [["hundred", "seventy"], [], ["four hundred"], ["nine", "nine", "five"], ["eighty three"]]
    plain = _translate(run, SOURCES, beam=5)
    constrained = _translate(run, [Source(s, c) for s, c in zip(SOURCES, wanted)], beam=5)
    for source, phrases, base, out in zip(SOURCES, wanted, plain, constrained):
        words = out.text.split()
        for phrase in set(phrases):
            n = len(phrase.split())
            found = sum(words[i : i + n] == phrase.split() for i in range(len(words)))
            assert found >= phrases.count(phrase), (source, phrase, out.text)
        if not phrases:
            assert out.text == base.text


def test_alignments_and_plots_through_the_command_line(runs, tmp_path, capsys, monkeypatch):
    lines = [json.dumps({"text": s, "constraints": ["hundred"]}) for s in SOURCES[:2]]
    code, out, err = invoke(["translate", "-c", str(runs / "tiny"), "--jsonl", "--alignment", "--attention-plot",
                             str(tmp_path / "plots")], capsys, monkeypatch, stdin="\n".join(lines).encode())
    assert code == 0, err
    outputs = out.splitlines()
    assert len(outputs) == 2
    for source, line in zip(SOURCES, outputs):
        text, pairs = line.split(" ||| ")
        assert "hundred" in text.split()
        links = [tuple(map(int, pair.split("-"))) for pair in pairs.split()]
        assert all(0 <= i < len(source.split()) and 0 <= j < len(text.split()) for i, j in links), line
        assert len({j for _, j in links}) == len(links)  # one source word at most per target word
    plots = sorted((tmp_path / "plots").iterdir())
    assert [p.name for p in plots] == ["00001.png", "00002.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


@pytest.mark.parametrize("args,stdin,needles", [
    (["-c", "RUN", "-c", "LM"], "1\n", ["a 'lm' run", "translate needs a translation run"]),
    (["-c", "RUN", "-c", "RUN", "--weights", "1"], "1\n", ["--weights: 2 positive numbers expected"]),
    (["-c", "RUN", "--jsonl"], '{"text": "1"}\n{"txt": "2"}\n', ["<stdin>:2", "expected {\"text\""]),
    (["-c", "RUN", "--jsonl"], '{"text": "1", "constraints": "two"}\n', ["<stdin>:1", "list of strings"]),
    (["-c", "RUN", "--jsonl", "--sample"], '{"text": "1", "constraints": ["two"]}\n', ["need decode.strategy beam"]),
    (["-c", "RUN", "--set", "train.lr=1"], "1\n", ["--set train.lr", "only decode.* and eval.* keys"]),
    (["-c", "RUN", "--set", "decode.no_repeat_ngram=-1"], "1\n", ["decode.no_repeat_ngram", "greater than or equal"]),
])
def test_bad_decoding_requests(runs, capsys, monkeypatch, args, stdin, needles):
    args = [str(runs / "tiny") if a == "RUN" else str(runs / "lm") if a == "LM" else a for a in args]
    code, _, err = invoke(["translate", *args], capsys, monkeypatch, stdin=stdin.encode())
    check_error(code, err, *needles)


def test_a_constraint_the_vocabulary_cannot_spell_is_dropped_with_a_warning(runs):
    run = load_run(runs / "tiny")
    warnings = []
    out = list(translate_lines(run.model, run.vocabs, [Source("1 2", ["zwölf", "twelve"])], run.recipe.decode,
                               device=CPU,
                               warn=warnings.append))
    assert "twelve" in out[0].text
    assert warnings == ["line 1: constraint 'zwölf' dropped: the target vocabulary cannot spell it"]


def test_set_and_no_repeat_flags_reach_the_search(runs, capsys, monkeypatch):
    """`--set decode.KEY=VALUE` and --no-repeat-ngram-size give what the same settings give in the library."""
    run = load_run(runs / "tiny")
    expected = [t.text for t in _translate(run, SOURCES, no_repeat_ngram=1, alpha=0.5)]
    assert all(len(set(text.split())) == len(text.split()) for text in expected)  # no word twice
    code, out, err = invoke(["translate", "-c", str(runs / "tiny"), "--set", "decode.no_repeat_ngram=1",
                             "--set", "decode.alpha=0.5"], capsys, monkeypatch, stdin="\n".join(SOURCES).encode())
    assert code == 0, err
    assert out.splitlines() == expected
    code, out, err = invoke(["translate", "-c", str(runs / "tiny"), "--no-repeat-ngram-size", "1", "--alpha", "0.5"],
                            capsys, monkeypatch, stdin="\n".join(SOURCES).encode())
    assert code == 0, err
    assert out.splitlines() == expected
