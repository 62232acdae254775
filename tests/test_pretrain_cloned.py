"""Clone masks, id maps, vocabulary merging, language sampling, schedules and the LR schedule.

Expected numbers come from the method description's conformance cases (computed there with an
independent re-implementation and cross-checked against the reference classes).
"""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from xlt.errors import ConfigError
from xlt.pretrain import (LanguageMap, LanguageSchedule, clone_mask, from_language, merge_vocabularies,
                          reference_lr, sample_clone_languages, to_language)

CLONED_100 = {1, 2, 4, 6, 7, 8, 10, 11, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 28, 29, 30, 31, 34, 37,
              41, 43, 44, 47, 48, 52, 54, 57, 59, 63, 66, 67, 70, 76, 78, 80, 81, 83, 84, 86, 87, 88,
              91, 93, 94, 99}


def test_clone_mask_v100_half():
    mask = clone_mask(100, 0.5)
    assert mask.dtype == torch.bool and mask.shape == (100,)
    assert set(mask.nonzero().squeeze(1).tolist()) == CLONED_100


def test_id_maps_v100():
    ids = torch.tensor([0, 1, 2, 3, 5, 17, 42, 50, 99])
    assert to_language(ids, 1, 100, clone_mask(100, 0.5)).tolist() == [0, 101, 102, 3, 5, 17, 42, 50, 199]
    full = clone_mask(100, 1.0)
    assert to_language(ids, 1, 100, full).tolist() == [0, 101, 102, 103, 105, 117, 142, 150, 199]
    assert to_language(ids, 2, 100, full).tolist() == [0, 201, 202, 203, 205, 217, 242, 250, 299]
    assert to_language(ids, 1, 100, None).tolist() == [0, 101, 102, 103, 105, 117, 142, 150, 199]
    assert to_language(ids, 0, 100, full).tolist() == ids.tolist()
    assert from_language(to_language(ids, 2, 100, full), 100).tolist() == ids.tolist()


def test_clone_mask_v16384():
    half = clone_mask(16384, 0.5)
    assert int(half.sum()) == 8192
    assert half[:3].tolist() == [True, False, False]
    digest = hashlib.sha256(half.to(torch.uint8).numpy().tobytes()).hexdigest()
    assert digest == "a5e674918cc99c88c653d5f6ca9a38ef25d9ac83133eddce365b42ba98f57c62"
    assert int(clone_mask(16384, 0.1).sum()) == 1638


@pytest.mark.parametrize("frac", [0.0, 0.001])
def test_frac_clone_that_clones_nothing_is_an_error(frac):
    with pytest.raises(ConfigError, match="clones no token"):
        clone_mask(100, frac)


@pytest.mark.parametrize("frac", [-0.1, 1.5, float("nan")])
def test_frac_clone_out_of_range(frac):
    with pytest.raises(ConfigError, match="frac_clone"):
        clone_mask(100, frac)


def test_to_language_rejects_ids_outside_the_base_vocabulary():
    with pytest.raises(ConfigError, match=r"\[0, 100\)"):
        to_language(torch.tensor([5, 100]), 1, 100)


def test_language_map_cloned_round_trip():
    language_map = LanguageMap.cloned(100, 1, 0.5)
    assert language_map.model_vocab_size == 200
    again = LanguageMap.from_dict(language_map.to_dict())
    ids = torch.tensor([0, 1, 2, 3, 99])
    assert again.map_ids(ids, "L2").tolist() == [0, 101, 102, 3, 199]
    assert again.unmap_ids(again.map_ids(ids, "L2"), "L2").tolist() == ids.tolist()
    assert LanguageMap.cloned(100, 9).model_vocab_size == 1000
    with pytest.raises(ConfigError, match="exactly one clone"):
        LanguageMap.cloned(100, 2, 0.5)
    with pytest.raises(ConfigError, match="unknown language"):
        again.map_ids(ids, "L3")


def _independent_merge(l1, l2, anchored):
    v1 = len(l1)
    inverse = {i: p for p, i in l2.items()}
    out, nxt = [], v1
    for i in range(len(l2)):
        if i == 0:
            out.append(0)
        elif not anchored:
            out.append(i + v1)
        elif inverse[i] in l1:
            out.append(l1[inverse[i]])
        else:
            out.append(nxt)
            nxt += 1
    return out, (v1 + len(l2) if not anchored else nxt)


