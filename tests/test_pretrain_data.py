"""Token store, packed windows and per-sequence language assignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _pretrain_helpers import make_lines, small_tokenizer, write_corpus
from xlt.errors import DataError
from xlt.pretrain import LanguageMap, LanguageSchedule
from xlt.pretrain.data import (LanguageAssignment, PretrainDataset, TokenStore, num_windows,
                               tokenize_corpus, window)


@pytest.fixture(scope="module")
def tokenizer():
    return small_tokenizer()


def test_token_store_matches_direct_tokenisation(tmp_path, tokenizer):
    corpus = write_corpus(tmp_path / "c.txt", 50)
    (tmp_path / "c.txt").write_text((tmp_path / "c.txt").read_text() + "\n\n", encoding="utf-8")
    store = tokenize_corpus([corpus], tokenizer, tmp_path / "cache")
    expected = []
    for line in make_lines(50):
        expected += tokenizer(line, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert isinstance(store.tokens, np.memmap) and store.tokens.dtype == np.uint16
    assert store.tokens.tolist() == expected
    assert store.meta["n_documents"] == 50
    # cached: the second call opens the same files
    again = tokenize_corpus([corpus], tokenizer, tmp_path / "cache")
    assert again.meta == store.meta and len(list((tmp_path / "cache").glob("*.bin"))) == 1


def test_large_vocabularies_use_uint32(tmp_path):
    store = TokenStore.build(tmp_path / "big", ["a b"], lambda texts: [[70000, 5]] * len(texts),
                             vocab_size=100000, separator_id=2)
    assert store.tokens.dtype == np.uint32 and store.tokens.tolist() == [70000, 5, 2]


def test_empty_corpus_is_an_error(tmp_path, tokenizer):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no tokens"):
        tokenize_corpus([empty], tokenizer, tmp_path / "cache")
    with pytest.raises(DataError, match="no such corpus file"):
        tokenize_corpus([tmp_path / "missing.txt"], tokenizer, tmp_path / "cache")


def test_windows_share_one_token():
    tokens = np.arange(21)
    assert num_windows(21, 4) == 5 and num_windows(4, 4) == 0
    assert window(tokens, 0, 4).tolist() == [0, 1, 2, 3, 4]
    assert window(tokens, 1, 4).tolist() == [4, 5, 6, 7, 8]
    assert window(tokens, 4, 4).tolist() == [16, 17, 18, 19, 20]


def test_bilingual_assignment_reproduces_the_reference_pattern():
    language_map = LanguageMap.bilingual({"a": 0, "b": 1}, {"a": 0, "c": 1}, "disjoint")
    assignment = LanguageAssignment(language_map, LanguageSchedule(0.1, 3), 16, seed=0)
    steps = assignment.languages.reshape(3, 16)
    assert [set(row.nonzero().squeeze(1).tolist()) for row in steps] == [{2, 12}, {11}, {3, 11}]
    four = LanguageAssignment(language_map, LanguageSchedule(0.3, 1), 4, seed=0)
    assert four.languages.tolist() == [0, 0, 1, 1]


def test_cloned_assignment_distribution_and_schedule():
    language_map = LanguageMap.cloned(50, 1)
    assignment = LanguageAssignment(language_map, LanguageSchedule("0.1_0.9", 400), 128, seed=3)
    langs = assignment.languages.reshape(400, 128).double()
    n = 200 * 128
    tol = 3 * (0.09 / n) ** 0.5
    assert abs(float(langs[:200].mean()) - 0.1) < tol
    assert abs(float(langs[200:].mean()) - 0.9) < tol
    assert assignment.counts(400) == [int((langs == 0).sum()), int((langs == 1).sum())]


def test_dataset_items_are_mapped_windows():
    tokens = np.arange(1, 42) % 20  # ids 0..19, includes the pad id 0
    store = TokenStore.from_array(tokens)
    language_map = LanguageMap.cloned(20, 1)
    assignment = LanguageAssignment(language_map, LanguageSchedule(0.5, 5), 2, seed=0)
    dataset = PretrainDataset([store], language_map, assignment, 4, shuffle=False)
    assert len(dataset) == 10
    for k in range(len(dataset)):
        item = dataset[k]
        raw = torch.as_tensor(window(tokens, k % 10, 4).astype(np.int64))
        lang = dataset.language_of(k)
        mapped = torch.where(raw > 0, raw + 20 * lang, raw)
        assert item["input_ids"].tolist() == mapped[:-1].tolist()
        assert item["shift_labels"].tolist() == mapped[1:].tolist()
    shuffled = PretrainDataset([store], language_map, assignment, 4, seed=1, shuffle=True)
    firsts = sorted(int(shuffled[k]["input_ids"][0]) % 20 for k in range(10))
    assert firsts == sorted(int(window(tokens, k, 4)[0]) for k in range(10))  # each window once per epoch


def test_bilingual_dataset_keeps_one_cursor_per_language():
    l1 = TokenStore.from_array(np.arange(1, 18))        # 4 windows of 4+1
    l2 = TokenStore.from_array(np.arange(1, 10) % 5)    # 2 windows
    language_map = LanguageMap.bilingual({str(i): i for i in range(20)}, {str(i): i for i in range(5)},
                                         "disjoint")
    assignment = LanguageAssignment(language_map, LanguageSchedule(0.5, 4), 3, seed=0)
    dataset = PretrainDataset([l1, l2], language_map, assignment, 4, shuffle=False)
    seen = {0: [], 1: []}
    for k in range(len(dataset)):
        seen[dataset.language_of(k)].append(dataset[k]["input_ids"].tolist())
    assert seen[0] == [window(np.arange(1, 18), j % 4, 4)[:-1].tolist() for j in range(len(seen[0]))]
    l2_windows = [[x + 20 if x else 0 for x in window(np.arange(1, 10) % 5, j % 2, 4)[:-1].tolist()]
                  for j in range(len(seen[1]))]
    assert seen[1] == l2_windows


def test_corpus_shorter_than_a_window():
    store = TokenStore.from_array(np.arange(5), sources=["tiny.txt"])
    language_map = LanguageMap.cloned(10, 1)
    assignment = LanguageAssignment(language_map, LanguageSchedule(0.5, 1), 1)
    with pytest.raises(DataError, match="tiny.txt.*fewer than one training window"):
        PretrainDataset([store], language_map, assignment, 8)
