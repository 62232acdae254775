"""Shared demonstrations: the demonstrations' key/value cache is computed once per run of
requests that share them and reused for every item. Scores are checked against a reference
computed here (each request alone, whole, no cache, no padding); the run detection against
the token ids of the prompts; the refusals against the warnings they give."""

from __future__ import annotations

import copy
import logging
import random

import pytest
import torch

from xlt import fastpath
from xlt.eval.icl import prepare_choice_items
from xlt.eval.scoring import SHARED_DEMONSTRATIONS, EncodedRequest, encode_requests, score_encoded

WORDS = "the cat dog sat on mat red blue big small runs eats house tree river stone".split()


def _items(n, seed, lang="en"):
    """Items of different lengths (some with an empty context, some with a trailing space)."""
    from xlt.formats import MultipleChoiceItem

    rng = random.Random(seed)
    items = []
    for i in range(n):
        context = "" if i % 5 == 0 else " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        if i % 3 == 1:
            context += " "
        choices = tuple(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))) for _ in range(3))
        items.append(MultipleChoiceItem(lang=lang, context=context, choices=choices, label=i % 3))
    return items


def _mixed_requests(shots):
    """Two languages with their own demonstrations (and items), interleaved item by item."""
    en = prepare_choice_items(_items(8, 1), _items(shots, 11))
    zh = prepare_choice_items(_items(6, 2, "zh"), _items(shots, 12, "zh"))
    order = [p for pair in zip(en, zh) for p in pair] + en[len(zh):]
    return [r for p in order for r in p.requests]


def _reference(model, request: EncodedRequest, max_length=None):
    """One request alone: the whole sequence, no cache, no padding (the harness's truncation:
    the last ``max_length + 1`` tokens, all but the last fed)."""
    ids, start = list(request.input_ids), request.start
    if max_length is not None and len(ids) > max_length + 1:
        cut = len(ids) - (max_length + 1)
        ids, start = ids[cut:], max(1, start - cut)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids[:-1]]), use_cache=False).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    scored = range(max(1, start), len(ids))
    return (sum(float(logp[t - 1, ids[t]]) for t in scored),
            all(int(logits[t - 1].argmax()) == ids[t] for t in scored))


def _check(results, expected, tol=1e-5):
    assert [s for s, _ in results] == pytest.approx([s for s, _ in expected], abs=tol)
    assert [g for _, g in results] == [g for _, g in expected]


def _count_tokens(model):
    seen = {"tokens": 0}

    def count(module, args, kwargs):
        seen["tokens"] += kwargs["input_ids"].numel()

    model.register_forward_pre_hook(count, with_kwargs=True)
    return seen


@pytest.mark.parametrize("shots", [0, 5])
@pytest.mark.parametrize("arch,rule", [("llama", "lm-eval"), ("gpt2", "afp"), ("bloom", "lm-eval"),
                                       ("gemma", "afp"), ("xglm", "lm-eval"), ("qwen2", "afp")])
def test_scores_equal_each_request_alone(arch, rule, shots, bpe_tokenizer):
    """Per-choice log-likelihoods (and greedy flags) equal the plain one-request path within
    1e-5, batched with padding, two languages mixed; at 5 shots the run path is taken and the
    demonstrations go through the model less than once per item."""
    from xlt.testing import tiny_model

    model = tiny_model(arch, bpe_tokenizer, seed=3).eval()
    pairs = _mixed_requests(shots)
    requests = encode_requests(bpe_tokenizer, pairs, rule)
    expected = [_reference(model, r) for r in requests]
    counted = copy.deepcopy(model)
    seen = _count_tokens(counted)
    fastpath.reset()
    _check(score_encoded(counted, requests, batch_size=4, pad_token_id=bpe_tokenizer.pad_token_id), expected)
    counts = fastpath.counts()
    if arch == "bloom":  # ALiBi from a 2-D mask, no position ids: the two-pass path, said once
        assert counts["refused"] == {fastpath.ONE_PASS_CHOICES: 1}, counts
        assert fastpath.ONE_PASS_CHOICES not in counts["taken"]
    else:
        assert not counts["refused"], counts
        assert counts["taken"].get(fastpath.ONE_PASS_CHOICES, 0) > 0, counts
    if shots:
        assert counts["taken"].get(SHARED_DEMONSTRATIONS) == 2, counts  # one run per language
        demo_tokens = len(bpe_tokenizer(pairs[0][0][:pairs[0][0].rindex("\n\n")])["input_ids"])
        assert demo_tokens > 20
        assert seen["tokens"] < len({c for c, _ in pairs}) * demo_tokens  # not once per item
    else:
        assert SHARED_DEMONSTRATIONS not in counts["taken"]  # nothing long enough is shared


