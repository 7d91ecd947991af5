"""The recipe schema: the one source of defaults and documentation for every setting."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, Discriminator, Field, SerializeAsAny, Tag, field_validator, model_validator

from seqtool.metric_table import SelectMetric, TextMetric
from seqtool.models.config import SECTION, ModelConfig

RECIPE_VERSION = 1
LengthPenalty = Literal["gnmt", "fairseq", "none"]  # the forms seqtool.decoding.penalties computes
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # autocast dtypes, as seqtool.util.precision reads them
DecodePrecision = Literal["auto", "fp32", "bf16", "fp16", "int8"]  # int8: dynamic quantization on a CPU
Device = Literal["auto", "cpu", "cuda"]  # no cuda:N: a run's rank picks its GPU (CUDA_VISIBLE_DEVICES narrows them)
Seed = Annotated[int, Field(ge=0, lt=2**64)]  # what numpy's default_rng and torch.manual_seed both take
# Upper bounds on sizes that are held in memory at once or multiply into an allocation: far above any
# sensible value, low enough that a typo fails in `check` rather than after minutes or gigabytes.
MAX_GENERATED = 10_000_000
MAX_BEAM = 128
MAX_BATCH_TOKENS = 1_000_000


class Spec(BaseModel):
    model_config = SECTION


class SplitSpec(Spec):
    """One split of a corpus: a source/target pair of files, or one text file for a language model."""

    src: str | None = Field(None, description="source-side file, one sentence per line")
    tgt: str | None = Field(None, description="target-side file, line-aligned with src")
    text: str | None = Field(None, description="running text for language modelling")

    @model_validator(mode="after")
    def _one_kind(self) -> SplitSpec:
        if self.text is None and (self.src is None or self.tgt is None):
            raise ValueError("a split needs both src and tgt (translation) or text (language model)")
        if self.text is not None and (self.src is not None or self.tgt is not None):
            raise ValueError("a split has either text or src/tgt, not both")
        return self


class CorpusSpec(Spec):
    """One corpus of a multi-corpus translation recipe: an entry of the lists data.train, data.valid,
    data.test (seqtool/data/corpora.py)."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$", description="the corpus or language pair (e.g. "
                             "de-en): names its validation metrics (bleu/de-en) and its prepared splits "
                             "(valid.de-en); default corpus<position>")
    src: str | None = Field(None, description="source-side file, one sentence per line")
    tgt: str | None = Field(None, description="target-side file, line-aligned with src")
    tsv: str | None = Field(None, description="train only, instead of src/tgt: one tab-separated file of pairs "
                            "with no official split (Tatoeba); its valid and test splits are held out of it "
                            "(data.held_out)")
    columns: tuple[int, int] = Field((0, 1), description="tsv: the source and the target column (0-based)")
    weight: float = Field(1.0, gt=0, description="train: this corpus's share of each epoch's sentences is "
                          "weight / (sum of the weights); a corpus smaller than its share is repeated")
    tag: str | None = Field(None, pattern=r"^<[^<>\s]+>$", description="target-language tag, e.g. <2en>: a token "
                            "of its own, put on the source or forced as the first target token (data.tag_side)")

    @model_validator(mode="after")
    def _one_kind(self) -> CorpusSpec:
        if self.tsv is None and (self.src is None or self.tgt is None):
            raise ValueError("a corpus needs both src and tgt files, or tsv")
        if self.tsv is not None and (self.src is not None or self.tgt is not None):
            raise ValueError("a corpus has either tsv or src/tgt, not both")
        return self


def _split_form(value) -> str:
    return "list" if isinstance(value, list) else "plain"


# A split is one src/tgt (or text) entry, or a list of corpora; the discriminator tries only the form
# given, so a bad entry is reported alone, under its own key (describe_error drops the form's label).
SplitOrCorpora = Annotated[Annotated[SplitSpec, Tag("plain")] | Annotated[list[CorpusSpec], Tag("list")],
                           Discriminator(_split_form)]
SPLIT_FORMS = ("plain", "list")


