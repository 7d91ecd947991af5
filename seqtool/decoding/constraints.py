"""Lexically constrained decoding with dynamic beam allocation (DBA; Post and Vilar, "Fast Lexical
Constrained Decoding with Dynamic Beam Allocation for Neural Machine Translation", NAACL 2018).

Each sentence has phrases (token sequences) its output must contain; a phrase asked for r times must
occur r times. Every phrase is matched on its own, as a substring of the output, so phrases may
overlap or share words ("hundred eighty" and "eighty four" are both in "hundred eighty four"): per
phrase, the set of its prefixes that end the output so far is kept (Shift-And string matching, one
bit per constraint token), and a phrase is met each time its last token completes a match. A
hypothesis's progress is the number of constraint tokens it has met: r x |p| for a phrase met r
times, else its longest current partial match plus the occurrences so far. Every step, per sentence (sec. 3):
  1. candidates: the beam's best 2K extensions, for every row each token that would advance an unmet
     phrase (its first token, or the next token after a partial match), and every row's single best
     token; duplicates removed;
  2. banks: candidates are grouped by their progress after the token, 0..C;
  3. allocation: the K slots are split evenly over the C + 1 banks, the remainder to bank C; moving
     from bank C down, slots a bank cannot fill pass to the bank below (those of bank 0 wrap to bank
     C), and each bank keeps its best candidates by score.
EOS is allowed only once every constraint is met (search.py masks it), except at the length limit,
which grows by C for a constrained sentence; a row's EOS finishes a hypothesis when it ranks among the
K best candidates of its bank, so that with no constraints (one bank) this is plain beam search. A
finished hypothesis that meets every constraint outranks any that does not.

All of it is tensor work over every row of every sentence at once: a sentence's distinct phrases are
one flat row of token slots, copied onto its K rows so that progress reorders with the beam as any
other row state does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import torch

from seqtool.models.base import Rows
from seqtool.specials import PAD


@dataclass
class Constraints(Rows):
    """Per row: its sentence's distinct phrases as flat token slots, and the row's matches."""

    tokens: torch.Tensor  # (N, C) constraint token ids, PAD past the sentence's last slot
    offset: torch.Tensor  # (N, C) position of each slot in its phrase (0: the first token); -1 past the last
    end: torch.Tensor  # (N, C) index of the last slot of each slot's phrase
    need: torch.Tensor  # (N, C) how many times each slot's phrase must occur (0 past the last slot)
    length: torch.Tensor  # (N, C) length of each slot's phrase
    last: torch.Tensor  # (N, C) bool: the slot ends its phrase
    size: torch.Tensor  # (N,) constraint tokens of the sentence (a phrase's once per time it is asked for)
    active: torch.Tensor  # (N, C) bool: the output ends with the slot's phrase up to the slot (not the last)
    found: torch.Tensor  # (N, C) occurrences of each phrase so far, kept at its last slot
    met: torch.Tensor  # (N,) progress: constraint tokens met (r x |p| for a phrase met r times, else |p| per
    # occurrence so far plus its longest partial match)

    @classmethod
    def build(cls, phrases: list[list[list[int]]], device: torch.device | str = "cpu") -> Constraints:
        """One row per sentence from its phrases (lists of token ids; empty phrases are ignored)."""
        counted = [Counter(tuple(p) for p in sentence if p) for sentence in phrases]
        width = max([1] + [sum(len(p) for p in c) for c in counted])
        tokens = torch.full((len(phrases), width), PAD, dtype=torch.long)
        offset = torch.full((len(phrases), width), -1, dtype=torch.long)
        end, need, length = (torch.zeros(len(phrases), width, dtype=torch.long) for _ in range(3))
        for row, sentence in enumerate(counted):
            slot = 0
            for phrase, times in sentence.items():
                span = slice(slot, slot + len(phrase))
                tokens[row, span] = torch.tensor(phrase)
                offset[row, span] = torch.arange(len(phrase))
                end[row, span], need[row, span], length[row, span] = slot + len(phrase) - 1, times, len(phrase)
                slot += len(phrase)
        last = (offset >= 0) & (end == torch.arange(width))
        return cls(*(t.to(device) for t in (tokens, offset, end, need, length, last, (last * need * length).sum(1))),
                   torch.zeros(len(phrases), width, dtype=torch.bool, device=device),
                   torch.zeros(len(phrases), width, dtype=torch.long, device=device),
                   torch.zeros(len(phrases), dtype=torch.long, device=device))

    def unmet(self) -> torch.Tensor:
        """(N,) constraint tokens still to meet."""
        return self.size - self.met

    def _extends(self) -> torch.Tensor:
        """(N, C) slots that would extend a match: a phrase's first, or the one after an active slot."""
        before = torch.cat([torch.zeros_like(self.active[:, :1]), self.active[:, :-1]], 1)
        return (self.offset == 0) | (before & (self.offset > 0))

    def allowed(self) -> torch.Tensor:
        """(N, C) slots whose token would advance the row: those that extend a match of an unmet phrase."""
        return self._extends() & (self.found.gather(1, self.end) < self.need)

    def advance(self, word: torch.Tensor) -> Constraints:
        """The matches after each row emits `word` (N,)."""
        match = self._extends() & (self.tokens == word[:, None])
        active, found = match & ~self.last, self.found + (match & self.last)
        partial = torch.zeros_like(found).scatter_reduce(1, self.end, active * (self.offset + 1), "amax")
        counted = torch.minimum(found, self.need)
        return replace(self, active=active, found=found,
                       met=(self.last * (counted * self.length + (counted < self.need) * partial)).sum(1))


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
    bank = progress.met.view(n, -1)  # (2)
    real = scores > float("-inf")
    top = constraints.size.view(n, K)[:, 0]
    banks = int(top.max()) + 1
    in_bank = torch.nn.functional.one_hot(bank, banks) * real[..., None]  # (n, M, banks)
    sizes = _bank_sizes(in_bank.sum(1), top, K)  # (3)
    rank = (in_bank.cumsum(1) - 1).gather(2, bank[..., None])[..., 0]
    chosen = real & (rank < sizes.gather(1, bank))
    position = torch.arange(scores.size(1), device=scores.device)
    pick = torch.where(chosen, position, position + scores.size(1)).topk(K, dim=1, largest=False).indices
    kept = chosen.gather(1, pick)
    ending = _finishing(finish.view(n, K), constraints.met.view(n, K), scores, bank, K)
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
