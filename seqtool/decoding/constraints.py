"""Lexically constrained decoding with dynamic beam allocation (DBA; Post and Vilar, "Fast Lexical
Constrained Decoding with Dynamic Beam Allocation for Neural Machine Translation", NAACL 2018).

Each sentence has phrases (token sequences) its output must contain. A hypothesis's progress is the
set of constraint tokens it has met; a phrase is met token by token, in order, and a token that breaks
a phrase half-way undoes the phrase's tokens met so far (the hypothesis may begin it again). Every step,
per sentence (sec. 3):
  1. candidates: the beam's best 2K extensions, for every row each token that would advance its
     constraints (the next token of the phrase it is inside, else the first token of each unmet
     phrase), and every row's single best token; duplicates removed;
  2. banks: candidates are grouped by the number of constraint tokens they have met, 0..C;
  3. allocation: the K slots are split evenly over the C + 1 banks, the remainder to bank C; moving
     from bank C down, slots a bank cannot fill pass to the bank below (those of bank 0 wrap to bank
     C), and each bank keeps its best candidates by score.
EOS is allowed only once every constraint is met (search.py masks it), except at the length limit,
which grows by C for a constrained sentence; a row's EOS finishes a hypothesis when it ranks among the
K best candidates of its bank, so that with no constraints (one bank) this is plain beam search. A
finished hypothesis that meets every constraint outranks any that does not.

All of it is tensor work over every row of every sentence at once: a sentence's phrases are one flat
row of token ids (`tokens`, `phrase` numbering the phrase of each slot), copied onto its K rows so
that progress reorders with the beam as any other row state does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from seqtool.models.base import Rows
from seqtool.specials import PAD


@dataclass
class Constraints(Rows):
    """Per row: its sentence's constraint tokens (flat, phrase after phrase) and its progress."""

    tokens: torch.Tensor  # (N, C) constraint token ids, PAD past the sentence's last
    phrase: torch.Tensor  # (N, C) which phrase each slot belongs to, -1 past the last
    starts: torch.Tensor  # (N, C) bool, the slot begins a phrase
    goes_on: torch.Tensor  # (N, C) bool, the slot's phrase goes on after it
    met: torch.Tensor  # (N, C) bool, slots met so far
    inside: torch.Tensor  # (N,) slot of the last token met of a phrase not yet complete; -1 when none

    @classmethod
    def build(cls, phrases: list[list[list[int]]], device: torch.device | str = "cpu") -> Constraints:
        """One row per sentence from its phrases (lists of token ids; empty phrases are ignored)."""
        width = max([1] + [sum(len(p) for p in sentence) for sentence in phrases])
        tokens = torch.full((len(phrases), width), PAD, dtype=torch.long)
        phrase = torch.full((len(phrases), width), -1, dtype=torch.long)
        for row, sentence in enumerate(phrases):
            flat = [(number, token) for number, p in enumerate(q for q in sentence if q) for token in p]
            if flat:
                phrase[row, : len(flat)] = torch.tensor([number for number, _ in flat])
                tokens[row, : len(flat)] = torch.tensor([token for _, token in flat])
        edge = torch.full((len(phrases), 1), -1, dtype=torch.long)
        starts = (phrase >= 0) & (phrase != torch.cat([edge, phrase[:, :-1]], 1))
        goes_on = (phrase >= 0) & (phrase == torch.cat([phrase[:, 1:], edge], 1))
        return cls(*(t.to(device) for t in (tokens, phrase, starts, goes_on)),
                   torch.zeros_like(tokens, dtype=torch.bool, device=device),
                   torch.full((len(phrases),), -1, dtype=torch.long, device=device))

    def total(self) -> torch.Tensor:
        """(N,) constraint tokens of each row's sentence."""
        return (self.phrase >= 0).sum(1)

    def unmet(self) -> torch.Tensor:
        """(N,) constraint tokens still to meet."""
        return self.total() - self.met.sum(1)

    def _next_slot(self) -> torch.Tensor:
        return (self.inside + 1).clamp(max=self.tokens.size(1) - 1)

    def allowed(self) -> torch.Tensor:
        """(N, C) slots whose token would advance the row: the next token of the phrase it is inside,
        else the first token of every unmet phrase."""
        slots = torch.arange(self.tokens.size(1), device=self.tokens.device)
        inside = (self.inside >= 0)[:, None]
        return torch.where(inside, slots == self._next_slot()[:, None], self.starts & ~self.met)

    def advance(self, word: torch.Tensor) -> Constraints:
        """The progress after each row emits `word` (N,)."""
        slots = torch.arange(self.tokens.size(1), device=self.tokens.device)
        inside = self.inside >= 0
        following = self._next_slot()
        hit = inside & (self.tokens.gather(1, following[:, None])[:, 0] == word)
        current = self.phrase.gather(1, self.inside.clamp(min=0)[:, None])
        broken = (inside & ~hit)[:, None] & (self.phrase == current)
        met = (self.met & ~broken) | (hit[:, None] & (slots == following[:, None]))
        begins = (~hit)[:, None] & self.starts & ~met & (self.tokens == word[:, None])
        first = begins & (begins.cumsum(1) == 1)  # a word that begins several unmet phrases takes the first
        met = met | first
        slot = torch.where(hit, following, first.int().argmax(1))
        goes_on = (hit | first.any(1)) & self.goes_on.gather(1, slot[:, None])[:, 0]
        return replace(self, met=met, inside=torch.where(goes_on, slot, -1))