class GenerateSpec(Spec):
    """A synthetic corpus made by seqtool itself from a seed (no files needed)."""

    task: Literal["num2words", "copy", "reverse", "retrieval"] = Field(
        description="num2words: digits to English words; copy/reverse: random symbol strings (translation "
        "pairs); retrieval: key->value bindings queried far later (running text for task lm)"
    )
    train: int = Field(20000, gt=0, le=MAX_GENERATED, description=f"training pairs or retrieval documents (at "
                       f"most {MAX_GENERATED:,})")
    valid: int = Field(500, gt=0, le=MAX_GENERATED, description=f"validation pairs or documents (at most "
                       f"{MAX_GENERATED:,})")
    test: int = Field(500, gt=0, le=MAX_GENERATED, description=f"test pairs or documents (at most {MAX_GENERATED:,})")
    seed: Seed = Field(1, description="generator seed (independent of the training seed; 0 to 2^64-1)")
    max_digits: int = Field(6, ge=1, le=12, description="num2words: largest number has this many digits")
    symbols: int = Field(10, ge=2, le=26, description="copy/reverse: alphabet size")
    min_len: int = Field(3, ge=1, description="copy/reverse: shortest string")
    max_len: int = Field(12, ge=1, description="copy/reverse: longest string")
    keys: int = Field(16, ge=1, description="retrieval: distinct keys (at most this many bindings are open)")
    values: int = Field(16, ge=2, description="retrieval: distinct values (chance accuracy 1/values)")
    fillers: int = Field(16, ge=1, description="retrieval: distinct filler words")
    doc_len: int = Field(512, gt=0, description="retrieval: words per document (one line; a query may end it "
                         "2 words later)")
    gaps: tuple[int, int] = Field((40, 100), description="retrieval: a key is queried between lo and hi tokens "
                                  "after its binding (later when queries queue)")
    rate: float = Field(0.1, gt=0, le=1, description="retrieval: chance of a binding at each word while a key "
                        "is free")
    band: int = Field(16, gt=0, description="retrieval: evaluation reports accuracy per band of this many "
                      "tokens of gap (accuracy_gap<start>)")

    @model_validator(mode="after")
    def _gaps_order(self) -> GenerateSpec:
        if not 1 <= self.gaps[0] <= self.gaps[1]:
            raise ValueError(f"gaps: [lo, hi] with 1 <= lo <= hi, got {list(self.gaps)}")
        return self


class TokenizerSpec(Spec):
    kind: Literal["word", "wordpiece", "sentencepiece"] = Field(
        "sentencepiece", description="word: whitespace words; wordpiece: tokenizers WordPiece with "
        "GNMT word-start markers; sentencepiece: unigram or BPE"
    )
    model_type: Literal["unigram", "bpe"] = Field("unigram", description="sentencepiece algorithm")
    vocab_size: int | None = Field(
        8000, gt=4, description="vocabulary size including the 4 specials; word: null keeps every type"
    )
    min_count: int = Field(1, ge=1, description="word: drop types seen fewer times than this")
    joint: bool = Field(True, description="one vocabulary for source and target")
    lowercase: bool = Field(False, description="lowercase text before tokenizing")
    character_coverage: float = Field(1.0, gt=0, le=1, description="sentencepiece character coverage")
    sample_lines: int = Field(
        1_000_000, gt=0, description="train the subword model on at most this many lines"
    )


class DataSpec(Spec):
    """The base of every task's data section: a task registers its subclass (TASKS.register(name,
    config=...)) and a recipe's `data` is validated by the spec of its `task`, as `model` is by its arch."""

    prepared_dir: str | None = Field(
        None, description="where prepare writes binarized data; default <output_dir>/data"
    )

    _own_directory = field_validator("prepared_dir")(lambda value: own_directory(value))


