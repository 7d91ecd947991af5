"""The Python API (seqtool.load) and forced decoding on trained runs: translations equal the command
line's, a translation's forced score equals the score search gave it, options are recipe keys, and
a language model's line perplexity equals the one its own loss gives."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

import seqtool
from seqtool.cli import app
from seqtool.data.batching import LMBatch, pad_rows
from seqtool.decoding.forced import force_lines
from seqtool.errors import SeqtoolError
from seqtool.specials import EOS
from tests.serving.conftest import LINES


@pytest.fixture(scope="module")
def model(run_dir):
    return seqtool.load(run_dir, device="cpu")


def cli(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_translate_equals_the_translate_command(model, run_dir, tmp_path):
    (tmp_path / "in.txt").write_text("".join(line + "\n" for line in LINES))
    cli("translate", "-c", str(run_dir), "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"),
        "--n-best", "2")
    expected = [line.split(" ||| ") for line in (tmp_path / "out.txt").read_text().splitlines()]
    got = model.translate(LINES, n_best=2)
    assert [[str(i), text, f"{score:.4f}"] for i, t in enumerate(got) for text, score in t.nbest] == expected
    assert len({t.text for t in got}) > 2  # a model that says something


@pytest.mark.parametrize("options", [{}, {"alpha": 1.0, "length_penalty": "fairseq"}, {"alpha": 0.6, "beta": 0.2}])
def test_forced_score_is_the_score_search_gave(model, options):
    translations = model.translate(LINES, n_best=3, **options)
    pairs = [(src, text, score) for src, t in zip(LINES, translations) for text, score in t.nbest]
    forced = model.score([p[0] for p in pairs], [p[1] for p in pairs], **options)
    for (_, _, score), f in zip(pairs, forced):
        assert f.score == pytest.approx(score, abs=1e-4)
        assert f.log_prob == pytest.approx(sum(f.token_log_probs), abs=1e-5)
        if options.get("length_penalty") == "fairseq":
            assert f.score == pytest.approx(f.log_prob / f.tokens, abs=1e-6)  # alpha 1: the mean per token


def test_options_are_decode_keys_validated_with_the_recipe(model):
    for options, message in [({"beem": 2}, "did you mean 'decode.beam'"), ({"beam": 0}, "decode.beam"),
                             ({"n_best": 4, "beam": 3}, "n_best (4) cannot exceed beam (3)"),
                             ({"constraints": [["x"], ["y"]]}, "constraints: one list of phrases per sentence")]:
        with pytest.raises(SeqtoolError, match=message.replace("(", r"\(").replace(")", r"\)")):
            model.translate(["1 2"], **options)
    with pytest.raises(SeqtoolError, match="a list of strings"):
        model.translate("1 2 3")
    aligned = model.translate(["1 2"], alignment=True)[0]
    assert aligned.alignment and all(i < 2 for i, _ in aligned.alignment)
    assert "hundred" in model.translate(["1 2"], constraints=[["hundred"]])[0].text.split()
    with pytest.raises(SeqtoolError, match="2 sources but 1 targets"):
        model.score(["1", "2"], ["one"])
    with pytest.raises(SeqtoolError, match="needs a lm run"):
        model.perplexity(["1 2"])
    assert model.info()["model"]["arch"] == "rnn_seq2seq" and model.info()["tokenizer"]["kind"] == "word"


def test_lm_perplexity_equals_its_own_loss(lm_dir):
    lm = seqtool.load(lm_dir, device="cpu")
    lines = ["the company said it expects", "mr. <unk> is chairman", "a"]
    ids = [lm.run.vocabs.src.encode([line])[0] for line in lines]
    nll = count = 0
    for row in ids:  # each line alone, from a line start, through the fused training loss
        out = lm.run.model.loss(LMBatch(pad_rows([row], prefix=EOS), pad_rows([row], suffix=EOS), len(row) + 1, True))
        nll, count = nll + float(out.nll), count + out.ntokens
    assert lm.perplexity(lines) == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert lm.perplexity(lines) < len(lm.run.vocabs.src) / 4  # it learnt: a uniform guess is the vocabulary size
    with pytest.raises(SeqtoolError, match="needs a translation run"):
        lm.translate(["the"])


def test_logprob_command_and_eval_on_files(model, run_dir, tmp_path):
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    translations = model.translate(LINES)
    src.write_text("".join(line + "\n" for line in LINES))
    tgt.write_text("".join(t.text + "\n" for t in translations))
    rows = [line.split("\t") for line in cli("logprob", "-c", str(run_dir), "--src", str(src), "--tgt", str(tgt),
                                              "--word-scores").splitlines()]
    assert len(rows) == len(LINES)
    for row, t in zip(rows, translations):
        log_prob, score, tokens, words = float(row[0]), float(row[1]), int(row[2]), row[3].split()
        assert score == pytest.approx(t.nbest[0][1], abs=2e-4) and log_prob == score  # the run's alpha is 0
        assert len(words) == tokens == len(t.text.split()) + 1  # word tokens, then EOS
    # eval on a file pair reports what eval on the prepared split does, for the split's files
    refs = run_dir / "data" / "refs"
    on_files = json.loads(cli("eval", "-c", str(run_dir), "--src", str(refs / "test.src"),
                              "--ref", str(refs / "test.tgt"), "--json"))
    on_split = json.loads(cli("eval", "-c", str(run_dir), "--split", "test", "--json"))
    assert on_files["bleu"] == on_split["bleu"] and on_files["chrf"] == on_split["chrf"]
    assert on_files["loss"] == pytest.approx(on_split["loss"], rel=1e-4)
    result = CliRunner().invoke(app, ["logprob", "-c", str(run_dir), "--src", str(src), "--tgt",
                                      str(refs / "test.tgt")])
    assert result.exit_code == 1 and "parallel files must be line-aligned" in str(result.exception)
    result = CliRunner().invoke(app, ["eval", "-c", str(run_dir), "--src", str(src)])
    assert "--src and --ref go together" in str(result.exception)


class DecoderOnly:
    """A model with the decoder contract and nothing else (as an ensemble wrapper may be)."""

    def __init__(self, model):
        self.encode, self.start, self.step = model.encode, model.start, model.step


def test_forced_decoding_needs_only_the_decoder_contract(model):
    pairs = list(zip(LINES, ["one two three", "four hundred five", "", "seven", "x", "", "eight", "six"]))
    expected = model.score([s for s, _ in pairs], [t for _, t in pairs])
    assert list(force_lines(DecoderOnly(model.run.model), model.run.vocabs, pairs, model.settings(),
                            device=model.device)) == expected
