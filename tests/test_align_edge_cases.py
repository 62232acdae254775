"""Edge cases of pooling, InfoNCE and retrieval accuracy, against hand-computed values."""

import math

import pytest
import torch

from xlt.align import info_nce, pool, retrieval_accuracy
from xlt.errors import ConfigError


def _unit(degrees):
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


def test_retrieval_accuracy_counts_anchors_not_candidates():
    # anchors at 0, 5, 90 degrees; candidates at 0, 90, 80 degrees (row i translates row i).
    # Nearest candidate of each anchor: 0 -> c0 (right), 5 -> c0 (wrong), 90 -> c1 (wrong): 1/3.
    # (Nearest anchor of each candidate would give 2/3, and a count instead of a mean 1.)
    anchors, candidates = _unit([0, 5, 90]), _unit([0, 90, 80])
    assert retrieval_accuracy(anchors, candidates) == pytest.approx(1 / 3)
    # the other way round: 0 -> a0 (right), 90 -> a2 (wrong), 80 -> a2 (right): 2/3
    assert retrieval_accuracy(candidates, anchors) == pytest.approx(2 / 3)


def test_retrieval_accuracy_ties_go_to_the_lowest_index_and_scale_is_ignored():
    same = torch.tensor([[1.0, 1.0]] * 4)
    # every candidate ties; the lowest index (0) wins, so only anchor 0 is right: 1/4
    assert retrieval_accuracy(same, same) == pytest.approx(0.25)
    anchors = _unit([0, 90]) * torch.tensor([[10.0], [0.1]])
    assert retrieval_accuracy(anchors, _unit([0, 90])) == 1.0


@pytest.mark.parametrize("tau", [0, 0.0, -0.1, float("nan"), float("inf"), True, "0.1"])
def test_info_nce_rejects_a_temperature_that_is_not_a_finite_positive_number(tau):
    x = torch.randn(3, 4)
    with pytest.raises(ConfigError, match="temperature"):
        info_nce(x, x, tau)


def test_info_nce_of_a_zero_vector_is_finite():
    # cos(0, c) is taken as 0. tau = 0.5; anchors [0, 0], [1, 0]; candidates [1, 0], [0, 1]:
    # S = [[0, 0], [2, 0]]; row 0 (target 0): log 2; row 1 (target 1): log(e^2 + 1)
    anchors = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = (math.log(2) + math.log(1 + math.e ** 2)) / 2
    assert info_nce(anchors, candidates, 0.5).item() == pytest.approx(expected, rel=1e-6)
    # a zero candidate: anchors [1, 0] twice, candidates [0, 0], [0, 1]: S = 0, log 2 per row
    zero_candidate = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert info_nce(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), zero_candidate, 0.5).item() == \
        pytest.approx(math.log(2), rel=1e-6)


def test_info_nce_symmetric_averages_both_directions():
    # anchors [1, 0], [1, 0]; candidates [1, 0], [0, 1]; tau = 1: S = [[1, 0], [1, 0]]
    # a -> c: row 0 target 0: log(e + 1) - 1; row 1 target 1: log(e + 1) - 0
    # c -> a (S^T = [[1, 1], [0, 0]]): row 0 target 0: log(2e) - 1; row 1 target 1: log 2
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    forward = (2 * math.log(math.e + 1) - 1) / 2
    backward = (math.log(2 * math.e) - 1 + math.log(2)) / 2
    assert info_nce(a, c, 1.0).item() == pytest.approx(forward, rel=1e-6)
    assert info_nce(a, c, 1.0, symmetric=True).item() == pytest.approx((forward + backward) / 2, rel=1e-6)


def test_pool_picks_the_real_token_at_position_zero_and_at_the_end():
    hidden = torch.arange(2 * 3 * 1, dtype=torch.float32).view(2, 3, 1)  # row b, position t -> 3b + t
    right = torch.tensor([[1, 0, 0], [0, 0, 1]])  # only real token at 0 / at 2
    assert pool(hidden, right, "last").view(-1).tolist() == [0.0, 5.0]
    assert pool(hidden, right, "first").view(-1).tolist() == [0.0, 5.0]
    assert pool(hidden, right, "mean").view(-1).tolist() == [0.0, 5.0]
    gaps = torch.tensor([[1, 0, 1], [0, 1, 1]])
    assert pool(hidden, gaps, "last").view(-1).tolist() == [2.0, 5.0]
    assert pool(hidden, gaps, "first").view(-1).tolist() == [0.0, 4.0]
    assert pool(hidden, gaps, "mean").view(-1).tolist() == [1.0, 4.5]
    assert pool(hidden, None, "mean").view(-1).tolist() == [1.0, 4.0]
    assert pool(hidden, None, "last").view(-1).tolist() == [2.0, 5.0]


def test_pool_rejects_bad_input():
    hidden = torch.zeros(2, 3, 4)
    with pytest.raises(ConfigError, match="pooling method 'max'"):
        pool(hidden, None, "max")
    with pytest.raises(ValueError, match="no real token"):
        pool(hidden, torch.tensor([[1, 1, 0], [0, 0, 0]]), "mean")
    with pytest.raises(ValueError, match=r"\(batch, seq, dim\)"):
        pool(torch.zeros(2, 3), None, "mean")


@pytest.fixture(scope="module")
def llama(bpe_tokenizer):
    from xlt.testing import tiny_model

    return tiny_model("llama", bpe_tokenizer, seed=0, num_layers=3)


def test_layer_states_says_when_the_block_did_not_run(llama):
    from types import SimpleNamespace

    from xlt.align import layer_states
    from xlt.errors import ModelError

    model = __import__("copy").deepcopy(llama)
    model.forward = lambda **kwargs: SimpleNamespace(logits=None)  # no block runs (as under LayerDrop)
    with pytest.raises(ModelError, match="decoder block 2 of .* did not run"):
        layer_states(model, torch.tensor([[5, 6, 7]]), None, 2, early_exit=False)


