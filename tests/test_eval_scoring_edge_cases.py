"""Log-likelihood scoring against a one-sequence-at-a-time reference computed here: truncation,
batches wider than their sequences, shared prefixes, and the small helpers by hand."""

from __future__ import annotations

import math

import pytest
import torch

from xlt.eval.scoring import EncodedRequest


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    from xlt.models import load_model, load_tokenizer

    model = load_model(tiny_llama_dir, dtype="float32")
    model.eval()
    return model, load_tokenizer(tiny_llama_dir)


def _reference(model, request: EncodedRequest, max_length=None):
    """Score one request alone: no padding, no batching; the harness's left truncation (it
    feeds ``tokens[-(L+1):-1]`` and scores the tokens each of them predicts)."""
    ids, start = list(request.input_ids), request.start
    if max_length is not None and len(ids) > max_length + 1:
        cut = len(ids) - (max_length + 1)
        ids, start = ids[cut:], max(1, start - cut)
    start = max(1, start)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids[:-1]])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    total = sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))
    greedy = all(int(logits[t - 1].argmax()) == ids[t] for t in range(start, len(ids)))
    return total, greedy


def _requests(n, seed, low=5, high=14, vocab=100):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(low, high, (1,), generator=g))
        ids = tuple(int(x) for x in torch.randint(3, vocab, (length,), generator=g))
        out.append(EncodedRequest(ids, int(torch.randint(1, length, (1,), generator=g))))
    return out


def _check(results, expected):
    assert [s for s, _ in results] == pytest.approx([s for s, _ in expected], abs=1e-4)
    assert [g for _, g in results] == [g for _, g in expected]


def test_truncation_keeps_the_last_max_length_tokens(llama):
    from xlt.eval.scoring import score_encoded

    model, tok = llama
    requests = _requests(7, seed=0)
    requests.append(EncodedRequest(tuple(range(3, 15)), 11))  # only the last token scored
    cap = 8
    assert sum(len(r.input_ids) > cap for r in requests) >= 3
    expected = [_reference(model, r, cap) for r in requests]
    untruncated = [_reference(model, r) for r in requests]
    assert any(abs(a[0] - b[0]) > 1e-3 for a, b in zip(expected, untruncated))  # the cut matters
    for batch_size in (1, 3, 8):
        _check(score_encoded(model, requests, batch_size=batch_size, pad_token_id=tok.pad_token_id,
                             max_length=cap, share_prefix=False), expected)
    _check(score_encoded(model, requests, batch_size=3, pad_token_id=tok.pad_token_id), untruncated)


def test_a_batch_wider_than_its_sequences(llama):
    from xlt.eval.scoring import score_encoded

    model, tok = llama
    requests = _requests(19, seed=1, low=3, high=6)  # 19 rows (> 8 per chunk), sequences of 3..5
    expected = [_reference(model, r) for r in requests]
    _check(score_encoded(model, requests, batch_size=19, pad_token_id=tok.pad_token_id), expected)


def test_shared_prefixes_give_the_reference_scores(llama):
    from xlt import fastpath
    from xlt.eval.scoring import score_encoded

    model, tok = llama
    g = torch.Generator().manual_seed(2)
    requests = []
    for prefix_length in (6, 9, 4):
        prefix = tuple(int(x) for x in torch.randint(3, 100, (prefix_length,), generator=g))
        for k in range(3):
            tail = tuple(int(x) for x in torch.randint(3, 100, (1 + 2 * k,), generator=g))
            # lm-eval style (the choice only) and afp style (everything after the first token)
            start = prefix_length if k != 1 else 1
            requests.append(EncodedRequest(prefix + tail, start, prefix_length))
    expected = [_reference(model, r) for r in requests]
    fastpath.reset()
    _check(score_encoded(model, requests, batch_size=4, pad_token_id=tok.pad_token_id), expected)
    assert fastpath.counts()["taken"].get(fastpath.SHARED_PREFIX, 0) >= 1
    # a context longer than max_length: those requests are truncated and scored whole
    cap = 10
    _check(score_encoded(model, requests, batch_size=4, pad_token_id=tok.pad_token_id, max_length=cap),
           [_reference(model, r, cap) for r in requests])


def test_prefix_groups_by_hand():
    from xlt.eval.scoring import _prefix_groups

    requests = [EncodedRequest((1, 2, 3, 4), 1, 3), EncodedRequest((1, 2, 3, 5, 6), 1, 3),
                EncodedRequest((1, 2, 3, 7), 1, 3), EncodedRequest((9, 9, 9), 1, 0),
                EncodedRequest((1, 2, 3), 1, 3)]
    # the members' shortest sequence (1, 2, 3) leaves no token after the prefix: length 2
    groups, singles = _prefix_groups(requests, 2, None)
    assert groups == [(2, [0, 1]), (2, [2, 4])] and singles == [3]
    groups, singles = _prefix_groups(requests[:3], 2, None)
    assert groups == [(3, [0, 1])] and singles == [2]
    groups, singles = _prefix_groups(requests[:3], 4, 4)  # (1, 2, 3, 5, 6) is too long
    assert groups == [(3, [0, 2])] and singles == [1]
    groups, singles = _prefix_groups(requests[:3], 4, None, window=8)  # half the window: 4
    assert groups == [(3, [0, 2])] and singles == [1]
    groups, singles = _prefix_groups(requests[:3], 4, 3, window=100)
    assert groups == [] and singles == [0, 1, 2]


