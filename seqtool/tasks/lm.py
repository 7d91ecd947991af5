"""Language modelling: contiguous blocks of a token stream, recurrent state carried between blocks
(truncated backpropagation through time); perplexity per token and per word."""

from __future__ import annotations

import torch

from seqtool.data.batching import LMBatch, stream_blocks
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
                    if getattr(recipe.data, name) is not None and getattr(recipe.data, name).text is None]
        if recipe.data.generate is not None:
            problems.append("data.generate makes translation pairs; it needs task: translation")
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
        in its stream (eval.lm_streams parallel streams)."""
        split = self.data.stream(name)
        nll, count, state = 0.0, 0, None
        with torch.inference_mode():
            for block in stream_blocks(split.tokens, self.recipe.eval.lm_streams, self.recipe.data.block_len):
                out = model.loss(block.to(self.device), state=state)
                nll, count, state = nll + float(out.nll), count + out.ntokens, out.state
        return {"loss": nll / max(count, 1), "ppl": perplexity(nll, count),
                "ppl_token": perplexity(nll, count), "ppl_word": perplexity(nll, split.words),
                "tokens": count, "words": split.words}

    def validate(self, model) -> dict[str, float]:
        return self.evaluate(model, "valid")
