"""Protocols and splits: patient-level, deterministic, histories strictly earlier, right single-visit flags."""

import pytest
import torch

from medrec_bench.tasks import collate_visits, make_splits, multi_hot, pad_sets


def _patients(samples):
    return {s.patient_id for s in samples}


@pytest.mark.parametrize("protocol", ["visit", "last_visit"])
@pytest.mark.parametrize("order", ["shuffle", "original"])
def test_no_patient_in_two_splits(demo_cohort, protocol, order):
    s = make_splits(demo_cohort, protocol, seed=3, split_order=order)
    train, val, test = _patients(s.train), _patients(s.val), _patients(s.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == {p.patient_id for p in demo_cohort.patients}


def test_fractions(demo_cohort):
    n = len(demo_cohort.patients)
    s = make_splits(demo_cohort, "last_visit", 0)
    assert (len(s.train), len(s.val), len(s.test)) == (int(n * 0.8), round(n * 0.1), n - int(n * 0.8) - round(n * 0.1))
    v = make_splits(demo_cohort, "visit", 0)
    assert len(_patients(v.train)) == int(n * 2 / 3)
    assert sum(len(p.visits) for p in demo_cohort.patients) == len(v.train) + len(v.val) + len(v.test)


def test_visit_protocol_history_is_strictly_earlier(demo_cohort):
    by_id = {p.patient_id: p for p in demo_cohort.patients}
    s = make_splits(demo_cohort, "visit", 0)
    for sample in (*s.train, *s.val, *s.test):
        visits = by_id[sample.patient_id].visits
        k = next(i for i, v in enumerate(visits) if v.visit_id == sample.visit_id)
        assert sample.history == visits[:k]
        assert all(h.admittime < visits[k].admittime for h in sample.history)
        assert sample.single_visit == (k == 0) and sample.n_visits == k + 1
        assert sample.target == visits[k].drugs


def test_last_visit_protocol(demo_cohort):
    by_id = {p.patient_id: p for p in demo_cohort.patients}
    s = make_splits(demo_cohort, "last_visit", 0)
    for sample in (*s.train, *s.val, *s.test):
        visits = by_id[sample.patient_id].visits
        assert sample.visit_id == visits[-1].visit_id and sample.history == visits[:-1]
        assert sample.single_visit == (len(visits) == 1)
    assert any(x.single_visit for x in s.train) and any(not x.single_visit for x in s.train)


def test_seeded_shuffle_and_original_order(demo_cohort):
    a = make_splits(demo_cohort, "last_visit", 1)
    b = make_splits(demo_cohort, "last_visit", 1)
    c = make_splits(demo_cohort, "last_visit", 2)
    assert [x.patient_id for x in a.test] == [x.patient_id for x in b.test]
    assert [x.patient_id for x in a.test] != [x.patient_id for x in c.test]
    o = make_splits(demo_cohort, "visit", 5, split_order="original")
    ids = sorted((p.patient_id for p in demo_cohort.patients), key=int)
    n_train = int(len(ids) * 2 / 3)
    n_first = (len(ids) - n_train) // 2
    assert _patients(o.train) == set(ids[:n_train])
    assert _patients(o.test) == set(ids[n_train:n_train + n_first])  # literature: test block before eval
    assert _patients(o.val) == set(ids[n_train + n_first:])


def test_unknown_protocol(demo_cohort):
    with pytest.raises(ValueError, match="unknown protocol"):
        make_splits(demo_cohort, "next_visit", 0)


def test_padding_and_collation(demo_cohort):
    codes, mask = pad_sets([(3, 1), (), (2,)], pad=9)
    assert codes.tolist() == [[3, 1], [9, 9], [2, 9]]
    assert mask.tolist() == [[True, True], [False, False], [True, False]]
    codes, mask = pad_sets([(), ()], pad=0, min_len=3)  # all empty: min_len columns of padding
    assert codes.tolist() == [[0, 0, 0]] * 2 and not mask.any()
    assert pad_sets([], pad=0)[0].shape == (0, 1)
    assert multi_hot([(0, 2), (), (1, 1)], 3).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert multi_hot([], 3).shape == (0, 3)
    s = make_splits(demo_cohort, "visit", 0)
    samples = sorted(s.train, key=lambda x: -x.n_visits)[:4]
    v = demo_cohort.vocab
    batch = collate_visits(samples, len(v.diagnoses), len(v.procedures), len(v.drugs), demo_cohort.profile_fields)
    assert batch.visit_mask.sum(1).tolist() == [x.n_visits for x in samples]
    first = samples[0]
    last = first.n_visits - 1
    assert batch.diagnoses[0, last][batch.diagnoses_mask[0, last]].tolist() == list(first.diagnoses)
    assert not batch.drugs_mask[0, last].any()  # the current visit's drugs are never an input
    assert batch.drugs[0, 0][batch.drugs_mask[0, 0]].tolist() == list(first.history[0].drugs)
    assert torch.equal(batch.target[0].nonzero().flatten(), torch.tensor(sorted(first.target)))
    short = collate_visits(samples, len(v.diagnoses), len(v.procedures), len(v.drugs), max_history=1)
    assert short.visit_mask.shape[1] == 2 and short.n_visits.max() <= 2