class TextDataSpec(DataSpec):
    """Text corpora, read by tasks translation (src/tgt pairs) and lm (running text)."""

    corpus: Literal["multi30k", "ptb", "wikitext2"] | None = Field(
        None, description="a known corpus layout: fills train/valid/test paths (explicit ones win)"
    )
    pair: str = Field("de-en", pattern=r"^[a-z]{2}-[a-z]{2}$", description="multi30k: src-tgt languages")
    generate: GenerateSpec | None = Field(None, description="generate a synthetic corpus instead of files")
    train: SplitOrCorpora | None = Field(
        None, description="training split (paths under the data root); or a list of corpora {name, src, tgt "
        "(or tsv), weight, tag} sampled by weight into one model")
    valid: SplitOrCorpora | None = Field(
        None, description="validation split; or a list of named corpora, each measured on its own (bleu/<name>); "
        "default with tsv corpora: their held-out pairs")
    test: SplitOrCorpora | None = Field(None, description="test split; or a list of named corpora")
    tag_side: Literal["source", "target"] = Field(
        "source", description="where a corpus's tag goes: source = the first source token; target = the first "
        "target token, which decoding then forces (decode.tag)")
    held_out: int = Field(1000, gt=0, description="tsv corpora: distinct pairs held out for valid and for test "
                          "each (deduplicated, shuffled by data.split_seed; no held-out sentence is trained on)")
    split_seed: Seed = Field(1, description="tsv corpora: seed of the held-out split (independent of seed)")
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    max_len: int = Field(256, gt=0, description="drop training pairs with a side longer than this (pieces)")
    block_len: int = Field(35, gt=0, description="language models: tokens per training block (BPTT length)")
    encoding_errors: Literal["strict", "replace", "skip"] = Field(
        "strict", description="non-UTF-8 input: fail naming line and byte, replace bad bytes, or skip the line"
    )

    @model_validator(mode="after")
    def _fill_corpus(self) -> TextDataSpec:
        if self.corpus is not None:
            for split, spec in corpus_splits(self.corpus, self.pair).items():
                if getattr(self, split) is None:
                    setattr(self, split, spec)
        if self.generate is None and self.train is None:
            raise ValueError("data needs train files, a known corpus or generate")
        if self.generate is not None and (self.train or self.valid or self.test):
            raise ValueError("data.generate makes its own splits; drop train/valid/test")
        problem = _corpora_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    def corpora(self, split: str) -> list[CorpusSpec] | None:
        """A list-form split's corpora, each with its name filled in (corpus<position>), valid and test
        entries with the tag of the training corpus of the same name unless they give one; None for a
        plain split."""
        entries = getattr(self, split)
        if not isinstance(entries, list):
            return None
        tags = {c.name: c.tag for c in self.corpora("train") or []} if split != "train" else {}
        return [c.model_copy(update={"name": c.name or f"corpus{i}", "tag": c.tag or tags.get(c.name)})
                for i, c in enumerate(entries)]


def _corpora_problem(spec: TextDataSpec) -> str | None:
    """What the list form of train/valid/test gets wrong, if anything."""
    for split in ("train", "valid", "test"):
        entries = spec.corpora(split) or []
        names = [c.name for c in entries]
        for i, corpus in enumerate(entries):
            if names.count(corpus.name) > 1:
                return f"data.{split}.{i}.name: {corpus.name!r} names two corpora"
            if corpus.tsv is not None and split != "train":
                return f"data.{split}.{i}.tsv: only training corpora are tsv (their {split} pairs are held out)"
    return None


def own_directory(value: str | None) -> str | None:
    """A directory seqtool may fill and replace must be one of its own: '.', '..', '/' or '' would
    name the current directory, one above it, or the root, with everything already in them."""
    if value is not None and os.path.basename(os.path.normpath(value)) in ("", ".", ".."):
        raise ValueError("names no directory of its own ('.', '..', '/' or empty); give a new directory")
    return value


def corpus_splits(corpus: str, pair: str) -> dict[str, SplitSpec]:
    """The file layout of a known corpus under the data root (see data/README.md)."""
    if corpus == "multi30k":
        src, tgt = pair.split("-")
        stems = {"train": "train", "valid": "val", "test": "test2016"}
        return {k: SplitSpec(src=f"multi30k/{v}.{src}", tgt=f"multi30k/{v}.{tgt}") for k, v in stems.items()}
    if corpus == "ptb":
        return {k: SplitSpec(text=f"ptb/ptb.{k}.txt") for k in ("train", "valid", "test")}
    return {k: SplitSpec(text=f"wikitext-2/wiki.{k}.tokens") for k in ("train", "valid", "test")}


class OptimSpec(Spec):
    name: Literal["adam", "adamw", "sgd", "nag"] = Field("adam", description="nag = SGD with Nesterov momentum")
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd/nag momentum")
    weight_decay: float = Field(0.0, ge=0)


class ScheduleSpec(Spec):
    name: Literal["constant", "inverse_sqrt", "step_decay", "plateau"] = "constant"
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 (all schedules but plateau)")
    decay_start: int = Field(0, ge=0, description="step_decay: first step at which lr is multiplied")
    decay_every: int = Field(1000, gt=0, description="step_decay: steps between multiplications")
    factor: float = Field(0.5, gt=0, le=1, description="step_decay / plateau multiplier")
    patience: int = Field(0, ge=0, description="plateau: validations without improvement before decaying")
    min_lr: float = Field(0.0, ge=0, description="lr never goes below this")


