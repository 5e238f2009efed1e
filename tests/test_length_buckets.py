"""Length-bucketed training order (medrec_bench.tasks.batching): a permutation whose batches are nearly uniform in
length, with the padding share it saves."""

import numpy as np
import pytest

from medrec_bench.tasks.batching import length_bucketed_order, padding_fraction


@pytest.fixture
def lengths():
    return np.random.default_rng(0).integers(20, 1100, size=1003).tolist()  # skewed like prompts: 20..1,100 tokens


def test_bucketed_order_is_a_permutation_with_the_partial_batch_last(lengths):
    rng = np.random.default_rng(1)
    order = length_bucketed_order(rng.permutation(len(lengths)), lengths, 8, rng, window_batches=10)
    assert sorted(order) == list(range(len(lengths)))
    batches = [order[i:i + 8] for i in range(0, len(order), 8)]
    assert all(len(b) == 8 for b in batches[:-1]) and len(batches[-1]) == len(lengths) % 8
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    random_spread = np.mean([np.ptp(np.asarray(lengths)[b]) for b in np.array_split(np.arange(1000), 125)])
    assert spread < random_spread / 5


def test_bucketing_cuts_padding_and_is_seeded(lengths):
    rng = np.random.default_rng(2)
    shuffled = rng.permutation(len(lengths))
    bucketed = length_bucketed_order(shuffled, lengths, 8, np.random.default_rng(3))
    assert padding_fraction(lengths, bucketed, 8) < 0.1 < padding_fraction(lengths, shuffled, 8)
    assert bucketed == length_bucketed_order(shuffled, lengths, 8, np.random.default_rng(3))


def test_padding_fraction_known_values():
    assert padding_fraction([2, 4, 3, 3], [0, 1, 2, 3], 2) == pytest.approx(1 - 12 / 14)
    assert padding_fraction([], [], 4) == 0.0
