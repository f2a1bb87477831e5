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


def test_waste_cut_bounds_padding_and_keeps_every_row():
    # The review-like mix: mostly short rows, a long tail (the GPU runtimes' case).
    rng = np.random.default_rng(1)
    lengths = np.clip(rng.lognormal(4.4, 0.6, size=3000).astype(int), 4, 512)
    wide = plan_batches(lengths, max_tokens=1 << 19, max_rows=256, pad_multiple=8)
    cut = plan_batches(lengths, max_tokens=1 << 19, max_rows=256, pad_multiple=8,
                       max_waste=0.2, min_tokens=16384)
    assert sorted(np.concatenate(cut).tolist()) == list(range(len(lengths)))

    def padding(plan):
        padded = sum(len(b) * round_up(int(lengths[b].max()), 8) for b in plan)
        return padded / lengths.sum() - 1

    assert padding(wide) > 0.3  # what the cut is for
    assert padding(cut) < 0.5 * padding(wide)
    for batch in cut:
        longest = round_up(int(lengths[batch].max()), 8)
        if len(batch) * longest > 16384:
            # Past min_tokens no row is more than 20% shorter than the batch's longest.
            keep = 16384 // longest
            tail = [round_up(int(n), 8) for n in lengths[batch][keep:]]
            assert min(tail, default=longest) >= 0.8 * longest


def test_waste_cut_off_by_default_and_below_min_tokens():
    lengths = np.array([100, 10, 10, 10])
    assert [len(b) for b in plan_batches(lengths, 1000, 10)] == [4]
    # 4 x 100 = 400 padded tokens: under min_tokens the cut does not apply.
    assert [len(b) for b in plan_batches(lengths, 1000, 10, max_waste=0.2,
                                         min_tokens=400)] == [4]
    assert [len(b) for b in plan_batches(lengths, 1000, 10, max_waste=0.2,
                                         min_tokens=100)] == [1, 3]
