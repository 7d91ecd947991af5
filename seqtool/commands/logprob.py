"""`seqtool logprob`: forced decoding, the log-probability a trained run gives each given
source/target pair (seqtool/decoding/forced.py).

Named for what it prints, as Marian's scorer and fairseq's --score-reference print it; `score`
stays sacrebleu's. One line per pair: the total log-probability (natural log, the target's EOS
included), the score search would give the target (the run's decode length and coverage penalties,
or --alpha/--length-penalty/--beta), the target's token count and, with --word-scores, each token's
log-probability (the run's tokens, then EOS)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from seqtool.commands.runs import load_translation_run
from seqtool.data.textio import iter_pairs
from seqtool.decoding.forced import Forced, force_lines
from seqtool.util.oom import out_of_memory_hint


def format_forced(forced: Forced, word_scores: bool) -> str:
    fields = [f"{forced.log_prob:.4f}", f"{forced.score:.4f}", str(forced.tokens)]
    if word_scores:
        fields.append(" ".join(f"{lp:.4f}" for lp in forced.token_log_probs))
    return "\t".join(fields) + "\n"


def run_logprob(target: Path, src: Path, tgt: Path, overrides: dict, *, device: str, word_scores: bool,
                warn: Callable[[str], None]) -> None:
    run = load_translation_run(target, overrides, device, "logprob")
    scores = force_lines(run.model, run.vocabs, iter_pairs(src, tgt), run.recipe.decode,
                         device=next(run.model.parameters()).device, warn=warn)
    with out_of_memory_hint("scoring", "decode.batch_tokens (--batch-tokens)"):
        for number, forced in enumerate(scores):
            sys.stdout.write(format_forced(forced, word_scores))
            if number % 256 == 255:
                sys.stdout.flush()