class CheckpointSpec(Spec):
    every: int = Field(1000, gt=0, description="save every N steps (also at the end and on a clean stop)")
    keep_last: int = Field(3, ge=1, description="step checkpoints kept")
    keep_best: int = Field(1, ge=0, description="best checkpoints kept (by early_stopping.metric)")


class EarlyStopSpec(Spec):
    metric: SelectMetric = Field(
        "loss", description="validation metric that picks the best checkpoint"
    )
    patience: int | None = Field(None, ge=1, description="stop after this many validations without improvement")


QuantBits = Literal[1, 2, 4, 8]


class QuantizeSpec(Spec):
    """Quantized training (Hubara et al. 2018): k-bit fake quantization with the straight-through estimator
    of linear, convolution and recurrent layers (seqtool/models/quantize.py)."""
    weights: QuantBits | None = Field(None, description="bits of the layers' weights (1 = sign binarization; "
                                      "null: float)")
    activations: QuantBits | None = Field(None, description="bits of the layers' inputs (null: float)")
    logits: float | None = Field(None, gt=0, description="GNMT's logit clipping: the output layer's logits clamped "
                                 "to [-gamma, gamma] in training and decoding (paper: 25; null: off)")


class PrivacySpec(Spec):
    """DP-SGD (Abadi et al. 2016) with Opacus's optimizer and accountant (seqtool/training/privacy.py): each
    example's gradient clipped to max_grad_norm, Gaussian noise added, examples Poisson-sampled."""
    noise_multiplier: float | None = Field(None, gt=0, description="sigma: noise std / max_grad_norm (null: "
                                           "computed from target_epsilon for train.max_steps)")
    target_epsilon: float | None = Field(None, gt=0, description="epsilon to reach at train.max_steps (sets "
                                         "noise_multiplier; give one of the two)")
    max_grad_norm: float = Field(1.0, gt=0, description="C: each example's gradient is clipped to this L2 norm "
                                 "(train.clip_norm is not used)")
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of the (epsilon, delta) guarantee reported")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="Opacus accountant: rdp (Renyi DP, Mironov "
                                              "2017) or prv (privacy random variables, Gopi et al. 2021)")

    @model_validator(mode="after")
    def _one_noise(self) -> PrivacySpec:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("give exactly one of noise_multiplier and target_epsilon")
        return self


InitReset = Literal["optimizer", "schedule", "best", "progress"]