def _common(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_runs_follow_tasks_and_languages_when_mixed(bpe_tokenizer):
    """Requests of two languages and two tasks (four sets of demonstrations), shuffled, and
    0-shot items: each run holds exactly one set's requests, and its base is the set's common
    token prefix less its last token; the 0-shot items join no run."""
    from xlt.eval.scoring import _demonstration_groups

    sets = {("en", "a"): prepare_choice_items(_items(6, 1), _items(5, 11)),
            ("zh", "a"): prepare_choice_items(_items(5, 2, "zh"), _items(5, 12, "zh")),
            ("en", "b"): prepare_choice_items(_items(4, 3), _items(5, 13)),
            ("zh", "b"): prepare_choice_items(_items(5, 4, "zh"), _items(5, 14, "zh")),
            ("en", "0-shot"): prepare_choice_items(_items(6, 5), [])}
    tagged = [(key, pair) for key, prepared in sets.items() for item in prepared for pair in item.requests]
    random.Random(0).shuffle(tagged)
    requests = encode_requests(bpe_tokenizer, [pair for _, pair in tagged], "lm-eval")
    runs, rest = _demonstration_groups(requests, range(len(requests)))
    assert len(runs) == 4
    for base, members in runs:
        keys = {tagged[i][0] for i in members}
        assert len(keys) == 1 and keys != {("en", "0-shot")}
        (key,) = keys
        assert sorted(members) == [i for i, (k, _) in enumerate(tagged) if k == key]
        contexts = [requests[i].input_ids[:requests[i].shared] for i in members]
        common = min(_common(contexts[0], c) for c in contexts)
        assert base == common - 1
    assert sorted(rest) == [i for i, (k, _) in enumerate(tagged) if k == ("en", "0-shot")]


def test_runs_split_at_the_trie_branch_by_hand():
    """Sorted contexts A, B (sharing 10 tokens), C (sharing 2 with B), D (sharing 10 with C):
    two runs of long prefixes, not one run of the 2 tokens all four share."""
    from xlt.eval.scoring import _demonstration_groups

    def request(context, tail):
        ids = tuple(context) + tuple(tail)
        return EncodedRequest(ids, len(context), len(context))

    first, second = list(range(1, 11)), [1, 2] + list(range(50, 58))
    requests = [request(first + [20, 21], [7]), request(first + [30], [7, 8]),
                request(second + [40], [7]), request(second + [41, 42], [9]),
                request([99, 98, 97], [1])]
    runs, rest = _demonstration_groups(requests, range(5))
    # each run's base is its 10 common tokens less the last (which stays in each suffix); the
    # saving (1 * 9 tokens) is below the minimum worth a forward, so nothing is run yet
    assert runs == [] and rest == [0, 1, 2, 3, 4]
    many = [request(first + [20 + k], [7]) for k in range(6)] + [request(second + [60 + k], [7])
                                                                for k in range(6)]
    runs, rest = _demonstration_groups(many, range(12))
    assert sorted(runs) == [(9, [0, 1, 2, 3, 4, 5]), (9, [6, 7, 8, 9, 10, 11])] and rest == []


def test_an_unexpandable_cache_is_refused_once(bpe_tokenizer, caplog):
    """A model whose cache layers are not plain attention layers: the run path is refused with
    one warning (for two runs), and the scores are still the reference's."""
    from transformers.cache_utils import DynamicLayer

    from xlt.testing import tiny_model

    class OtherLayer(DynamicLayer):
        pass

    model = tiny_model("llama", bpe_tokenizer, seed=4).eval()
    odd = copy.deepcopy(model)

    def retype(module, args, kwargs, output):
        cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
        for layer in getattr(cache, "layers", []):
            layer.__class__ = OtherLayer
        return output

    odd.register_forward_hook(retype, with_kwargs=True)
    requests = encode_requests(bpe_tokenizer, _mixed_requests(5), "lm-eval")
    expected = [_reference(model, r) for r in requests]
    fastpath.reset()
    with caplog.at_level(logging.WARNING, logger="xlt"):
        _check(score_encoded(odd, requests, batch_size=4, pad_token_id=bpe_tokenizer.pad_token_id), expected)
    said = [r.getMessage() for r in caplog.records if f"{SHARED_DEMONSTRATIONS} is off" in r.getMessage()]
    assert len(said) == 1 and "cannot be expanded" in said[0]
    counts = fastpath.counts()
    assert counts["refused"][SHARED_DEMONSTRATIONS] == 2 and SHARED_DEMONSTRATIONS not in counts["taken"]


def test_requests_past_the_context_take_the_plain_path(bpe_tokenizer, caplog):
    """With a context shorter than some requests: those are truncated and scored whole (said
    once), the others still share their demonstrations; every score is the reference's."""
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=5).eval()
    requests = encode_requests(bpe_tokenizer, _mixed_requests(5), "lm-eval")
    lengths = sorted(len(r.input_ids) for r in requests)
    cap = lengths[len(lengths) * 2 // 3]  # a third of the requests are cut
    expected = [_reference(model, r, cap) for r in requests]
    assert any(abs(a - b) > 1e-3 for (a, _), (b, _) in zip(expected, map(lambda r: _reference(model, r),
                                                                          requests)))
    fastpath.reset()
    with caplog.at_level(logging.WARNING, logger="xlt"):
        _check(score_encoded(model, requests, batch_size=4, pad_token_id=bpe_tokenizer.pad_token_id,
                             max_length=cap), expected)
    said = [r.getMessage() for r in caplog.records if f"{cap}-token context" in r.getMessage()]
    assert len(said) == 1
    assert fastpath.counts()["taken"].get(SHARED_DEMONSTRATIONS, 0) >= 1


@pytest.mark.parametrize("shots", [0, 5])
def test_choices_that_repeat_the_premise_share_it(shots, bpe_tokenizer):
    """The harness's XNLI layout: the context is empty (or the demonstrations alone, the
    delimiter moving into the continuation) and every choice repeats the premise. Each request
    shares the premise's tokens with its item's other choices (not with other items), the
    premise goes through the model once per item, and the scores are the reference's."""
    from xlt.testing import tiny_model

    rng = random.Random(7)

    def sentence(n):
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize()

    docs = [(sentence(rng.randint(6, 14)), sentence(rng.randint(2, 6))) for _ in range(8 + shots)]
    texts = [[f"{p}, right? {w}, {h}" for w in ("Yes", "Also", "No")] for p, h in docs]
    prefix = "".join(" " + choices[0] + "\n\n" for choices in texts[8:])
    pairs = [(prefix, " " + choice) for choices in texts[:8] for choice in choices]
    requests = encode_requests(bpe_tokenizer, pairs, "lm-eval")
    for k, request in enumerate(requests):
        item = [r.input_ids for r in requests[3 * (k // 3):3 * (k // 3) + 3]]
        common = min(_common(item[0], ids) for ids in item)
        assert request.shared == common > request.start  # the premise, past the context
    model = tiny_model("llama", bpe_tokenizer, seed=6).eval()
    expected = [_reference(model, r) for r in requests]
    counted = copy.deepcopy(model)
    seen = _count_tokens(counted)
    _check(score_encoded(counted, requests, batch_size=6, pad_token_id=bpe_tokenizer.pad_token_id), expected)
    premise_tokens = sum(r.shared - r.start for r in requests)
    whole = sum(len(r.input_ids) for r in requests)
    assert seen["tokens"] < whole - premise_tokens / 2  # each premise once, not three times


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_the_two_pass_path_when_one_pass_is_refused(arch, bpe_tokenizer, monkeypatch, caplog):
    """With the one-pass path refused, each context goes first and its choices after it against
    its cache (two passes): the same scores, and the refusal said once with what runs instead."""
    from xlt.eval import scoring
    from xlt.testing import tiny_model

    monkeypatch.setattr(scoring, "_one_pass_refusal", lambda model, accepted: "a test's reason")
    model = tiny_model(arch, bpe_tokenizer, seed=4).eval()
    for shots in (0, 5):
        requests = encode_requests(bpe_tokenizer, _mixed_requests(shots), "lm-eval")
        expected = [_reference(model, r) for r in requests]
        fastpath.reset()
        with caplog.at_level(logging.WARNING, logger="xlt.fastpath"):
            caplog.clear()
            _check(score_encoded(model, requests, batch_size=4, pad_token_id=bpe_tokenizer.pad_token_id), expected)
        counts = fastpath.counts()
        assert counts["refused"] == {fastpath.ONE_PASS_CHOICES: 1}, counts
        assert counts["taken"].get(fastpath.SHARED_PREFIX, 0) > 0 and fastpath.ONE_PASS_CHOICES not in counts["taken"]
        said = [r.getMessage() for r in caplog.records if "one-pass choices is off" in r.getMessage()]
        assert said == ["xlt: one-pass choices is off: a test's reason; each context is computed first and "
                        "its choices after it, in two passes (same results, slower)"]


def test_one_pass_feeds_every_context_token_once(bpe_tokenizer):
    """Items whose three choices share a long context (and begin with different words, so no two
    share more than the context): the one-pass rows hold each context once and each choice's
    own tokens once, so the real (non-padding) tokens fed equal the context plus the choices'
    tokens, counted here from the ids; and the head computes logits only where a scored token is
    predicted."""
    from xlt.formats import MultipleChoiceItem
    from xlt.testing import tiny_model

    rng = random.Random(5)
    items = [MultipleChoiceItem(lang="en", label=0,
                                context=" ".join(rng.choice(WORDS) for _ in range(20)),
                                choices=tuple(" ".join([first] + [rng.choice(WORDS) for _ in range(k + 2)])
                                              for k, first in enumerate(("red", "blue", "stone"))))
             for _ in range(4)]
    pairs = [r for p in prepare_choice_items(items, []) for r in p.requests]
    requests = encode_requests(bpe_tokenizer, pairs, "lm-eval")
    model = tiny_model("llama", bpe_tokenizer, seed=5).eval()
    reference = [_reference(model, r) for r in requests]
    fed, head = [], []
    model.register_forward_pre_hook(lambda m, a, k: fed.append(k["input_ids"].clone()), with_kwargs=True)
    model.lm_head.register_forward_pre_hook(lambda m, a: head.append(a[0].shape[-2]))
    fastpath.reset()
    _check(score_encoded(model, requests, batch_size=3, pad_token_id=bpe_tokenizer.pad_token_id), reference)
    # the head runs only where a scored token is predicted: the context's last position (every
    # choice's first token) and each choice's positions but its last
    assert all(r.start == min(q.shared for q in requests[k - k % 3:k - k % 3 + 3]) for k, r in enumerate(requests))
    assert sum(head) == sum(1 + sum(len(r.input_ids) - r.start - 1 for r in requests[k:k + 3])
                            for k in range(0, len(requests), 3))
    assert fastpath.counts()["taken"].get(fastpath.ONE_PASS_CHOICES) == 4  # one row per item, 3 requests a batch
    real = sum(int((ids != bpe_tokenizer.pad_token_id).sum()) for ids in fed)
    expected = 0
    for k in range(0, len(requests), 3):
        group = requests[k:k + 3]
        shared = min(r.shared for r in group)
        expected += shared + sum(len(r.input_ids) - shared for r in group)
    assert real == expected
    assert real < sum(len(r.input_ids) for r in requests) - 2 * 4 * 20  # the context, not thrice


def test_one_pass_refusal_names_each_reason(bpe_tokenizer, monkeypatch):
    """The one pass is refused, with its reason, for an attention implementation other than sdpa
    and eager, for modelling code that does not build its mask with transformers' masking
    utilities (which pass a 4-D mask through), and for ALiBi position biases."""
    import sys
    import types

    from transformers.masking_utils import create_causal_mask

    from xlt.eval.scoring import _forward_kwargs, _one_pass_refusal
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=6).eval()
    accepted = _forward_kwargs(model)
    assert _one_pass_refusal(model, accepted) is None
    assert "position_ids" in _one_pass_refusal(model, accepted - {"position_ids"})
    modelling = types.ModuleType("elsewhere_modeling")
    monkeypatch.setitem(sys.modules, "elsewhere_modeling", modelling)
    model.__class__ = type("ElsewhereForCausalLM", (type(model),), {"__module__": "elsewhere_modeling"})
    assert "masking utilities" in _one_pass_refusal(model, accepted)
    modelling.create_causal_mask = create_causal_mask
    assert _one_pass_refusal(model, accepted) is None
    modelling.build_alibi_tensor = lambda *args: None
    assert "ALiBi" in _one_pass_refusal(model, accepted)
    del modelling.build_alibi_tensor
    model.config = types.SimpleNamespace(_attn_implementation="flash_attention_2")
    assert "'flash_attention_2' attention implementation" in _one_pass_refusal(model, accepted)
