"""Property-based tests (hypothesis), bounded to stay fast."""

from __future__ import annotations

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqtool.commands.recipes import recipe_from_dict
from seqtool.data.datasets import Sequences
from seqtool.data.prepare import SplitWriter
from seqtool.errors import SeqtoolError
from seqtool.recipe.overrides import apply_overrides, parse_override
from tests.conftest import TINY_TRANSLATION

BASE = yaml.safe_load(TINY_TRANSLATION)
keys = st.sampled_from(["train", "model", "data", "decode", "max_steps", "beam", "arch", "lr", "x", "seed"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(), max_size=3))
trees = st.recursive(scalars, lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, trees, max_size=5))
def test_recipe_loader_accepts_or_explains(patch):
    raw = {**BASE, **patch}
    try:
        recipe_from_dict(raw)
    except SeqtoolError as err:
        assert "\n" not in str(err) and str(err).startswith("recipe: ")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_set_parser_accepts_or_explains(text):
    try:
        path, _ = parse_override(text)
        apply_overrides({"train": {"max_steps": 3}}, [text])
        assert all(path)
    except SeqtoolError as err:
        assert "\n" not in str(err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(0, 65535), max_size=30), min_size=1, max_size=40))
def test_binarized_sequences_come_back_unchanged(tmp_path, sequences):
    writer = SplitWriter(tmp_path / "x.src", np.dtype(np.uint16))
    writer.add(sequences[: len(sequences) // 2])
    writer.add(sequences[len(sequences) // 2 :])
    writer.close()
    data = Sequences(np.fromfile(f"{tmp_path}/x.src.bin", dtype=np.uint16),
                     np.fromfile(f"{tmp_path}/x.src.idx", dtype=np.int64))
    assert [data[i].tolist() for i in range(len(data))] == sequences