class TrainSpec(Spec):
    init_from: str | None = Field(
        None, description="fine-tune: start from the weights of this trained run (its best checkpoint, else its "
        "latest) or checkpoint file; its tokenizer encodes this recipe's data (data.tokenizer is not used) and "
        "`model` must match its model section, keys with dropout in their name excepted (they change no "
        "weights); --resume continues this run's own checkpoints, not the parent's")
    init_reset: list[InitReset] = Field(
        ["optimizer", "schedule", "best", "progress"], description="with init_from, what starts afresh rather "
        "than from the parent (leave a name out to keep the parent's): optimizer = moments (fairseq "
        "--reset-optimizer, eole reset_optim; the recipe's optimizer settings apply either way), schedule = "
        "the learning-rate schedule's state, plateau scale included (--reset-lr-scheduler), best = the best "
        "validation score and patience count (--reset-meters), progress = step and epoch counters (so "
        "max_steps counts the new run's steps; --reset-dataloader); the new data is read from the start of an epoch "
        "either way")
    optimizer: OptimSpec = Field(default_factory=OptimSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    batch_tokens: int = Field(4096, gt=0, le=MAX_BATCH_TOKENS, description="translation: padded tokens per batch "
                              f"(at most {MAX_BATCH_TOKENS:,}); lower it when training runs out of memory")
    batch_size: int | None = Field(
        None, gt=0, description="language models: parallel streams per batch; translation: max sentences"
    )
    accumulate: int = Field(1, ge=1, description="batches per optimizer step")
    max_steps: int | None = Field(10000, gt=0, description="optimizer steps (null: no limit)")
    max_epochs: int | None = Field(None, gt=0, description="passes over the training data (null: no limit)")
    max_minutes: float | None = Field(None, gt=0, description="wall-clock limit for training")
    clip_norm: float | None = Field(5.0, gt=0, description="clip the gradient norm to this (null: off)")
    clip_per_parameter: bool = Field(
        False, description="clip each parameter's gradient norm on its own (MemN2N's bAbI code), not all together")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    precision: Precision = Field(
        "auto", description="autocast dtype: auto = bf16 on CUDA, fp32 on a CPU; bf16 also on a CPU that computes "
        "bf16 natively (AVX512-BF16 or AMX; elsewhere fp32); fp16 (with a gradient scaler) on CUDA only,"
        " refused on a CPU"
    )
    device: Device = Field("auto", description="auto = cuda when available")
    threads: int | None = Field(None, gt=0, description="CPU threads for torch (null: torch's default)")
    compile: bool = Field(False, description="torch.compile the model")
    quantize: QuantizeSpec | None = Field(
        None, description="quantized training: {weights: k, activations: k} bits (null: float training)")
    privacy: PrivacySpec | None = Field(
        None, description="differentially private training (DP-SGD): {noise_multiplier or target_epsilon, "
        "max_grad_norm, delta}; example-level tasks (classify, qa) only (null: off)")
    validate_every: int = Field(1000, gt=0, description="validate every N steps (and at the end)")
    max_bad_steps: int = Field(
        5, ge=1, description="stop after this many consecutive steps with a NaN/inf loss (each is skipped)"
    )
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    early_stopping: EarlyStopSpec = Field(default_factory=EarlyStopSpec)


class DecodeSpec(Spec):
    beam: int = Field(5, ge=1, le=MAX_BEAM, description=f"beam width; 1 = greedy (at most {MAX_BEAM}: memory grows "
                      "with beam x batch)")
    length_penalty: LengthPenalty = Field(
        "gnmt", description="how a finished hypothesis's log-probability is divided by its length |Y| (EOS "
        "included): gnmt ((5+|Y|)/6)^alpha (Wu et al. 2016), fairseq |Y|^alpha (fairseq's --lenpen), none"
    )
    alpha: float = Field(0.0, ge=0, description="length penalty exponent (decode.length_penalty); 0 = off")
    beta: float = Field(0.0, ge=0, description="GNMT coverage penalty weight; 0 = off")
    prune_margin: float | None = Field(
        None, gt=0, description="GNMT pruning (paper: 3.0): skip tokens this far below a hypothesis's best token, "
        "drop hypotheses this far below the best finished score (null: off)"
    )
    early_stop: bool = Field(
        False, description="beam search: a sentence is done once beam hypotheses have finished (fairseq's "
        "rule: fewer steps, may miss a better longer output); false: once no live hypothesis can beat them"
    )
    no_repeat_ngram: int = Field(
        0, ge=0, description="no output repeats an n-gram of this many tokens (fairseq's --no-repeat-ngram-size; "
        "beam and sampling); 0 = off")
    n_best: int = Field(1, ge=1, le=MAX_BEAM, description="hypotheses kept per input (<= beam)")
    max_len_a: float = Field(1.5, ge=0, description="output length limit a*|src| + b")
    max_len_b: int = Field(10, ge=1)
    max_output: int = Field(1024, gt=0, description="output length limit whatever a and b say (tokens, EOS included)")
    max_src_len: int = Field(256, gt=0, description="translate: longer inputs are truncated (with a warning)")
    precision: DecodePrecision = Field(
        "auto", description="autocast dtype while decoding (validation, eval, translate); as train.precision; "
        "int8: a loaded model's linear and LSTM layers become int8 (dynamic quantization, CPU only; validation "
        "while training stays float)")
    batch_tokens: int = Field(6000, gt=0, le=MAX_BATCH_TOKENS, description="padded source tokens per decoding batch "
                              f"(at most {MAX_BATCH_TOKENS:,}); lower it or the beam when decoding runs out of memory")
    batch_sentences: int | None = Field(None, gt=0, description="at most this many sentences per decoding batch")
    strategy: str = Field("beam", description="a registered decoding strategy: beam (beam 1 = greedy) or sample "
                          "(seqtool/decoding/search.py)")
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0, description="sampling: keep the k most likely tokens (0 = all)")
    top_p: float = Field(1.0, gt=0, le=1, description="sampling: nucleus mass")
    tag: str | None = Field(None, pattern=r"^<[^<>\s]+>$", description="a model trained on tagged corpora "
                            "(data.train entries' tag): the tag of the output language, e.g. <2en>, put where "
                            "training put it (data.tag_side); validation and eval of a named split use its "
                            "corpus's tag")
    alignment: bool = Field(False, description="keep each hypothesis's attention at every step, for word "
                            "alignments (translate --alignment) and attention plots; costs beam x output length x "
                            "source length floats per sentence while decoding")

    @model_validator(mode="after")
    def _n_best_fits(self) -> DecodeSpec:
        if self.n_best > self.beam and self.strategy == "beam":
            raise ValueError(f"n_best ({self.n_best}) cannot exceed beam ({self.beam})")
        return self


