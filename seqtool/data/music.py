"""Polyphonic music as piano rolls (Boulanger-Lewandowski et al. 2012), as Chung et al. (2014) model it:
at each time step a multi-hot frame of the pitches sounding; the model reads frame t-1 (silence before
the first) and gives a Bernoulli probability per pitch for frame t; the score is the negative
log-likelihood per time step (summed over pitches, averaged over frames).

The JSON layout is the one of ../shared/data/music (czhuang/JSB-Chorales-dataset): {"train": [...],
"valid": [...], "test": [...]}, each a list of pieces, each a list of time steps, each a list of MIDI
pitch numbers (an empty list is a rest).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seqtool.data.sequences import Examples, concatenate
from seqtool.errors import SeqtoolError

SPLITS = ("train", "valid", "test")


def piano_roll(piece: list, lowest: int, highest: int, where: str) -> np.ndarray:
    """(T, highest - lowest + 1) uint8 multi-hot frames of one piece."""
    roll = np.zeros((len(piece), highest - lowest + 1), np.uint8)
    for t, pitches in enumerate(piece):
        for pitch in pitches:
            if not isinstance(pitch, (int, float)) or not lowest <= pitch <= highest:
                raise SeqtoolError(f"{where}, step {t}: pitch {pitch!r} outside data.music.lowest..highest "
                                   f"({lowest}..{highest})")
            roll[t, int(pitch) - lowest] = 1
    return roll


def load_music(path: Path, lowest: int, highest: int) -> dict[str, Examples]:
    """Every split of a piano-roll JSON file as next-frame prediction examples."""
    try:
        data = json.loads(path.read_bytes())  # from bytes, json skips a byte-order mark itself
    except FileNotFoundError:
        raise SeqtoolError(f"data.music.file: {path}: no such file (set SEQTOOL_DATA or fix the path)") from None
    except OSError as err:
        raise SeqtoolError(f"data.music.file: {path}: cannot read ({err.strerror})") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise SeqtoolError(f"data.music.file: {path}: not JSON ({err})") from None
    except RecursionError:
        raise SeqtoolError(f"data.music.file: {path}: nested too deeply to be piano rolls") from None
    if not isinstance(data, dict) or any(not isinstance(data.get(s), list) or not data[s] for s in SPLITS):
        raise SeqtoolError(f"data.music.file: {path}: expected an object with non-empty lists "
                           f"{', '.join(SPLITS)}")
    splits = {}
    for split in SPLITS:
        rows = []
        for i, piece in enumerate(data[split]):
            if not isinstance(piece, list) or not piece:
                raise SeqtoolError(f"{path}: {split} piece {i} is not a non-empty list of time steps")
            roll = piano_roll(piece, lowest, highest, f"{path}: {split} piece {i}")
            previous = np.concatenate([np.zeros_like(roll[:1]), roll[:-1]])
            rows.append((previous, roll, np.ones(len(roll), bool), np.zeros(len(roll), bool)))
        splits[split] = concatenate(rows)
    return splits
