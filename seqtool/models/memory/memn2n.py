"""End-to-end memory networks (Sukhbaatar, Szlam, Weston and Fergus, NIPS 2015, arXiv 1503.08895).

Question answering (arch memn2n, task qa). The memories x_1..x_n are a story's statements, most recent
first (slot 0), q is the question, and there are K hops with embeddings A^k, C^k, B (d x V each):
    m_i = sum_j l_j * A x_ij + T_A(i)          memory input vectors    (BoW: l_j = 1)
    c_i = sum_j l_j * C x_ij + T_C(i)          memory output vectors
    u^1 = sum_j l_j * B q_j
    p^k_i = softmax_i(u^k . m^k_i)             (linear start: p^k_i = u^k . m^k_i)
            over memory_size slots: the slots a short story leaves empty are zero vectors, score 0
    o^k = sum_i p^k_i c^k_i
    u^{k+1} = u^k + o^k  (adjacent tying)   or   H u^k + o^k  (layer-wise tying)
    a = softmax(W u^{K+1})
Position encoding (PE), for a sentence of J words, d dimensions, 1-based j and k:
    l_kj = (1 - j/J) - (k/d)(1 - 2j/J) = (1 - k/d) + (j/J)(2k/d - 1)
so m_k = (1 - k/d) sum_j (A x_j)_k + (2k/d - 1) sum_j (j/J)(A x_j)_k: two weighted bags of words per
sentence. The authors' code (build_model.m) weighs instead by the place from the sentence start with
one fixed J for all sentences (`position_absolute`, J = position_span):
    l_kj = 1 + 4 (k - (d+1)/2)(j - (J+1)/2) / (d J)
which lets a word match itself across sentences of different lengths (bAbI task 16, basic induction,
went from 52% to under 1% error with it). The bags are (sentences, V) weight matrices built once per
batch and shared by every embedding, so each sentence encoding is one small dense matmul (bAbI's V
is under 200); this is several times faster on a CPU than gathering word vectors or embedding_bag,
whose backward sorts.
Weight tying: adjacent: A^{k+1} = C^k, B = A^1, W^T = C^K (K + 1 embeddings; the temporal vectors
belong to their embedding and are tied with it, as in the authors' code); layer-wise: A^k = A and
C^k = C for every hop, plus the linear map H; B and W are separate.
Training tricks:
  * a fixed memory (the authors' code; the paper is silent): a story of n < memory_size statements
    leaves memory_size - n empty slots, all-nil sentences whose vectors are zero, so each takes
    weight exp(0) in every hop's softmax and adds nothing to o: attention can rest on nothing
    (`empty_slots_attend`; masking them out instead cost about 3 points of mean bAbI 1k error here);
  * temporal encoding: T_A, T_C hold one learned vector per memory slot (slot 0 = most recent);
  * random noise (RN): while training, k ~ U{0..ceil(0.1 n)} empty memories are interspersed among a
    story's n. As in the authors' code they are gaps in the temporal indices, not extra slots: the n
    memories get n distinct slots drawn from 0..n+k-1, in order, so T_A and T_C see gaps;
  * linear start (LS): the memory softmaxes are removed at first and put back when the validation loss
    stops falling, or after linear_start_steps updates as the authors' code does (30 epochs for joint
    training); LinearStart's state is in the model's buffers and so in every checkpoint;
  * while LS lasts the learning rate stays at linear_start_lr (paper: 0.5) times the schedule's first
    value; when the softmaxes return the schedule starts again from its first step ("training
    recommenced": the authors' train_linear_start.m runs a fresh schedule after the LS epochs). The
    halving and gradient clipping are the recipe's train.schedule and clip_norm.

Language model (arch memn2n_lm, task lm; the authors' MemN2N-lang-model): the memories are the
previous memory_size words, the window ending with the current input word, each with its temporal
vector; the query is the constant vector 0.1; layer-wise tying (A, C, H shared by all hops); in every
hop the first linear_dim units of H u + o stay linear and the others pass a ReLU; the output is
softmax(W u^{K+1}). The state carried between blocks is the window of the last memory_size token ids.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from seqtool.models.base import ClassifierModel, LanguageModel, LossOut, VocabSizes
from seqtool.models.config import ModelConfig
from seqtool.registry import MODELS
from seqtool.specials import PAD

NEG = -1e30  # softmax fill for empty slots: exp gives 0, and a row of them stays finite
POSITION_SPAN = 12  # the authors' code's J for bAbI: the longest sentence (11 words) plus its time word


class MemoryEmbedding(nn.Module):
    """Word vectors (V, d) and, with temporal encoding, one vector per memory slot (slots, d)."""

    def __init__(self, vocab: int, dim: int, slots: int):
        super().__init__()
        self.words = nn.Parameter(torch.empty(vocab, dim))
        self.time = nn.Parameter(torch.empty(slots, dim)) if slots else None


def init_normal(module: nn.Module, std: float) -> None:
    """N(0, std^2) for every weight (paper: 0.1 for bAbI; 0.05 in the LM code); the PAD word stays 0."""
    for p in module.parameters():
        nn.init.normal_(p, 0.0, std)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, MemoryEmbedding):
                sub.words[PAD].zero_()


class LinearStart(nn.Module):
    """Linear start as a switch in buffers (so checkpoints carry it and resume is exact).

    Phases: LINEAR -> ASKED when `patience` validations in a row brought no lower loss (the paper's
    rule), or after `steps` updates when that is set (the authors' code: a fixed number of epochs)
    -> SOFTMAX at the next training forward. Switching at the next training step rather than during
    validation keeps every checkpoint consistent: one written right after that validation still runs
    (and is evaluated) in the mode its validation numbers were measured in.
    """

    LINEAR, ASKED, SOFTMAX = 0, 1, 2

    def __init__(self, enabled: bool, patience: int, steps: int | None = None):
        super().__init__()
        self.patience, self.steps = patience, steps
        self.register_buffer("phase", torch.tensor(self.LINEAR if enabled else self.SOFTMAX))
        self.register_buffer("best", torch.tensor(math.inf))
        self.register_buffer("bad", torch.tensor(0))
        self.register_buffer("since", torch.tensor(-1 if enabled else 0))  # trainer step of the switch

    @property
    def linear(self) -> bool:
        return int(self.phase) != self.SOFTMAX

    def observe(self, loss: float) -> None:
        """Take one validation loss; ask for the softmaxes when it has stopped falling."""
        if int(self.phase) != self.LINEAR or self.steps is not None:
            return
        if loss < float(self.best):
            self.best.fill_(loss)
            self.bad.zero_()
            return
        self.bad += 1
        if int(self.bad) >= self.patience:
            self.phase.fill_(self.ASKED)

    def step(self, training: bool) -> bool:
        """True when this forward runs without softmax; a training forward performs an asked switch."""
        if training and int(self.phase) == self.ASKED:
            self.phase.fill_(self.SOFTMAX)
        return self.linear

    def clock(self, step: int, linear_scale: float) -> tuple[int, float]:
        """(schedule step, lr multiplier) for trainer step `step`: the schedule's first step while linear,
        then the steps since the softmaxes returned."""
        if self.steps is not None and step + 1 >= self.steps and int(self.phase) == self.LINEAR:
            self.phase.fill_(self.ASKED)
        if self.linear:
            return 0, linear_scale
        if int(self.since) < 0:
            self.since.fill_(step)
        return step - int(self.since), 1.0


# -- question answering --------------------------------------------------------------------------
class MemN2NConfig(ModelConfig):
    arch: Literal["memn2n"] = "memn2n"
    tasks: ClassVar = ("qa",)
    embed_dim: int = Field(20, gt=0, description="d (paper: 20 for one task, 50 for joint training)")
    hops: int = Field(3, ge=1, description="K memory hops")
    memory_size: int = Field(50, gt=0, description="temporal slots; at least data.babi.memory_size")
    encoding: Literal["bow", "position", "position_absolute"] = Field(
        "position", description="sentence vectors: bag of words; position encoding (PE, the paper's formula); or "
        "position_absolute, the authors' code's PE, which weighs word j by its place from the sentence start")
    position_span: int = Field(
        POSITION_SPAN, gt=0,
        description="position_absolute: J (the authors' code: the longest sentence plus its time word)")
    temporal: bool = Field(True, description="temporal encoding: a learned vector per memory slot (T_A, T_C)")
    tying: Literal["adjacent", "layerwise"] = Field(
        "adjacent", description="adjacent: A^{k+1} = C^k, B = A^1, W = C^K; layerwise: one A, one C, plus H")
    linear_start: bool = Field(
        False, description="LS: train without the memory softmaxes until the validation loss stops falling")
    linear_start_patience: int = Field(
        1, ge=1, description="LS: validations in a row without a lower loss before the softmaxes return")
    linear_start_steps: int | None = Field(
        None, gt=0, description="LS: put the softmaxes back after this many updates (the authors' code: 30 epochs) "
        "instead of when the validation loss stalls")
    linear_start_lr: float = Field(
        0.5, gt=0, le=1, description="LS: learning-rate multiplier while the softmaxes are out (paper: 0.005 / 0.01); "
        "the schedule restarts when they return")
    random_noise: float = Field(
        0.0, ge=0, lt=1, description="RN: while training, intersperse up to this fraction of empty memories "
        "(paper: 0.1); needs temporal")
    empty_slots_attend: bool = Field(
        True, description="the memory has memory_size slots and the empty ones (zero vectors, score 0) stay in "
        "the softmax, as in the authors' code, so attention can rest on nothing; false: only statements")
    init_std: float = Field(0.1, gt=0, description="weights ~ N(0, init_std^2) (paper: 0.1)")

    @model_validator(mode="after")
    def _noise_needs_time(self) -> MemN2NConfig:
        if self.random_noise > 0 and not self.temporal:
            raise ValueError("random_noise shifts temporal slots; it needs temporal: true")
        return self

    def recipe_problems(self, recipe) -> list[str]:
        babi = recipe.data.babi
        if babi is not None and self.temporal and babi.memory_size > self.memory_size:
            return [f"model.memory_size ({self.memory_size}) must be at least data.babi.memory_size "
                    f"({babi.memory_size}): every memory slot needs a temporal vector"]
        return []


def position_coefficients(dim: int, encoding: str = "position", span: int = POSITION_SPAN) -> torch.Tensor | None:
    """(2, d): the factors c0_k, c1_k of l_kj = c0_k + c1_k w_j, k = 1..d (None for bag of words):
    PE (1 - k/d) and (2k/d - 1); the absolute variant 1 and 4(k - (d+1)/2) / (d J)."""
    if encoding == "bow":
        return None
    k = torch.arange(1, dim + 1, dtype=torch.float32)
    if encoding == "position":
        return torch.stack([1 - k / dim, 2 * k / dim - 1])
    return torch.stack([torch.ones(dim), 4 * (k - (dim + 1) / 2) / (dim * span)])


def sentence_bags(tokens: torch.Tensor, vocab: int, encoding: str = "position",
                  span: int = POSITION_SPAN) -> torch.Tensor:
    """Bag weights of (N, W) sentences: (N, V) word counts, or with a position encoding (2N, V) holding
    the counts and the sums of w_j per word: j/J (PE, J the sentence's length) or j - (J+1)/2 (the
    absolute variant, J = span). PAD positions count in neither."""
    real = (tokens != PAD).float()
    weights, ids = real, tokens
    if encoding != "bow":
        j = real.cumsum(1)
        w = j / real.sum(1, keepdim=True).clamp(min=1) if encoding == "position" else j - (span + 1) / 2
        weights, ids = torch.cat([real, w * real]), torch.cat([tokens, tokens])
    return real.new_zeros(ids.size(0), vocab).scatter_add_(1, ids, weights)


def encode_sentences(words: torch.Tensor, bags: torch.Tensor, coefficients: torch.Tensor | None) -> torch.Tensor:
    """(N, d) sentence vectors sum_j l_j * E x_j (l_j = 1 without PE) from sentence_bags' weights."""
    out = bags @ words
    if coefficients is None:
        return out
    plain, relative = out.chunk(2)
    return plain * coefficients[0] + relative * coefficients[1]


class MemN2N(ClassifierModel):
    def __init__(self, cfg: MemN2NConfig, vocab: int):
        super().__init__()
        self.cfg = cfg
        K, d = cfg.hops, cfg.embed_dim
        slots = cfg.memory_size if cfg.temporal else 0
        if cfg.tying == "adjacent":  # embedding e is C^e and A^{e+1}; B = A^1, W = C^K
            count, self.query_index = K + 1, 0
            self.input_index, self.output_index = list(range(K)), list(range(1, K + 1))
        else:  # embeddings B, A, C
            count, self.query_index = 3, 0
            self.input_index, self.output_index = [1] * K, [2] * K
        self.embeddings = nn.ModuleList(MemoryEmbedding(vocab, d, slots) for _ in range(count))
        self.H = nn.Linear(d, d, bias=False) if cfg.tying == "layerwise" else None
        self.W = nn.Parameter(torch.empty(vocab, d)) if cfg.tying == "layerwise" else None
        self.linear_start = LinearStart(cfg.linear_start, cfg.linear_start_patience, cfg.linear_start_steps)
        self.register_buffer("coefficients", position_coefficients(d, cfg.encoding, cfg.position_span),
                             persistent=False)
        init_normal(self, cfg.init_std)

    def schedule_clock(self, step: int) -> tuple[int, float]:
        """The step at which the trainer reads its lr schedule, and a multiplier (linear start's)."""
        return self.linear_start.clock(step, self.cfg.linear_start_lr)

    def validated(self, metrics: dict[str, float]) -> dict[str, float]:
        """The validation loss drives linear start; reports the mode the metrics were measured in."""
        linear = float(self.linear_start.linear)
        self.linear_start.observe(metrics["loss"])
        return {"linear": linear}

    def memory_input(self, hop: int) -> MemoryEmbedding:
        """A^{hop+1} (hops count from 0 here)."""
        return self.embeddings[self.input_index[hop]]

    def memory_output(self, hop: int) -> MemoryEmbedding:
        """C^{hop+1}."""
        return self.embeddings[self.output_index[hop]]

    def query_embedding(self) -> MemoryEmbedding:
        return self.embeddings[self.query_index]

    def answer_weight(self) -> torch.Tensor:
        """W (V, d): C^K's word vectors with adjacent tying."""
        return self.W if self.W is not None else self.embeddings[-1].words

    def forward(self, story: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer logits (B, V) and attention (B, K, M) for statements (B, M, W) and questions (B, Q)."""
        B, M, W = story.shape
        mask = story[:, :, 0] != PAD  # (B, M) real statements; they come first
        linear = self.linear_start.step(self.training)
        vocab, bag = self.answer_weight().size(0), (self.cfg.encoding, self.cfg.position_span)
        rows = mask.reshape(-1).nonzero().squeeze(1)  # only real statements are encoded (~1/4 in joint batches)
        bags = sentence_bags(story.reshape(B * M, W)[rows], vocab, *bag)
        slots = self._slots(mask)
        encoded = {}  # adjacent tying reuses C^k as A^{k+1}: encode each embedding once

        def memories(index: int) -> torch.Tensor:
            if index not in encoded:
                vectors = encode_sentences(self.embeddings[index].words, bags, self.coefficients)  # (R, d)
                vectors = vectors.new_zeros(B * M, vectors.size(1)).index_copy(0, rows, vectors).view(B, M, -1)
                time = self.embeddings[index].time
                encoded[index] = vectors if time is None else vectors + time[slots] * mask.unsqueeze(-1)
            return encoded[index]

        u = encode_sentences(self.query_embedding().words, sentence_bags(query, vocab, *bag),
                             self.coefficients)  # (B, d)
        attention = []
        for hop in range(self.cfg.hops):
            m, c = memories(self.input_index[hop]), memories(self.output_index[hop])  # (B, M, d)
            scores = torch.bmm(m, u.unsqueeze(2)).squeeze(2)  # (B, M)
            p = scores.masked_fill(~mask, 0.0) if linear else self._attend(scores, mask)
            o = torch.bmm(p.unsqueeze(1), c).squeeze(1)  # (B, d)
            u = (u if self.H is None else self.H(u)) + o
            attention.append(p)
        return u @ self.answer_weight().t(), torch.stack(attention, 1)

    def _attend(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Softmax over the statements; with empty_slots_attend the memory_size - n empty slots join it
        with score 0 (zero vectors, as in the authors' fixed-size memory), through one extra logit
        log(memory_size - n) whose mass is dropped: p_i = exp(s_i) / (sum_j exp(s_j) + memory_size - n)."""
        scores = scores.masked_fill(~mask, NEG)
        if not self.cfg.empty_slots_attend:
            return torch.softmax(scores, -1)
        empty = (self.cfg.memory_size - mask.sum(1, keepdim=True)).clamp(min=0).float()
        return torch.softmax(torch.cat([scores, empty.log()], 1), -1)[:, :-1]

    def _slots(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, M) temporal slot of each memory: 0..n-1, or with random noise while training, n distinct
        slots drawn in order from 0..n+k-1, k ~ U{0..ceil(noise * n)} (capped at the last slot)."""
        B, M = mask.shape
        noise = self.cfg.random_noise
        slots = torch.arange(M, device=mask.device).expand(B, M)
        if not (self.training and noise > 0):
            return slots
        count = mask.sum(1)
        extra = (torch.rand(B, device=mask.device) * (torch.ceil(noise * count) + 1)).floor().long()
        width = M + math.ceil(noise * M)
        keys = torch.rand(B, width, device=mask.device)
        keys[torch.arange(width, device=mask.device) >= (count + extra).unsqueeze(1)] = 2.0
        drawn = keys.argsort(1)[:, :M].masked_fill(~mask, width)
        return drawn.sort(1).values.clamp(max=self.cfg.memory_size - 1)

    def loss(self, batch, label_smoothing: float = 0.0, state=None) -> LossOut:
        logits, _ = self(batch.story, batch.query)
        loss = F.cross_entropy(logits, batch.answer, reduction="sum", label_smoothing=label_smoothing)
        nll = F.cross_entropy(logits, batch.answer, reduction="sum") if label_smoothing else loss
        return LossOut(loss, nll.detach(), batch.ntokens)


@MODELS.register("memn2n", config=MemN2NConfig)
def build_memn2n(cfg: MemN2NConfig, sizes: VocabSizes) -> MemN2N:
    return MemN2N(cfg, sizes.tgt)


# -- language model ------------------------------------------------------------------------------
class MemN2NLMConfig(ModelConfig):
    arch: Literal["memn2n_lm"] = "memn2n_lm"
    tasks: ClassVar = ("lm",)
    embed_dim: int = Field(150, gt=0, description="d (paper's PTB model: 150)")
    linear_dim: int = Field(75, ge=0, description="units of each hop's state kept linear; the rest pass a ReLU")
    hops: int = Field(6, ge=1, description="K memory hops (layer-wise tying)")
    memory_size: int = Field(100, gt=0, description="previous words held in memory")
    query_init: float = Field(0.1, description="every unit of the constant query u^1")
    init_std: float = Field(0.05, gt=0, description="weights ~ N(0, init_std^2)")

    @model_validator(mode="after")
    def _linear_fits(self) -> MemN2NLMConfig:
        if self.linear_dim > self.embed_dim:
            raise ValueError(f"linear_dim ({self.linear_dim}) cannot exceed embed_dim ({self.embed_dim})")
        return self


def band(full: torch.Tensor, width: int) -> torch.Tensor:
    """(B, T, S) -> (B, T, width) with out[:, t, i] = full[:, t, t + 1 + i], for S = width + T.

    Rows of length S read with a stride of S + 1 shift one more column per row (pad/view, so autograd
    sees plain copies)."""
    B, T, S = full.shape
    flat = F.pad(full.reshape(B, T * S), (0, T + 1))
    return flat[:, 1 : 1 + T * (S + 1)].view(B, T, S + 1)[:, :, :width]


def unband(p: torch.Tensor) -> torch.Tensor:
    """(B, T, M) -> (B, T, M + T) with out[:, t, t + 1 + i] = p[:, t, i] and zeros elsewhere (band's adjoint)."""
    B, T, M = p.shape
    S = M + T
    rows = F.pad(p, (0, S + 1 - M)).reshape(B, T * (S + 1))
    return F.pad(rows, (1, 0))[:, : T * S].view(B, T, S)


class MemN2NLM(LanguageModel):
    def __init__(self, cfg: MemN2NLMConfig, vocab: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.A = MemoryEmbedding(vocab, d, cfg.memory_size)
        self.C = MemoryEmbedding(vocab, d, cfg.memory_size)
        self.H = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, vocab, bias=False)
        init_normal(self, cfg.init_std)

    def forward(self, inputs: torch.Tensor, state: torch.Tensor | None = None):
        """Features (B, T, d) for inputs (B, T); state: the previous memory_size ids (B, M), PAD = none.

        The memory of position t is history[t + 1 : t + 1 + M] of history = [state, inputs]; the
        scores against all of history come from one bmm per hop and the band of each row is read
        out, so no (B, T, M, d) window tensor is built."""
        B, T = inputs.shape
        M, L = self.cfg.memory_size, self.cfg.linear_dim
        if state is None:
            state = inputs.new_full((B, M), PAD)
        history = torch.cat([state, inputs], 1)  # (B, S = M + T)
        mask = history.unfold(1, M, 1)[:, 1:] != PAD  # (B, T, M)
        a, c = F.embedding(history, self.A.words), F.embedding(history, self.C.words)  # (B, S, d)
        u = a.new_full((B, T, self.cfg.embed_dim), self.cfg.query_init)
        for _ in range(self.cfg.hops):
            scores = band(torch.bmm(u, a.transpose(1, 2)), M) + u @ self.A.time.t()  # (B, T, M)
            p = torch.softmax(scores.masked_fill(~mask, NEG), -1)
            o = torch.bmm(unband(p), c) + p @ self.C.time  # (B, T, d)
            h = self.H(u) + o
            u = torch.cat([h[..., :L], torch.relu(h[..., L:])], -1)
        return u, history[:, -M:]


@MODELS.register("memn2n_lm", config=MemN2NLMConfig)
def build_memn2n_lm(cfg: MemN2NLMConfig, sizes: VocabSizes) -> MemN2NLM:
    return MemN2NLM(cfg, sizes.tgt)