class EvalSpec(Spec):
    metrics: list[TextMetric] = Field(
        default_factory=lambda: ["bleu", "chrf"], description="translation metrics (sacrebleu)"
    )
    tokenize: str = Field("13a", description="sacrebleu BLEU tokenizer")
    valid_decode_limit: int | None = Field(
        1000, gt=0, description="validation BLEU decodes at most this many sentences (null: all)"
    )
    valid_beam: int | None = Field(None, ge=1, le=MAX_BEAM, description="beam for validation BLEU (null: decode.beam)")
    lm_streams: int = Field(10, gt=0, description="language-model evaluation: parallel streams")

    @field_validator("tokenize")
    @classmethod
    def _known_tokenizer(cls, name: str) -> str:
        from seqtool.metric_table import tokenizer_problem

        problem = tokenizer_problem(name)
        if problem:
            raise ValueError(problem)
        return name


class LogSpec(Spec):
    tensorboard: bool = True
    progress: Literal["rich", "plain", "none"] = Field("rich", description="rich bar on a terminal")
    every: int = Field(100, gt=0, description="log training loss every N steps")


class Recipe(Spec):
    recipe_version: int = Field(RECIPE_VERSION, description="recipe format version")
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="run name; default run dir runs/<name>")
    task: str = Field("translation", description="a registered task: translation, lm, qa, synthetic, music, classify "
                      "(seqtool/tasks); it decides which keys `data` takes")
    seed: Seed = Field(1, description="seed for initialisation, batch order and dropout (0 to 2^64-1)")
    output_dir: str | None = Field(None, description="run directory (default runs/<name>)")
    data: SerializeAsAny[DataSpec]
    model: SerializeAsAny[ModelConfig]
    train: TrainSpec = Field(default_factory=TrainSpec)
    decode: DecodeSpec = Field(default_factory=DecodeSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    log: LogSpec = Field(default_factory=LogSpec)

    _own_directory = field_validator("name", "output_dir")(lambda value: own_directory(value))

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        for problem in _cross_field_problems(self):
            raise ValueError(problem)
        return self

    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def _cross_field_problems(r: Recipe) -> list[str]:
    from seqtool.registry import STRATEGIES, TASKS

    problems = []
    if r.decode.strategy not in STRATEGIES.names():
        problems.append(f"decode.strategy: {STRATEGIES.unknown(r.decode.strategy)}")
    if r.recipe_version != RECIPE_VERSION:
        problems.append(f"recipe_version {r.recipe_version} is not supported (this seqtool reads {RECIPE_VERSION})")
    task = TASKS.get(r.task).builder
    if r.task not in type(r.model).tasks:  # the other checks assume the model fits the task
        return [*problems, f"model {r.model.arch!r} cannot do task {r.task!r}"]
    if r.decode.beta > 0 and not type(r.model).has_attention:
        problems.append(f"decode.beta (coverage penalty) needs attention, and model {r.model.arch!r} has none")
    if r.train.early_stopping.metric not in task.metrics:
        problems.append(f"train.early_stopping.metric {r.train.early_stopping.metric!r} is not measured by task "
                        f"{r.task!r} (it measures {', '.join(task.metrics)})")
    return problems + task.check(r) + r.model.recipe_problems(r) + _privacy_problems(r, task)


def _privacy_problems(r: Recipe, task) -> list[str]:
    """Settings under which DP-SGD's guarantee would not hold or could not be accounted."""
    t, where = r.train, "train.privacy"
    if t.privacy is None:
        return []
    problems = []
    if not task.example_level:
        problems.append(f"{where}: task {r.task!r} does not draw its batches as Poisson-sampled examples, which "
                        "DP-SGD's accounting assumes; use an example-level task (classify, qa)")
    if t.accumulate > 1:
        problems.append(f"{where}: train.accumulate {t.accumulate}: each step is one Poisson-sampled batch; "
                        "raise train.batch_size instead")
    if t.quantize is not None:
        problems.append(f"{where}: train.quantize is not supported with DP-SGD (its straight-through layers "
                        "are untested with per-example gradients)")
    if t.precision == "fp16":
        problems.append(f"{where}: precision fp16 scales the loss by a data-dependent factor; use fp32 or bf16")
    if t.privacy.target_epsilon is not None and t.max_steps is None:
        problems.append(f"{where}.target_epsilon needs train.max_steps (the noise is set for the planned steps)")
    return problems
