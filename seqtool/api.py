"""The Python API: `seqtool.load(run_or_checkpoint)` and the model it returns.

    import seqtool
    model = seqtool.load("runs/quickstart")              # a run directory or a checkpoint file
    model.translate(["4 0 5"], beam=5, n_best=2)          # [Translation(text, nbest=[(text, score)])]
    model.score(["4 0 5"], ["four hundred five"])         # [Forced(log_prob, score, token_log_probs)]
    seqtool.load("runs/lstm-ptb").perplexity(lines)       # language models

Options are `decode` keys of the recipe (`seqtool keys`), validated as a `--set decode.KEY=VALUE`
would be, against the whole recipe: an unknown key, a bad value or an impossible combination fails
with a SeqtoolError naming the key, and a key added to the schema later is an option at once.
Everything runs the one decode path `translate`, `eval` and validation share (seqtool.decoding),
so the API answers as the command line does. A LoadedModel is not thread-safe: one call at a time
(the server runs its batches on one worker).

The API orchestrates loading, as the commands do, so it sits above them (pyproject's layers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from seqtool.commands.recipes import recipe_from_dict
from seqtool.commands.runs import LoadedRun, count_parameters, load_run, pick_device
from seqtool.decoding.forced import Forced, force_lines, lm_line_log_probs
from seqtool.decoding.translate import Source, Translation, translate_lines
from seqtool.errors import SeqtoolError
from seqtool.recipe.overrides import merged
from seqtool.recipe.schema import DecodeSpec

__all__ = ["DecodeRequest", "Forced", "LoadedModel", "Translation", "load"]

_log = logging.getLogger("seqtool")


@dataclass
class DecodeRequest:
    """Lines to translate with validated settings: what the server queues and batches."""

    lines: list[str | Source]
    settings: DecodeSpec
    tokens: int  # source tokens of the lines with their EOS, for the server's batch budget


class LoadedModel:
    """A trained run ready to translate, score and measure text; `seqtool.load` makes one."""

    def __init__(self, run: LoadedRun, seed: int = 1, warn: Callable[[str], None] = _log.warning):
        self.run, self.warn = run, warn
        self.device = next(run.model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)  # for sampling
        self._raw = run.recipe.model_dump(mode="json")

    @property
    def task(self) -> str:
        return self.run.recipe.task

    def info(self) -> dict:
        """What is loaded: checkpoint, step, task, model, recipe, tokenizer and decode defaults."""
        run, vocabs = self.run, self.run.vocabs
        tokenizer = getattr(run.recipe.data, "tokenizer", None)
        return {
            "checkpoint": str(run.path), "step": run.payload.get("trainer", {}).get("step"), "task": self.task,
            "model": {"arch": run.recipe.model.arch, "parameters": count_parameters(run.model)},
            "recipe": run.recipe.name,
            "tokenizer": None if vocabs is None else {
                "kind": getattr(tokenizer, "kind", None), "joint": vocabs.joint,
                "src_vocab": len(vocabs.src), "tgt_vocab": len(vocabs.tgt)},
            "device": str(self.device), "decode": run.recipe.decode.model_dump(mode="json"),
        }

    def settings(self, **options) -> DecodeSpec:
        """The run's decode settings with `options` (decode keys) applied and the recipe re-validated."""
        if not options:
            return self.run.recipe.decode
        return recipe_from_dict(merged(self._raw, {"decode": options}), source="options").decode

    def request(self, lines: Iterable[str], *, alignment: bool = False, constraints: list[list[str]] | None = None,
                **options) -> DecodeRequest:
        """Validate a translation request without running it (the server does this before queueing).
        `alignment`: each translation carries its word alignment; `constraints`: per line, the phrases
        its translation must contain (lexically constrained decoding)."""
        self._need("translation", "translate")
        lines = _lines(lines, "lines")
        tokens = sum(map(len, self.run.vocabs.src.encode(lines)))
        if alignment:
            options = {**options, "alignment": True}
        return DecodeRequest(_sources(lines, constraints), self.settings(**options), tokens + len(lines))

    def decode(self, requests: list[DecodeRequest]) -> list[list[Translation]]:
        """Translations of several requests; those with equal settings are decoded together, in one
        length-sorted pass, so many small requests cost about what one large one does."""
        results: list[list[Translation] | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.settings.model_dump_json(), []).append(i)
        for members in groups.values():
            lines = [line for i in members for line in requests[i].lines]
            out = iter(translate_lines(self.run.model, self.run.vocabs, lines, requests[members[0]].settings,
                                       device=self.device, warn=self.warn, generator=self.generator))
            for i in members:
                results[i] = [next(out) for _ in requests[i].lines]
        return results

    def translate(self, lines: Iterable[str], **options) -> list[Translation]:
        """One Translation per line (text and n-best list of (text, score), best first)."""
        return self.decode([self.request(lines, **options)])[0]

    def score(self, sources: Iterable[str], targets: Iterable[str], **options) -> list[Forced]:
        """Forced decoding: log P(target | source), the score search would give that target (the run's
        length and coverage penalties, or the options'), and every target token's log-probability."""
        self._need("translation", "score")
        sources, targets = _lines(sources, "sources"), _lines(targets, "targets")
        if len(sources) != len(targets):
            raise SeqtoolError(f"score: {len(sources)} sources but {len(targets)} targets")
        return list(force_lines(self.run.model, self.run.vocabs, zip(sources, targets), self.settings(**options),
                                device=self.device, warn=self.warn))

    def perplexity(self, lines: Iterable[str]) -> float:
        """Perplexity per token of a language model over lines, each scored on its own from a line
        start (its tokens and the EOS that ends it)."""
        self._need("lm", "perplexity")
        decode = self.run.recipe.decode
        scored = list(lm_line_log_probs(self.run.model, self.run.vocabs, _lines(lines, "lines"),
                                        batch_tokens=decode.batch_tokens, device=self.device,
                                        precision=decode.precision))
        count = sum(f.tokens for f in scored)
        if count == 0:
            raise SeqtoolError("perplexity: no lines")
        return math.exp(-sum(f.log_prob for f in scored) / count)

    def _need(self, task: str, what: str) -> None:
        if self.task != task:
            raise SeqtoolError(f"{what}: needs a {task} run; {self.run.path} is a {self.task!r} run")


def _sources(lines: list[str], constraints: list[list[str]] | None) -> list[str | Source]:
    """Lines with their lexical constraints (one list of phrases per line), or the lines alone."""
    if constraints is None:
        return lines
    if len(constraints) != len(lines) or not all(isinstance(c, list) for c in constraints):
        raise SeqtoolError(f"constraints: one list of phrases per sentence ({len(lines)} lists expected)")
    return [Source(line, _lines(phrases, "constraints")) for line, phrases in zip(lines, constraints)]


def _lines(value: Iterable[str], name: str) -> list[str]:
    lines = None if isinstance(value, (str, bytes)) else list(value)
    if lines is None or not all(isinstance(line, str) for line in lines):
        raise SeqtoolError(f"{name}: a list of strings (one per line)")
    return lines


def load(target: str | Path, *, device: str = "auto", seed: int = 1, warn: Callable[[str], None] | None = None,
         **options) -> LoadedModel:
    """Load a run directory (its best checkpoint) or a checkpoint file; `options` (decode keys) become
    its default settings, `seed` seeds sampling, `warn` receives warnings (default: logging)."""
    run = load_run(target, {"decode": options} if options else None, pick_device(device))
    return LoadedModel(run, seed, warn or _log.warning)
