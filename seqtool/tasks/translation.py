"""Translation: token-budget batches of sentence pairs; validation by loss and by decoded BLEU.

Several corpora (a list-form data.train; seqtool/data/corpora.py) are drawn by weight each epoch before
the drawn sentences are batched by tokens, so weights set shares of sentences, not of tokens. A
list-form valid or test split is measured corpus by corpus, each decoded with its corpus's tag: every
metric appears per corpus (`bleu/de-en`) and as the unweighted mean over the corpora (`bleu`), which
is what train.early_stopping.metric selects on.
"""

from __future__ import annotations

import numpy as np
import torch

from seqtool.data.batching import collate_pairs, shard, token_batches
from seqtool.data.corpora import weighted_draw
from seqtool.decoding.translate import translate_lines
from seqtool.evaluation.metrics import corpus_metrics, perplexity
from seqtool.recipe.schema import DecodeSpec, TextDataSpec
from seqtool.registry import TASKS
from seqtool.tasks.base import Task


@TASKS.register("translation", config=TextDataSpec)
class TranslationTask(Task):
    metrics = ("loss", "ppl", "bleu", "chrf")

    def __init__(self, recipe, directory, device, *, rank: int = 0, world: int = 1):
        super().__init__(recipe, directory, device, rank=rank, world=world)
        self._splits = {}

    @classmethod
    def check(cls, recipe) -> list[str]:
        problems = [f"data.{name} needs src and tgt files for task 'translation'"
                    for name in ("train", "valid", "test") if getattr(getattr(recipe.data, name), "text", None)]
        tags = [c.tag for c in recipe.data.corpora("train") or [] if c.tag is not None]
        if tags and recipe.data.tokenizer.kind != "sentencepiece":
            problems.append(f"data.train: corpus tags ({tags[0]}) need data.tokenizer.kind: sentencepiece")
        if recipe.data.generate is not None and recipe.data.generate.task == "retrieval":
            problems.append("data.generate.task retrieval makes running text; it needs task: lm")
        if getattr(recipe.model, "share_embeddings", False) and not recipe.data.tokenizer.joint:
            problems.append("model.share_embeddings needs data.tokenizer.joint: true")
        return problems

    def split(self, name: str):
        if name not in self._splits:
            self._splits[name] = self.data.parallel(name)
        return self._splits[name]

    def _batches(self, name: str, epoch: int, shuffle: bool) -> list[np.ndarray]:
        split, train = self.split(name), self.recipe.train
        return token_batches(split.src.lengths(), split.tgt.lengths(), batch_tokens=train.batch_tokens,
                             max_sentences=train.batch_size, seed=self.recipe.seed, epoch=epoch, shuffle=shuffle)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        corpora = self.data.manifest["splits"]["train"].get("corpora")
        if not corpora:
            return shard(self._batches("train", epoch, shuffle=True), self.rank, self.world)
        drawn = weighted_draw([c["sentences"] for c in corpora], [c["weight"] for c in corpora],
                              self.recipe.seed, epoch)
        split, train = self.split("train"), self.recipe.train
        batches = token_batches(split.src.lengths()[drawn], split.tgt.lengths()[drawn],
                                batch_tokens=train.batch_tokens, max_sentences=train.batch_size,
                                seed=self.recipe.seed, epoch=epoch)
        return shard([drawn[b] for b in batches], self.rank, self.world)

    def batch(self, item: np.ndarray):
        return collate_pairs(self.split("train"), item).to(self.device)

    def loss_on(self, model, name: str) -> dict[str, float]:
        nll, count = 0.0, 0
        with torch.inference_mode():
            for index in self._batches(name, 0, shuffle=False):
                out = model.loss(collate_pairs(self.split(name), index).to(self.device))
                nll += float(out.nll)
                count += out.ntokens
        return {"loss": nll / max(count, 1), "ppl": perplexity(nll, count)}

    def decode_split(self, model, name: str, settings: DecodeSpec, limit: int | None = None):
        sources, references = self.data.raw_pairs(name)
        sources, references = sources[:limit], references[:limit]
        settings = settings.model_copy(update={"tag": self.data.tag(name) or settings.tag})
        hyps = [t.text for t in translate_lines(model, self.vocabs, sources, settings, device=self.device)]
        return hyps, references

    def evaluate(self, model, name: str, settings: DecodeSpec, limit: int | None = None) -> dict[str, float]:
        """Loss, perplexity and the recipe's metrics (BLEU, chrF, TER) on a split; of a list-form split, on
        each corpus (`bleu/de-en`) and their unweighted mean (`bleu`)."""
        names = self.data.corpus_splits(name)
        if names == [name]:
            return self._evaluate_one(model, name, settings, limit)
        each = {part.removeprefix(f"{name}."): self._evaluate_one(model, part, settings, limit) for part in names}
        means = {key: float(np.mean([r[key] for r in each.values()])) for key in next(iter(each.values()))}
        return {**means, **{f"{key}/{corpus}": v for corpus, r in each.items() for key, v in r.items()}}

    def _evaluate_one(self, model, name: str, settings: DecodeSpec, limit: int | None) -> dict[str, float]:
        results = self.loss_on(model, name)
        hyps, refs = self.decode_split(model, name, settings, limit)
        metrics = corpus_metrics(hyps, refs, self.recipe.eval.metrics, self.recipe.eval.tokenize)
        results.update({key: m.score for key, m in metrics.items()})
        return results

    def samples(self, model, name: str, settings: DecodeSpec, count: int) -> list[str]:
        shown = []
        for part in self.data.corpus_splits(name):
            hyps, refs = self.decode_split(model, part, settings, limit=count)
            sources = self.data.raw_pairs(part)[0][:count]
            shown += [f"  src: {src}\n  hyp: {hyp}\n  ref: {ref}" for src, hyp, ref in zip(sources, hyps, refs)]
        return shown

    def validate(self, model) -> dict[str, float]:
        beam = self.recipe.eval.valid_beam or self.recipe.decode.beam
        settings = self.recipe.decode.model_copy(update={"beam": beam, "n_best": 1, "strategy": "beam"})
        return self.evaluate(model, "valid", settings, self.recipe.eval.valid_decode_limit)
