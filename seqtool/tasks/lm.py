"""Language modelling: contiguous blocks of a token stream, recurrent state carried between blocks
(truncated backpropagation through time); perplexity per token and per word. On generated retrieval
text (data.generate.task: retrieval) also the accuracy of the most likely word at each query's answer,
over all queries and per band of gap (accuracy_gap<start>: gaps start .. start+band-1)."""

from __future__ import annotations

import torch

from seqtool.data.batching import LMBatch, stream_blocks, stream_rows
from seqtool.evaluation.metrics import perplexity
from seqtool.recipe.schema import TextDataSpec
from seqtool.registry import TASKS
from seqtool.tasks.base import Task

DEFAULT_STREAMS = 20


@TASKS.register("lm", config=TextDataSpec)
class LanguageModelTask(Task):
    metrics = ("loss", "ppl")

    def __init__(self, recipe, directory, device, *, rank: int = 0, world: int = 1):
        super().__init__(recipe, directory, device, rank=rank, world=world)
        self._train = None

    @classmethod
    def check(cls, recipe) -> list[str]:
        problems = [f"data.{name} needs a text file for task 'lm'" for name in ("train", "valid", "test")
                    if getattr(recipe.data, name) is not None
                    and getattr(getattr(recipe.data, name), "text", None) is None]
        generate, tokenizer = recipe.data.generate, recipe.data.tokenizer
        if generate is not None and generate.task != "retrieval":
            problems.append(f"data.generate.task {generate.task} makes translation pairs; it needs task: translation")
        if generate is not None and generate.task == "retrieval" and (tokenizer.kind, tokenizer.vocab_size) != (
                "word", None):
            problems.append("data.generate.task retrieval needs data.tokenizer {kind: word, vocab_size: null} "
                            "(one token a generated word)")
        return problems

    def epoch_batches(self, epoch: int) -> list[LMBatch]:
        """The same blocks every epoch (the stream order is the text's); each rank takes its rows."""
        if self._train is None:
            rows = self.recipe.train.batch_size or DEFAULT_STREAMS
            blocks = stream_blocks(self.data.stream("train").tokens, rows, self.recipe.data.block_len)
            self._train = [self._rows(b) for b in blocks]
        return self._train

    def _rows(self, block: LMBatch) -> LMBatch:
        if self.world == 1:
            return block
        pick = slice(self.rank, None, self.world)
        targets = block.targets[pick]
        return LMBatch(block.inputs[pick], targets, int((targets != 0).sum()), block.first)

    def batch(self, item: LMBatch) -> LMBatch:
        return item.to(self.device)

    def evaluate(self, model, name: str, settings=None, limit=None) -> dict[str, float]:
        """Perplexity over a whole split, every token predicted once with all the context before it
        in its stream (eval.lm_streams parallel streams); retrieval accuracy on generated retrieval text."""
        split = self.data.stream(name)
        nll, count, state = 0.0, 0, None
        with torch.inference_mode():
            for block in stream_blocks(split.tokens, self.recipe.eval.lm_streams, self.recipe.data.block_len):
                out = model.loss(block.to(self.device), state=state)
                nll, count, state = nll + float(out.nll), count + out.ntokens, out.state
        result = {"loss": nll / max(count, 1), "ppl": perplexity(nll, count),
                  "ppl_token": perplexity(nll, count), "ppl_word": perplexity(nll, split.words),
                  "tokens": count, "words": split.words}
        return result if split.gaps is None else {**result, **self._retrieval(model, split)}

    def _retrieval(self, model, split) -> dict[str, float]:
        rows, length, band = self.recipe.eval.lm_streams, self.recipe.data.block_len, self.recipe.data.generate.band
        gaps = torch.from_numpy(stream_rows(split.gaps, rows)[:, 1:])  # aligned with the blocks' targets
        asked, hits, state = [], [], None
        with torch.inference_mode():
            for i, block in enumerate(stream_blocks(split.tokens, rows, length)):
                block = block.to(self.device)
                features, state = model(block.inputs, None if block.first else state)
                gap = gaps[:, i * length : (i + 1) * length].to(self.device)
                asked.append(gap[gap > 0])
                hits.append((model.predict(features) == block.targets)[gap > 0])
        asked, hits = torch.cat(asked).cpu(), torch.cat(hits).cpu().float()
        result = {"accuracy": float(hits.mean()) if len(hits) else 0.0, "queries": len(hits)}
        starts = asked // band * band
        for start in starts.unique().tolist():
            result[f"accuracy_gap{start}"] = float(hits[starts == start].mean())
        return result

    def validate(self, model) -> dict[str, float]:
        return self.evaluate(model, "valid")