def test_merge_vocabularies_rules():
    l1 = {"<pad>": 0, "<unk>": 1, "<D>": 2, "▁the": 3, "▁cat": 4, "s": 5}
    l2 = {"<pad>": 0, "<unk>": 1, "<D>": 2, "▁le": 3, "s": 4, "▁chat": 5, "▁the": 6}
    merged, size = merge_vocabularies(l1, l2, "anchored")
    assert (merged, size) == _independent_merge(l1, l2, True)
    assert merged == [0, 1, 2, 6, 5, 7, 3] and size == 8
    disjoint, size = merge_vocabularies(l1, l2, "disjoint")
    assert (disjoint, size) == _independent_merge(l1, l2, False)
    assert disjoint[2] == 8 and size == 13  # <D> -> 2 + V, as FR <D> -> 16386 in the paper
    with pytest.raises(ConfigError, match="merge_vocab"):
        merge_vocabularies(l1, l2, "shared")
    # a shared (special) L2 id maps to the L1 id of the same text; one L1 lacks is merged as usual
    l2_specials = {"<s>": 0, "▁le": 1, "<pad>": 2}
    assert merge_vocabularies(l1, l2_specials, "disjoint", shared_ids=[0, 2])[0] == [0 + 6, 1 + 6, 0]
    bilingual = LanguageMap.bilingual(l1, l2, "anchored")
    ids = torch.tensor([3, 5, 6, 0])
    assert bilingual.map_ids(ids, "L2").tolist() == [6, 7, 3, 0]
    assert bilingual.unmap_ids(bilingual.map_ids(ids, "L2"), "L2").tolist() == ids.tolist()
    assert bilingual.map_ids(ids, "L1").tolist() == ids.tolist()


def test_reference_language_draws_cpu():
    torch.manual_seed(0)
    got = sample_clone_languages(16, 1, 0.1, seq_len=8)
    assert got.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    torch.manual_seed(0)
    got = sample_clone_languages(16, 9, 0.5, seq_len=8)
    assert got.tolist() == [0, 0, 3, 7, 0, 0, 8, 0, 2, 0, 0, 3, 7, 4, 2, 0]


def test_language_sampling_distribution():
    g = torch.Generator().manual_seed(1)
    n = 102400
    langs = torch.cat([sample_clone_languages(1024, 1, 0.1, generator=g) for _ in range(n // 1024)])
    tol = 3 * math.sqrt(0.1 * 0.9 / n)
    assert abs(float((langs == 1).double().mean()) - 0.1) < tol
    langs = torch.cat([sample_clone_languages(1024, 9, 0.5, generator=g) for _ in range(n // 1024)])
    counts = torch.bincount(langs, minlength=10).double() / n
    assert abs(float(counts[0]) - 0.5) < 3 * math.sqrt(0.25 / n)
    expected = 0.5 / 9
    assert all(abs(float(c) - expected) < 3 * math.sqrt(expected * (1 - expected) / n) for c in counts[1:])


def test_schedule_four_stages():
    schedule = LanguageSchedule("0.1_0.9_0.5_0.5", 1000)
    expected = {0: 0.1, 249: 0.1, 250: 0.9, 499: 0.9, 500: 0.5, 749: 0.5, 750: 0.5, 999: 0.5}
    assert {t: schedule.p_at(t) for t in expected} == expected


def test_schedule_switches_and_stage_counts():
    schedule = LanguageSchedule("0.05_0.65_0.65_0.65", 18265)
    switches = [t for t in range(1, 18265) if schedule.p_at(t) != schedule.p_at(t - 1)]
    assert switches == [4566]
    assert schedule.mean() == pytest.approx(0.50000821, abs=1e-8)
    two = LanguageSchedule("0.1_0.9", 18265)
    values = [two.p_at(t) for t in range(18265)]
    assert values.index(0.9) == 9132 and values.count(0.1) == 9132 and values.count(0.9) == 9133
    three = LanguageSchedule("0.2_0.4_0.6", 1001)
    assert [end - start for start, end, _ in three.stages()] == [333, 333, 335]


@pytest.mark.parametrize("spec", ["0.1-0.9", "a_b", "0.1__0.9", "", "0.1_1.5"])
def test_schedule_that_does_not_parse(spec):
    with pytest.raises(ConfigError, match="language_schedule"):
        LanguageSchedule(spec, 100)


def test_schedule_must_start_at_the_given_probability():
    with pytest.raises(ConfigError, match="starts at 0.1 but the given probability is 0.5"):
        LanguageSchedule("0.1_0.9", 100, initial=0.5)
    assert LanguageSchedule("0.1_0.9", 100, initial=0.1).p_at(99) == 0.9


def test_schedule_with_fewer_steps_than_stages():
    with pytest.raises(ConfigError, match="only 3 steps"):
        LanguageSchedule("0.1_0.2_0.3_0.4", 3)


def test_reference_learning_rate():
    expected = {0: 3.0e-6, 1: 6.0e-6, 198: 5.968269e-4, 199: 5.998243e-4, 200: 5.998225e-4,
                1000: 5.956088e-4, 9132: 3.029745e-4, 18263: 6.0000044e-6, 18264: 6.0e-6}
    for step, value in expected.items():
        assert reference_lr(step) == pytest.approx(value, rel=2e-6), step
