"""The bAbI question-answering tasks v1.2 (Weston et al. 2015): parsing, `prepare` and batches for task qa.

A task file holds stories. A line is `ID statement` or `ID question<TAB>answer<TAB>supporting IDs`, and
IDs restart at 1 with each story. A question's memory is the statements of its story before it
(questions are not memories), at most the data.babi.memory_size most recent ones (Sukhbaatar et al.
2015 keep 50). '.' and '?' are dropped and the recipe's word tokenizer lowercases, as in the authors'
code; an answer is one token (task 8's 'apple,football', task 19's 'n,w').

Prepared directory (staged beside its place and renamed in, like seqtool/data/prepare.py; unchanged
inputs and settings make prepare a no-op):
    manifest.json            inputs (path, sha256), settings, tasks used and skipped, counts per split
    tokenizer/               the word vocabulary of the training statements, questions and answers
    <split>.sentences.npy    (statements, words) token ids, PAD-padded; a story's statements in order
    <split>.queries.npy      (questions, words) question token ids
    <split>.questions.npy    (questions, 4): task number, answer id, first memory row, memory count
    <split>.support.npy      (questions, 3): memory slots of the supporting facts (0 = most recent
                             statement), -1 for none or for a fact older than the memory window
The validation split is, per task, the last stories of the training file that hold
data.babi.valid_fraction of its questions (whole stories, so no story is in two splits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from seqtool.data.prepare import FORMAT, build_prepared, data_root, manifest_header, prepared_place, token_dtype
from seqtool.data.textio import iter_lines, sha256_file
from seqtool.data.tokenizer import PAD, train_tokenizer
from seqtool.data.vocab import Vocabs, directory_sha256
from seqtool.errors import SeqtoolError

TASK_NAMES = {
    1: "single-supporting-fact", 2: "two-supporting-facts", 3: "three-supporting-facts",
    4: "two-arg-relations", 5: "three-arg-relations", 6: "yes-no-questions", 7: "counting",
    8: "lists-sets", 9: "simple-negation", 10: "indefinite-knowledge", 11: "basic-coreference",
    12: "conjunction", 13: "compound-coreference", 14: "time-reasoning", 15: "basic-deduction",
    16: "basic-induction", 17: "positional-reasoning", 18: "size-reasoning", 19: "path-finding",
    20: "agents-motivations",
}
MAX_SUPPORT = 3  # task 3 needs three supporting facts, no task more


def task_file(task: int, split: str) -> str:
    return f"qa{task}_{TASK_NAMES[task]}_{split}.txt"


# -- parsing -------------------------------------------------------------------------------------
@dataclass
class Question:
    story: int  # story number within its file
    words: list[str]
    answer: str
    support: list[int]  # statement indices (into TaskFile.statements)
    first: int  # the story's first statement
    end: int  # statements before the question: its memory is statements[first:end]


@dataclass
class TaskFile:
    statements: list[list[str]] = field(default_factory=list)  # every statement of the file, in order
    questions: list[Question] = field(default_factory=list)


def _words(text: str) -> list[str]:
    return text.replace(".", " ").replace("?", " ").split()


def parse_task_file(path: Path) -> TaskFile:
    """Statements and questions of one bAbI file; malformed lines fail naming file and line."""
    parsed, story, first, index = TaskFile(), -1, 0, {}
    for number, line in enumerate(iter_lines(path, hint=""), 1):
        ident, _, text = line.partition(" ")
        if not ident.isdecimal() or not text.strip():
            raise SeqtoolError(f"{path}:{number}: expected 'ID statement' or 'ID question<TAB>answer<TAB>ids'")
        if ident == "1":
            story, first, index = story + 1, len(parsed.statements), {}
        if "\t" not in text:
            index[int(ident)] = len(parsed.statements)
            parsed.statements.append(_words(text))
            continue
        question, answer, *rest = text.split("\t")
        try:
            support = [index[int(i)] for i in (rest[0].split() if rest else [])]
        except (KeyError, ValueError):
            raise SeqtoolError(f"{path}:{number}: supporting fact ids {rest[0]!r} are not statements "
                               "of this story") from None
        if not answer.strip() or len(answer.split()) != 1:
            raise SeqtoolError(f"{path}:{number}: the answer must be one token, got {answer!r}")
        parsed.questions.append(Question(story, _words(question), answer.strip(), support, first,
                                         len(parsed.statements)))
    if not parsed.questions:
        raise SeqtoolError(f"{path}: no questions (not a bAbI task file?)")
    return parsed


def hold_out(questions: list[Question], fraction: float) -> tuple[list[Question], list[Question]]:
    """(train, valid): valid is the last whole stories holding at least `fraction` of the questions."""
    want, cut = math.ceil(fraction * len(questions)), len(questions)
    while len(questions) - cut < want and cut > 0:
        story = questions[cut - 1].story
        while cut > 0 and questions[cut - 1].story == story:
            cut -= 1
    return questions[:cut], questions[cut:]


# -- prepare -------------------------------------------------------------------------------------
def _task_numbers(spec) -> list[int]:
    return sorted(TASK_NAMES) if spec.tasks == "all" else sorted(spec.tasks)


def find_files(spec, log) -> tuple[dict[int, dict[str, Path]], dict[int, str]]:
    """Train and test file of every requested task; tasks with a missing file are skipped when
    data.babi.missing_ok is true (and reported), otherwise the missing files fail by name."""
    folder = data_root() / spec.root
    found, skipped = {}, {}
    for task in _task_numbers(spec):
        paths = {split: folder / spec.set / task_file(task, split) for split in ("train", "test")}
        missing = [f"{spec.set}/{p.name}" for p in paths.values() if not p.is_file()]
        if missing:
            skipped[task] = ", ".join(missing)
        else:
            found[task] = paths
    if skipped and not spec.missing_ok:
        names = "; ".join(skipped.values())
        raise SeqtoolError(f"data.babi: missing {names} under {folder} (set data.babi.missing_ok=true to go on "
                           "with the other tasks)")
    for task, names in skipped.items():
        log(f"prepare: bAbI task {task} skipped: missing {names} under {folder}")
    if not found:
        raise SeqtoolError(f"data.babi: none of the requested task files are under {folder / spec.set} "
                           "(check data.babi.root and SEQTOOL_DATA)")
    return found, skipped


def prepare_babi(recipe, log=print, verify=None) -> Path:
    """Make the prepared directory of a qa recipe unless an identical one exists; return it."""
    spec = recipe.data.babi
    files, skipped = find_files(spec, log)
    inputs = {f"{p.parent.name}/{p.name}": {"path": str(p), "sha256": sha256_file(p)}
              for paths in files.values() for p in paths.values()}
    fingerprint = {"format": FORMAT, "task": recipe.task, "inputs": inputs,
                   "settings": recipe.data.model_dump(mode="json", exclude={"prepared_dir"})}

    def build(stage: Path) -> dict:
        splits = _read_splits(files, spec.valid_fraction)
        vocabs = _train_vocab(recipe, splits["train"])
        vocabs.save(stage / "tokenizer")
        counts = {name: _write_split(stage, name, parts, vocabs, spec.memory_size) for name, parts in splits.items()}
        return {**manifest_header(recipe, fingerprint),
                "tokenizer_sha256": directory_sha256(stage / "tokenizer"),
                "vocab": {"src": len(vocabs.src), "tgt": len(vocabs.tgt), "joint": True},
                "tasks": sorted(files), "skipped": {str(t): n for t, n in skipped.items()}, "splits": counts}

    out = prepared_place(recipe)
    paths = [p for task_files in files.values() for p in task_files.values()]
    manifest = build_prepared(out, fingerprint, build, log, inputs=paths, verify=verify)
    if manifest is None:
        return out
    counts = manifest["splits"]
    log(f"prepare: bAbI {spec.set} tasks {', '.join(map(str, sorted(files)))}: "
        + ", ".join(f"{k} {v['questions']} questions" for k, v in counts.items()) + f" -> {out}")
    return out


Part = tuple[int, TaskFile, list[Question]]  # (task number, its file, the questions of this split)


def _read_splits(files: dict[int, dict[str, Path]], fraction: float) -> dict[str, list[Part]]:
    splits = {"train": [], "valid": [], "test": []}
    for task, paths in files.items():
        train_file = parse_task_file(paths["train"])
        train, valid = hold_out(train_file.questions, fraction)
        if not train or not valid:
            raise SeqtoolError(f"{paths['train']}: too few stories to hold out a validation share of {fraction}")
        test_file = parse_task_file(paths["test"])
        splits["train"].append((task, train_file, train))
        splits["valid"].append((task, train_file, valid))
        splits["test"].append((task, test_file, test_file.questions))
    return splits


def _train_vocab(recipe, parts: list[Part]) -> Vocabs:
    def lines():
        for _, parsed, questions in parts:
            lo, hi = questions[0].first, questions[-1].end
            yield from (" ".join(s) for s in parsed.statements[lo:hi])
            for q in questions:
                yield " ".join(q.words)
                yield q.answer

    tok = train_tokenizer(recipe.data.tokenizer, lines)
    return Vocabs(tok, tok, joint=True)


def _padded(rows: list[list[int]], dtype: np.dtype) -> np.ndarray:
    out = np.full((len(rows), max(len(r) for r in rows)), PAD, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _write_split(stage: Path, name: str, parts: list[Part], vocabs: Vocabs, memory: int) -> dict:
    """Encode one split's statements once per story range and each question's window into them."""
    tok, dtype = vocabs.src, token_dtype(len(vocabs.src))
    sentences, queries, meta, support, per_task = [], [], [], [], {}
    for task, parsed, questions in parts:
        lo = questions[0].first
        base = len(sentences) - lo  # row of statement s is base + s
        sentences += tok.encode([" ".join(s) for s in parsed.statements[lo : questions[-1].end]])
        queries += tok.encode([" ".join(q.words) for q in questions])
        answers = tok.encode([q.answer for q in questions])
        for q, answer in zip(questions, answers):
            start = max(q.first, q.end - memory)
            meta.append((task, answer[0], base + start, q.end - start))
            slots = [q.end - 1 - s if s >= start else -1 for s in q.support]
            support.append((slots + [-1] * MAX_SUPPORT)[:MAX_SUPPORT])
        per_task[str(task)] = len(questions)
    np.save(stage / f"{name}.sentences.npy", _padded(sentences, dtype))
    np.save(stage / f"{name}.queries.npy", _padded(queries, dtype))
    np.save(stage / f"{name}.questions.npy", np.asarray(meta, dtype=np.int64))
    np.save(stage / f"{name}.support.npy", np.asarray(support, dtype=np.int64))
    return {"questions": len(meta), "statements": len(sentences), "per_task": per_task}


# -- batches -------------------------------------------------------------------------------------
@dataclass
class QABatch:
    story: torch.Tensor  # (B, M, W) memory statements, most recent first; PAD rows past the story
    query: torch.Tensor  # (B, Q) question ids
    answer: torch.Tensor  # (B,) answer ids
    task: torch.Tensor  # (B,) bAbI task numbers
    support: torch.Tensor  # (B, 3) memory slots of the supporting facts, -1 when none
    ntokens: int  # questions: one answer token each

    def to(self, device: torch.device) -> QABatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return QABatch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})


class BabiSplit:
    """One prepared split in memory; collate(index) builds the batch of those questions."""

    def __init__(self, directory: Path, name: str):
        def load(part: str) -> np.ndarray:
            return np.load(Path(directory) / f"{name}.{part}.npy")

        sentences = load("sentences").astype(np.int64)
        # one all-PAD row at the end stands for the empty slots of shorter stories
        self.sentences = np.concatenate([sentences, np.zeros((1, sentences.shape[1]), np.int64)])
        self.lengths = (self.sentences != PAD).sum(1)
        self.queries = load("queries").astype(np.int64)
        self.meta, self.support = load("questions"), load("support")

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def tasks(self) -> np.ndarray:
        return self.meta[:, 0]

    def collate(self, index: np.ndarray) -> QABatch:
        meta = self.meta[index]
        count = meta[:, 3]
        slot = np.arange(count.max())
        rows = np.where(slot < count[:, None], meta[:, 2:3] + count[:, None] - 1 - slot, len(self.sentences) - 1)
        width = max(int(self.lengths[rows].max()), 1)
        query = self.queries[index]
        query = query[:, : max(int((query != PAD).sum(1).max()), 1)]
        return QABatch(torch.from_numpy(self.sentences[rows][:, :, :width]), torch.from_numpy(query),
                       torch.from_numpy(meta[:, 1].copy()), torch.from_numpy(meta[:, 0].copy()),
                       torch.from_numpy(self.support[index]), len(index))
