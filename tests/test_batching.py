"""Token-budget batching: every row once, budgets respected, longest first."""

from __future__ import annotations

import numpy as np
import pytest

from synapseml_ext.engine.batching import pad_batches, plan_batches, round_up


@pytest.mark.parametrize("max_tokens, max_rows, multiple", [(64, 8, 1), (1000, 3, 8), (10, 100, 1)])
def test_plan_covers_every_row_once_within_budget(max_tokens, max_rows, multiple):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 120, size=500)
    plan = plan_batches(lengths, max_tokens, max_rows, multiple)
    rows = np.concatenate(plan)
    assert sorted(rows.tolist()) == list(range(500))
    longest_first = [lengths[b].max() for b in plan]
    assert longest_first == sorted(longest_first, reverse=True)
    for batch in plan:
        assert len(batch) <= max_rows
        padded = len(batch) * round_up(int(lengths[batch].max()), multiple)
        assert padded <= max_tokens or len(batch) == 1  # an over-long row goes alone


def test_pad_batches_right_pads_and_keeps_rows():
    ids = [[101, 5, 102], [101, 102], [101, 7, 8, 9, 102]]
    lengths = np.array([3, 2, 5])
    plan = plan_batches(lengths, max_tokens=100, max_rows=10, pad_multiple=4)
    (batch,) = list(pad_batches(ids, lengths, plan, pad_id=0, pad_multiple=4))
    assert batch.rows.tolist() == [2, 0, 1]
    assert batch.input_ids.shape == (3, 8)
    assert batch.input_ids[1].tolist() == [101, 5, 102, 0, 0, 0, 0, 0]
    assert batch.attention_mask.sum(axis=1).tolist() == [5, 3, 2]
    assert batch.real_tokens == 10