def allocate(scores: torch.Tensor, parents: torch.Tensor, tokens: torch.Tensor, row_scores: torch.Tensor,
             log_probs: torch.Tensor, finish: torch.Tensor, constraints: Constraints,
             K: int) -> tuple[torch.Tensor, ...]:
    """DBA's K picks per sentence: (n, K) scores (-inf where a sentence has fewer candidates), parents
    (rows) and tokens (PAD where empty), their progress (n * K rows), and (n, K) whether each row's EOS
    finishes a hypothesis.
    Inputs: the beam's best (n, M) non-EOS candidates (scores, parents, tokens), the rows' (N,)
    cumulative scores, (N, V) next-token log-probabilities without EOS, and (N,) the scores of ending
    each row (-inf where not allowed).

    A row's EOS finishes a hypothesis when it ranks among the best K candidates of its bank (EOS
    ones included), as plain beam search finishes the EOS among its best K: with no constraints
    (one bank) the two searches are the same."""
    n, N = scores.size(0), row_scores.size(0)
    rows = torch.arange(N, device=scores.device)
    per_row = constraints.allowed()  # (1) what advances each row, and each row's best token
    wanted = row_scores[:, None] + log_probs.gather(1, constraints.tokens)
    best, best_token = log_probs.max(1)
    scores = torch.cat([scores, wanted.masked_fill(~per_row, float("-inf")).view(n, -1),
                        (row_scores + best).view(n, K)], 1)
    parents = torch.cat([parents, rows[:, None].expand_as(per_row).reshape(n, -1), rows.view(n, K)], 1)
    tokens = torch.cat([tokens, constraints.tokens.reshape(n, -1), best_token.view(n, K)], 1)
    scores, parents, tokens = _unique(scores, parents, tokens, log_probs.size(1))
    progress = constraints.reorder(parents.reshape(-1)).advance(tokens.reshape(-1))
    bank = progress.met.sum(1).view(n, -1)  # (2)
    real = scores > float("-inf")
    top = constraints.total().view(n, K)[:, 0]
    banks = int(top.max()) + 1
    in_bank = torch.nn.functional.one_hot(bank, banks) * real[..., None]  # (n, M, banks)
    sizes = _bank_sizes(in_bank.sum(1), top, K)  # (3)
    rank = (in_bank.cumsum(1) - 1).gather(2, bank[..., None])[..., 0]
    chosen = real & (rank < sizes.gather(1, bank))
    position = torch.arange(scores.size(1), device=scores.device)
    pick = torch.where(chosen, position, position + scores.size(1)).topk(K, dim=1, largest=False).indices
    kept = chosen.gather(1, pick)
    ending = _finishing(finish.view(n, K), constraints.met.sum(1).view(n, K), scores, bank, K)
    flat = (pick + torch.arange(n, device=pick.device)[:, None] * scores.size(1)).view(-1)
    return (scores.gather(1, pick).masked_fill(~kept, float("-inf")), parents.gather(1, pick),
            tokens.gather(1, pick).masked_fill(~kept, PAD), progress.reorder(flat), ending)


def _finishing(finish: torch.Tensor, finish_bank: torch.Tensor, scores: torch.Tensor, bank: torch.Tensor,
               K: int) -> torch.Tensor:
    """(n, K) EOS candidates among the K best of their bank: fewer than K candidates of the same bank
    rank above them (other EOS ones ahead on ties by row order, as a stable sort puts them)."""
    same = bank[:, None, :] == finish_bank[:, :, None]  # (n, K, M)
    above = (same & (scores[:, None, :] > finish[:, :, None])).sum(-1)
    row = torch.arange(K, device=finish.device)
    ahead = (finish[:, None, :] > finish[:, :, None]) | ((finish[:, None, :] == finish[:, :, None]) &
                                                          (row[None, :] < row[:, None]))
    above = above + ((finish_bank[:, None, :] == finish_bank[:, :, None]) & ahead).sum(-1)
    return (above < K) & (finish > float("-inf"))


def _unique(scores, parents, tokens, vocab: int):
    """Candidates sorted best first, where the same (row, token) found twice keeps its best copy (the
    others score -inf: a masked copy may share its key with a real one)."""
    order = scores.sort(dim=1, descending=True, stable=True).indices
    scores, parents, tokens = scores.gather(1, order), parents.gather(1, order), tokens.gather(1, order)
    key, by_key = (parents * vocab + tokens).sort(dim=1, stable=True)
    twice = torch.zeros_like(key, dtype=torch.bool)
    twice[:, 1:] = key[:, 1:] == key[:, :-1]
    scores = scores.scatter(1, by_key, scores.gather(1, by_key).masked_fill(twice, float("-inf")))
    return scores, parents, tokens


def _bank_sizes(counts: torch.Tensor, top: torch.Tensor, K: int) -> torch.Tensor:
    """(n, banks) slots per bank: K split evenly over banks 0..top (remainder to `top`), then, from
    the top bank down, the slots a bank has no candidates for pass to the bank below (bank 0's to top).

    Passing down is Lindley's recursion, carry_b = max(0, carry_{b+1} + share_b - counts_b) from
    carry above the top = 0, whose solution is carry_b = P_b - min_{m >= b} P_m for the suffix sums
    P_b = sum_{j >= b} (share_j - counts_j), P above the top = 0: a few tensor ops, no loop over banks."""
    n, banks = counts.shape
    sentence = torch.arange(n, device=counts.device)
    share = K // (top + 1)
    sizes = torch.where(torch.arange(banks, device=counts.device) <= top[:, None], share[:, None], 0)
    sizes[sentence, top] += K - share * (top + 1)
    suffix = torch.cat([(sizes - counts).flip(1).cumsum(1).flip(1), counts.new_zeros(n, 1)], 1)
    carry = suffix - suffix.flip(1).cummin(1).values.flip(1)  # (n, banks + 1), carry passed below each bank
    sizes = sizes + carry[:, 1:] - carry[:, :-1]
    sizes[sentence, top] += carry[:, 0]
    return sizes