def test_whole_forward_without_logits_and_with_gradient(llama):
    from types import SimpleNamespace

    from xlt.align import layer_states

    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        early = layer_states(llama, ids, None, 2)
    model = __import__("copy").deepcopy(llama)
    real = model.forward
    model.forward = lambda **kwargs: SimpleNamespace(logits=None, inner=real(**kwargs))  # a headless output
    with torch.no_grad():
        assert torch.equal(layer_states(model, ids, None, 2, early_exit=False), early)
    # with gradient: the same values, and the head joins the graph with a zero gradient
    hidden = layer_states(llama, ids, None, 2, early_exit=False)
    assert torch.equal(hidden.detach(), early)
    hidden.sum().backward()
    head = llama.get_output_embeddings().weight.grad
    assert head is not None and not head.any()
    llama.zero_grad(set_to_none=True)


def test_a_fresh_process_warns_on_its_first_single_pair_batch():
    import importlib
    import warnings

    import xlt.align.losses as losses

    importlib.reload(losses)  # the module state of a new process
    x = torch.randn(1, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert losses.info_nce(x, x, 0.1).item() == 0.0
        losses.info_nce(x, x, 0.1)
    assert len([w for w in caught if "one pair" in str(w.message)]) == 1


class _TwoProcesses:
    """torch.distributed as seen by rank ``rank`` of two processes whose other rank holds ``other``."""

    def __init__(self, rank, other):
        self.rank, self.other = rank, other

    def get_world_size(self):
        return 2

    def get_rank(self):
        return self.rank

    def all_gather(self, out, tensor):
        theirs = torch.tensor([self.other.shape[0]]) if tensor.numel() == 1 and tensor.dtype == torch.long \
            else self.other
        for r in range(2):
            out[r].copy_(tensor if r == self.rank else theirs)


def test_gather_keeps_the_local_rows_gradient_at_the_rank_offset(monkeypatch):
    import torch.distributed as dist

    from xlt.align import losses

    local = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]], requires_grad=True)  # 2 rows of 3 features
    other = torch.tensor([[5.0, 6.0, 0.0], [7.0, 8.0, 0.0]])
    fake = _TwoProcesses(1, other)
    for name in ("get_world_size", "get_rank", "all_gather"):
        monkeypatch.setattr(dist, name, getattr(fake, name))
    gathered, offset = losses._gather_with_grad(local)
    assert offset == 2
    assert gathered.tolist() == [[5.0, 6.0, 0.0], [7.0, 8.0, 0.0], [1.0, 2.0, 0.0], [3.0, 4.0, 0.0]]
    gathered.sum().backward()
    assert local.grad.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    # a different number of rows on the other process is a clean error
    fake.other = torch.zeros(3, 3)
    with pytest.raises(ConfigError, match=r"same number of pairs on every process, got \[3, 2\]"):
        losses._gather_with_grad(local)


def test_info_nce_gathers_only_when_asked(monkeypatch):
    from xlt.align import losses

    def twice(rows):  # another process holding the same rows
        return torch.cat([rows, rows]), 0

    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    monkeypatch.setattr(losses, "_gather_active", lambda: True)
    monkeypatch.setattr(losses, "_gather_with_grad", twice)
    # tau = 1, S = I: local: log(e + 1) - 1; gathered (4 x 4, two equal candidates per anchor)
    assert losses.info_nce(a, c, 1.0).item() == pytest.approx(math.log(math.e + 1) - 1, rel=1e-6)
    assert losses.info_nce(a, c, 1.0, gather=True).item() == pytest.approx(math.log(2 * math.e + 2) - 1,
                                                                             rel=1e-6)
    ones = torch.ones(2, 1, dtype=torch.long)
    h0, h1 = a.unsqueeze(1), c.unsqueeze(1)  # one token per sentence
    assert losses.alignment_loss(h0, ones, h1, ones, temperature=1.0).item() == \
        pytest.approx(math.log(math.e + 1) - 1, rel=1e-6)
    assert losses.alignment_loss(h0, ones, h1, ones, temperature=1.0, gather=True).item() == \
        pytest.approx(math.log(2 * math.e + 2) - 1, rel=1e-6)


def test_retrieval_accuracy_normalises_each_row():
    # the anchors' norms differ by 100x; only their directions may count
    anchors = torch.tensor([[1.0, 1.0], [100.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert retrieval_accuracy(anchors, candidates) == 1.0
    assert retrieval_accuracy(candidates, anchors) == 1.0


def test_info_nce_shapes_must_match():
    with pytest.raises(ValueError, match=r"must both be \(batch, dim\)"):
        info_nce(torch.zeros(3, 4), torch.zeros(3, 5), 0.1)
    with pytest.raises(ValueError, match=r"must both be \(batch, dim\)"):
        info_nce(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), 0.1)


def test_alignment_loss_is_one_directional_by_default():
    from xlt.align import alignment_loss

    # one token per sentence: pooled vectors are the tokens; the numbers of the symmetric test
    a = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    c = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    ones = torch.ones(2, 1, dtype=torch.long)
    forward = (2 * math.log(math.e + 1) - 1) / 2
    assert alignment_loss(a, ones, c, ones, temperature=1.0).item() == pytest.approx(forward, rel=1e-6)


def test_retrieval_accuracy_with_a_zero_candidate():
    # a zero candidate is similar to nothing (cosine 0), so it attracts no anchor
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, -1.0]])
    assert retrieval_accuracy(anchors, candidates) == pytest.approx(2 / 3)