def test_afp_sequence_scores_by_hand():
    from xlt.eval.scoring import afp_sequence_scores

    # vocab 2; position t's logits predict token t + 1
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 5.0]]])
    ids = torch.tensor([[1, 0, 1]])
    # p(ids[1] = 0 | pos 0) = 1/2, p(ids[2] = 1 | pos 1) = 1/4: log2 = -1 - 2
    assert afp_sequence_scores(logits, ids, torch.tensor([[1, 1, 1]])).tolist() == pytest.approx([-3.0])
    # a masked last token is not scored
    assert afp_sequence_scores(logits, ids, torch.tensor([[1, 1, 0]])).tolist() == pytest.approx([-1.0])


class _Tok:
    def __init__(self, bos, eos, model_max_length=None):
        self.bos_token_id, self.eos_token_id, self.model_max_length = bos, eos, model_max_length


def test_prefix_token_and_model_max_length():
    from types import SimpleNamespace

    from xlt.eval.scoring import model_max_length, prefix_token_id

    assert prefix_token_id(_Tok(1, 2)) == 1
    assert prefix_token_id(_Tok(0, 2)) == 0
    assert prefix_token_id(_Tok(None, 2)) == 2
    with pytest.raises(ValueError, match="neither a BOS nor an EOS"):
        prefix_token_id(_Tok(None, None))
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64))
    assert model_max_length(model, _Tok(1, 2, 10**30)) == 64
    assert model_max_length(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=1)), _Tok(1, 2)) == 1
    gpt = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=0, n_positions=32))
    assert model_max_length(gpt, _Tok(1, 2)) == 32
    bare = SimpleNamespace(config=SimpleNamespace())
    assert model_max_length(bare, _Tok(1, 2, 512)) == 512
    assert model_max_length(bare, _Tok(1, 2, 10**30)) is None


class _Generative:
    def can_generate(self):
        return True

    def forward(self, input_ids, attention_mask=None, cache=None):  # pragma: no cover - never called
        raise AssertionError


class _NoMask(_Generative):
    def forward(self, input_ids, past_key_values=None):  # pragma: no cover
        raise AssertionError


class _NoCache(_Generative):
    def forward(self, input_ids, attention_mask=None):  # pragma: no cover
        raise AssertionError


class _Encoder(_Generative):
    def can_generate(self):
        return False


def test_kv_cache_refusals_name_their_reason():
    from xlt.eval.scoring import _forward_kwargs, _kv_cache_refusal, cache_argument

    def refusal(model):
        return _kv_cache_refusal(model, _forward_kwargs(model))

    assert refusal(_Generative()) is None
    assert cache_argument(_forward_kwargs(_Generative())) == "cache"
    assert cache_argument(_forward_kwargs(_NoMask())) == "past_key_values"
    assert cache_argument({"input_ids"}) is None
    assert refusal(_NoMask()) == "_NoMask.forward takes no attention_mask"
    assert refusal(_NoCache()) == "_NoCache.forward takes no key/value cache argument ('cache' or 'past_key_values')"
    assert refusal(_Encoder()) == "_Encoder is not a generative model (no key/value cache to continue from)"
    assert "not a generative model" in _kv_cache_refusal(object(), {"cache", "attention_mask"})


def test_truncation_refusal_is_announced_only_when_a_request_is_cut(llama, caplog):
    import logging

    from xlt import fastpath
    from xlt.eval.scoring import score_encoded

    model, tok = llama
    requests = [EncodedRequest((5, 6, 7, 8), 1, 2), EncodedRequest((5, 6, 9), 2, 2)]  # a 2-token prefix
    for cap, announced in ((4, False), (3, True)):
        fastpath.reset()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="xlt"):
            results = score_encoded(model, requests, batch_size=2, pad_token_id=tok.pad_token_id, max_length=cap)
        said = [r.getMessage() for r in caplog.records if f"{cap}-token context are truncated" in r.getMessage()]
        assert len(said) == (1 if announced else 0), cap
        _check(results, [_reference(model, r, cap) for r in requests])


def test_greedy_flags_inside_a_shared_prefix(llama):
    from xlt.eval.scoring import score_encoded

    model, tok = llama
    ids = [5]
    with torch.no_grad():
        for _ in range(9):  # the model's own greedy continuation: every token is its argmax
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    other = (ids[8] + 1) % 100 + 3
    # afp-style requests score from token 1, so most scored tokens lie inside the shared prefix
    requests = [EncodedRequest(tuple(ids), 1, 7), EncodedRequest(tuple(ids[:8] + [other]), 1, 7),
                EncodedRequest(tuple(ids[:7] + [other, ids[8]]), 1, 7)]
    expected = [_reference(model, r) for r in requests]
    assert expected[0][1] is True and expected[1][1] is False
    _check(score_encoded(model, requests, batch_size=3, pad_token_id=tok.pad_token_id), expected)
