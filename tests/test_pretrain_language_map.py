"""LanguageMap: bilingual vocabulary facts, id bounds, language lookup and saved descriptions."""

import pytest
import torch

from xlt.errors import ConfigError
from xlt.pretrain import LanguageMap

L1 = {"<pad>": 0, "<unk>": 1, "<D>": 2, "▁the": 3, "▁cat": 4, "s": 5}
L2 = {"<pad>": 0, "<unk>": 1, "<D>": 2, "▁le": 3, "s": 4, "▁chat": 5, "▁the": 6}


def test_bilingual_anchored_vocabulary_facts():
    bilingual = LanguageMap.bilingual(L1, L2, "anchored")
    # L1 has 6 pieces; L2 maps to [0, 1, 2, 6, 5, 7, 3]: five of its seven pieces are L1 ids
    # (< 6: <pad>, <unk>, <D>, s, ▁the), two are new (▁le -> 6, ▁chat -> 7)
    assert bilingual.base_vocab_size == 6
    assert bilingual.model_vocab_size == 8
    assert bilingual.extra["shared_pieces"] == 5
    assert bilingual.n_languages == 2 and bilingual.names == ["L1", "L2"]
    assert bilingual.tokenizer_index("L2") == 1 and bilingual.tokenizer_index("L1") == 0
    assert bilingual.tokenizer_index(1) == 1


def test_bilingual_disjoint_vocabulary_facts():
    bilingual = LanguageMap.bilingual(L1, L2, "disjoint", names=["en", "fr"])
    # only the pad id is shared; L2 id i -> i + 6 otherwise; combined size 6 + 7
    assert bilingual.l2_id_map == [0, 7, 8, 9, 10, 11, 12]
    assert bilingual.base_vocab_size == 6 and bilingual.model_vocab_size == 13
    assert bilingual.extra["shared_pieces"] == 1
    assert bilingual.map_ids([6, 1], "fr").tolist() == [12, 7]
    assert bilingual.unmap_ids([12, 7, 0], "fr").tolist() == [6, 1, 0]
    assert bilingual.unmap_ids([5, 3, 0], "en").tolist() == [5, 3, 0]  # L1 ids are never remapped


@pytest.mark.parametrize("bad", [[7], [0, 7], [-1]])
def test_an_l2_id_outside_its_vocabulary_is_a_config_error(bad):
    bilingual = LanguageMap.bilingual(L1, L2, "anchored")
    assert bilingual.map_ids([6], "L2").tolist() == [3]  # the last L2 id is fine
    with pytest.raises(ConfigError, match="7-token vocabulary"):
        bilingual.map_ids(bad, "L2")
    assert bilingual.map_ids(torch.tensor([], dtype=torch.long), "L2").tolist() == []


def test_language_index_accepts_names_and_indices_in_range_only():
    cloned = LanguageMap.cloned(10, 2)
    assert cloned.names == ["L1", "L2", "L3"]
    assert cloned.index("L3") == 2 and cloned.index(0) == 0 and cloned.index(2) == 2
    for bad in (3, -1, True, "L4"):
        with pytest.raises(ConfigError, match="unknown language"):
            cloned.index(bad)
    assert cloned.tokenizer_index("L2") == 0
    # cloned ids come back modulo the base vocabulary
    assert cloned.unmap_ids([25, 13, 4], "L3").tolist() == [5, 3, 4]


def test_from_dict_defaults():
    mono = LanguageMap.from_dict({"kind": "monolingual", "base_vocab_size": 10, "names": ["xx"]})
    assert (mono.n_clones, mono.frac_clone, mono.merge_vocab, mono.l2_id_map) == (0, 1.0, None, None)
    assert mono.model_vocab_size == 10 and mono.extra == {}
    assert mono.map_ids([3, 9], "xx").tolist() == [3, 9]
    # the model vocabulary follows from the kind when the description leaves it out
    cloned = LanguageMap.from_dict({"kind": "cloned", "base_vocab_size": 10, "names": ["a", "b"],
                                    "n_clones": 1})
    assert cloned.model_vocab_size == 20 and cloned.frac_clone == 1.0
    assert cloned.map_ids([3], "b").tolist() == [13]  # frac_clone 1: id 3 is cloned
    bilingual = LanguageMap.from_dict({"kind": "bilingual", "base_vocab_size": 6, "names": ["a", "b"],
                                       "l2_id_map": [0, 6, 7, 3]})
    assert bilingual.model_vocab_size == 8
    small = LanguageMap.from_dict({"kind": "bilingual", "base_vocab_size": 9, "names": ["a", "b"],
                                   "l2_id_map": [0, 6, 7, 3]})
    assert small.model_vocab_size == 9
    # keys it does not know are kept (and written back), the clone rule's prose is not
    kept = LanguageMap.from_dict({"kind": "monolingual", "base_vocab_size": 4, "names": ["xx"],
                                  "tokenizer": "t.json", "clone_rule": "prose"})
    assert kept.extra == {"tokenizer": "t.json"} and kept.to_dict()["tokenizer"] == "t.json"
    assert "clone_rule" not in kept.to_dict()


def test_from_dict_rejects_bad_descriptions():
    with pytest.raises(ConfigError, match="malformed"):
        LanguageMap.from_dict({"base_vocab_size": 10, "names": ["a"]})
    with pytest.raises(ConfigError, match="malformed"):
        LanguageMap.from_dict({"kind": "monolingual", "base_vocab_size": "ten", "names": ["a"]})
    with pytest.raises(ConfigError, match="unknown language kind 'shuffled'"):
        LanguageMap.from_dict({"kind": "shuffled", "base_vocab_size": 10, "names": ["a"]})
    described = LanguageMap.cloned(10, 1, 0.5).to_dict()
    assert LanguageMap.from_dict(described).extra["clone_mask_sha256"] == described["clone_mask_sha256"]
    described["clone_mask_sha256"] = "0" * 64
    with pytest.raises(ConfigError, match="fingerprint"):
        LanguageMap.from_dict(described)


def test_schedule_values_are_probabilities_including_both_ends():
    from xlt.pretrain.cloned import parse_schedule

    assert parse_schedule("0_1") == [0.0, 1.0]
    assert parse_schedule(1) == [1.0] and parse_schedule(0.25) == [0.25]
    for bad in ("1.01", "-0.01_0.5", "nan", "0.5_inf", True):
        with pytest.raises(ConfigError, match="language_schedule"):
            parse_schedule(bad)
