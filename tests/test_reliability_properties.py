"""Property-based tests (hypothesis) of the merge arithmetic, the LSLo pruning arithmetic and
the data loaders. Each property is checked against an independent dense / brute-force
computation. max_examples stays small: the whole module runs in seconds."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _factors(seed: int, out: int, inp: int, rank: int, scaling: float):
    from xlt.merge.adapters import LoraFactors

    g = torch.Generator().manual_seed(seed)
    return LoraFactors(A=torch.randn(rank, inp, generator=g, dtype=torch.float64),
                       B=torch.randn(out, rank, generator=g, dtype=torch.float64), scaling=scaling)


def _dense(f):
    return f.scaling * f.B @ f.A


shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))            # (out, in)
ranks = st.lists(st.integers(1, 5), min_size=1, max_size=4)
weights = st.floats(-3, 3, allow_nan=False)
scalings = st.sampled_from([0.5, 1.0, 2.0, 16 / 3])


# --------------------------------------------------------------------------------------------
# merge arithmetic


@FAST
@given(shape=shapes, rank_list=ranks, seed=st.integers(0, 2**16), data=st.data())
def test_delta_merge_equals_dense_weighted_sum(shape, rank_list, seed, data):
    from xlt.merge.adamergex import concat_updates, lora_delta

    out, inp = shape
    factors = [_factors(seed + i, out, inp, r, data.draw(scalings)) for i, r in enumerate(rank_list)]
    w = data.draw(st.lists(weights, min_size=len(factors), max_size=len(factors)))
    merged = concat_updates(factors, w)
    expected = sum(wi * _dense(f) for wi, f in zip(w, factors))
    assert merged.A.shape == (sum(rank_list), inp) and merged.B.shape == (out, sum(rank_list))
    torch.testing.assert_close(lora_delta(merged, torch.float64), expected, rtol=1e-10, atol=1e-10)


@FAST
@given(shape=shapes, r=st.integers(1, 5), seed=st.integers(0, 2**16), t=weights)
def test_adamergex_delta_rule(shape, r, seed, t):
    """task + t (target - source) as updates; t = 0 gives the task adapter, and
    ref_target == ref_source gives the task adapter for every t."""
    from xlt.merge.adamergex import concat_updates, lora_delta

    out, inp = shape
    task, target, source = (_factors(seed + k, out, inp, r, 2.0) for k in range(3))
    merged = lora_delta(concat_updates([task, target, source], [1.0, t, -t]), torch.float64)
    torch.testing.assert_close(merged, _dense(task) + t * (_dense(target) - _dense(source)),
                               rtol=1e-10, atol=1e-10)
    at_zero = lora_delta(concat_updates([task, target, source], [1.0, 0.0, -0.0]), torch.float64)
    torch.testing.assert_close(at_zero, _dense(task), rtol=0, atol=1e-12)
    same = lora_delta(concat_updates([task, target, target], [1.0, t, -t]), torch.float64)
    torch.testing.assert_close(same, _dense(task), rtol=1e-10, atol=1e-10)


@FAST
@given(n=st.integers(1, 16), seed=st.integers(0, 2**16), t=weights)
def test_ia3_rule(n, seed, t):
    from xlt.merge.adamergex import ia3_adamergex

    g = torch.Generator().manual_seed(seed)
    l_task, l_target, l_source = (1 + 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64) for _ in range(3))
    assume(bool((l_source.abs() > 1e-3).all()))
    merged, _ = ia3_adamergex(l_task, l_target, l_source, t)
    torch.testing.assert_close(merged, l_task * (t * (l_target / l_source - 1) + 1))
    # ref_target == ref_source: the task vector itself, whatever t
    same, _ = ia3_adamergex(l_task, l_source, l_source, t)
    torch.testing.assert_close(same, l_task, rtol=1e-12, atol=1e-12)
    # t = 0: the task vector
    zero, _ = ia3_adamergex(l_task, l_target, l_source, 0.0)
    torch.testing.assert_close(zero, l_task, rtol=0, atol=0)


@FAST
@given(shape=shapes, r=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_truncated_svd_error_is_optimal_and_non_increasing_in_rank(shape, r, seed):
    from xlt.merge.adamergex import lora_delta, truncate_rank

    out, inp = shape
    factors = _factors(seed, out, inp, r, 1.5)
    dense = _dense(factors)
    s = torch.linalg.svdvals(dense)
    total = float((s * s).sum())
    errors = []
    for k in range(1, r + 2):
        approx, error = truncate_rank(factors, k)
        assert approx.A.shape[0] <= k
        # Eckart-Young: the reported and the actual error are those of the best rank-k matrix
        best = (float((s[k:] * s[k:]).sum()) / total) ** 0.5
        actual = float(torch.linalg.norm(lora_delta(approx, torch.float64) - dense)) / total ** 0.5
        assert error == pytest.approx(best, abs=1e-7)
        assert actual == pytest.approx(best, abs=1e-7)
        errors.append(error)
    assert all(a >= b - 1e-12 for a, b in zip(errors, errors[1:]))
    assert errors[-1] == pytest.approx(0.0, abs=1e-7)  # k > rank: exact


# --------------------------------------------------------------------------------------------
# LSLo pruning arithmetic


@FAST
@given(t1=st.integers(1, 5), t2=st.integers(1, 12), target=st.floats(0, 1))
def test_pruning_schedule_is_monotone_and_bounded(t1, t2, target):
    from xlt.lslo.pruning import pruning_ratio

    ratios = [pruning_ratio(e, t1, t2, target) for e in range(1, t1 + t2 + 4)]
    assert all(r is None for r in ratios[:t1 - 1])
    active = [r for r in ratios if r is not None]
    assert active[0] == 0.0
    assert all(0.0 <= r <= target + 1e-12 for r in active)
    assert all(a <= b + 1e-12 for a, b in zip(active, active[1:]))
    assert active[t2] == pytest.approx(target) and active[-1] == target


@functools.lru_cache(maxsize=1)
def _lslo():
    from _lslo_helpers import paper_config, tiny_m2m100

    from xlt.lslo import apply_lslo

    return apply_lslo(tiny_m2m100(), paper_config())


@FAST
@given(ratio=st.floats(0, 1), pool=st.sampled_from(["language", "layer"]), seed=st.integers(0, 2**16),
       ties=st.booleans())
def test_pruning_masks_keep_the_count_implied_by_the_ratio_and_drop_the_smallest(ratio, pool, seed, ties):
    from xlt.lslo.pruning import _pools, prune_step

    model = _lslo()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in sorted(model.lslo_layers.items()):
            layer.lora_b_mask = None
            values = torch.randn(layer.lora_b.shape, generator=g)
            if ties:  # many equal magnitudes: the count must still be exact
                values = torch.round(values * 2) / 2
            layer.lora_b.copy_(values)
    counts = prune_step(model, ratio, pool)
    for key, members in _pools(model, pool).items():
        name = "/".join(map(str, key)) if isinstance(key, tuple) else str(key)
        values = torch.cat([layer.lora_b[rows].abs().reshape(-1) for layer, rows in members])
        masks = torch.cat([layer.lora_b_mask[rows].reshape(-1) for layer, rows in members])
        n = values.numel()
        assert counts[name] == round(ratio * n)
        assert int((~masks).sum()) == round(ratio * n)          # exactly that many pruned
        if 0 < counts[name] < n:
            assert float(values[~masks].max()) <= float(values[masks].min())  # the smallest ones
    for _, layer in model.lslo_layers.items():
        layer.lora_b_mask = None


# --------------------------------------------------------------------------------------------
# data loaders: any bytes give records or a DataError naming the file, never another exception


@FAST
@given(lines=st.lists(st.one_of(
    st.text(max_size=30),
    st.builds(json.dumps, st.dictionaries(st.sampled_from(["lang", "prompt", "completion", "x"]),
                                          st.one_of(st.text(max_size=5), st.integers(), st.none()),
                                          max_size=4)),
    st.sampled_from(['{"lang": "qaa", "prompt": "p", "completion": "c"}', "[", "{}", "null", "\ufeff{"])),
    max_size=6), raw=st.binary(max_size=8))
def test_task_reader_accepts_or_names_the_file(tmp_path_factory, lines, raw):
    from xlt.errors import DataError
    from xlt.formats import read_task_examples

    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8") + (b"\n" + raw if raw else b""))
    try:
        records = read_task_examples(path)
    except DataError as exc:
        assert str(path) in str(exc)
        assert "\n" not in str(exc).strip()
    else:
        assert all(r.prompt and r.lang for r in records)
