"""AdaMergeX edge cases against hand-computed values: mixed ranks, the factor-wise reference
order, the reference-A disagreement, exact IA3 and weighted sums."""

import math

import pytest
import torch

from xlt.errors import ConfigError, ModelError
from xlt.merge.adamergex import (adamergex, combine_factors, guarded_denominator, ia3_adamergex, lora_delta,
                                 merge_lora, weighted_sum)
from xlt.merge.adapters import LoraFactors

PREFIX = "base_model.model.model.layers.0."
MODULES = ["self_attn.q_proj", "self_attn.v_proj"]


def _lora(factors, r, alpha, **config):
    """A (config, tensors) pair: ``factors`` = {module: (A (r, in), B (out, r))}."""
    tensors = {}
    for module, (A, B) in factors.items():
        tensors[f"{PREFIX}{module}.lora_A.weight"] = A
        tensors[f"{PREFIX}{module}.lora_B.weight"] = B
    return ({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
             "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": "tiny", **config}, tensors)


def _random(rank, seed, n_in=4, n_out=3):
    g = torch.Generator().manual_seed(seed)
    return {m: (torch.randn(rank, n_in, generator=g, dtype=torch.float64),
                torch.randn(n_out, rank, generator=g, dtype=torch.float64)) for m in MODULES}


def test_delta_merge_of_mixed_rank_loras_is_exact():
    task, tgt, src = _random(2, 0), _random(3, 1), _random(1, 2)
    t = 0.7
    merged = adamergex(_lora(task, 2, 4), _lora(tgt, 3, 6), _lora(src, 1, 5), t)
    assert merged.report["rank"] == 6 and merged.report["modules"] == 2
    config = merged.adapter.config
    assert (config["r"], config["lora_alpha"], config["rank_pattern"]) == (6, 6, {})
    assert config["use_rslora"] is False and config["inference_mode"] is True
    for module in MODULES:
        # alpha / r: 4/2 = 2, 6/3 = 2, 5/1 = 5
        expected = 2 * task[module][1] @ task[module][0] + t * (2 * tgt[module][1] @ tgt[module][0]
                                                               - 5 * src[module][1] @ src[module][0])
        A = merged.adapter.tensors[f"{PREFIX}{module}.lora_A.weight"]
        B = merged.adapter.tensors[f"{PREFIX}{module}.lora_B.weight"]
        assert A.shape == (6, 4) and B.shape == (3, 6)
        assert torch.allclose(B @ A, expected, atol=1e-12)  # scaling 1 (r = alpha)
    # truncated to rank 2: the error is that of the best rank-2 approximation
    low = adamergex(_lora(task, 2, 4), _lora(tgt, 3, 6), _lora(src, 1, 5), t, rank=2)
    for module in MODULES:
        expected = 2 * task[module][1] @ task[module][0] + t * (2 * tgt[module][1] @ tgt[module][0]
                                                               - 5 * src[module][1] @ src[module][0])
        s = torch.linalg.svdvals(expected)
        error = math.sqrt(float(s[2:].pow(2).sum() / s.pow(2).sum()))
        assert low.report["relative_error"][f"model.layers.0.{module}"] == pytest.approx(error, rel=1e-9)
    assert low.report["max_relative_error"] == pytest.approx(max(low.report["relative_error"].values()))
    assert low.adapter.config["r"] == 2
    # the factor-wise rule needs equal ranks
    with pytest.raises(ModelError):
        adamergex(_lora(task, 2, 4), _lora(tgt, 3, 6), _lora(src, 1, 5), t, mode="factorwise")


def test_delta_rank_config_names_the_modules_whose_rank_differs():
    task = {"self_attn.q_proj": _random(2, 0)["self_attn.q_proj"], "self_attn.v_proj": _random(1, 3)["self_attn.v_proj"]}
    config = _lora(task, 2, 2, rank_pattern={"v_proj": 1}, alpha_pattern={"v_proj": 1})
    merged = merge_lora([_as_state(config), _as_state(config)], [1.0, 1.0]).adapter.config
    # ranks after concatenation: q 4, v 2 -> one of each: the larger is the default
    assert (merged["r"], merged["lora_alpha"]) == (4, 4)
    assert merged["rank_pattern"] == {"model.layers.0.self_attn.v_proj": 2} == merged["alpha_pattern"]


def _as_state(pair):
    from xlt.merge.adapters import as_adapter_state

    return as_adapter_state(pair, source="adapter")


def test_factorwise_follows_the_reference_order_of_operations():
    # float32, A1 + t (A2 - A3): 0.1 + 0.3 * (3e7 - (3e7 - 2)) = 0.1 + 0.6 = 0.7, whereas
    # A1 + t A2 - t A3 loses everything below 1 at a magnitude of 9e6.
    big = torch.tensor([[3e7]], dtype=torch.float32)
    one = LoraFactors(A=torch.tensor([[0.1]]), B=torch.tensor([[0.1]]), scaling=2.0)
    two = LoraFactors(A=big.clone(), B=big.clone(), scaling=5.0)
    three = LoraFactors(A=big - 2, B=big - 2, scaling=7.0)
    merged = combine_factors([one, two, three], [1.0, 0.3, -0.3])
    assert merged.A.dtype == torch.float32 and merged.scaling == 2.0
    assert merged.A.item() == pytest.approx(0.7, abs=1e-6) and merged.B.item() == pytest.approx(0.7, abs=1e-6)
    # other weights: the plain weighted sum
    other = combine_factors([one, two], [2.0, 0.5])
    assert other.A.item() == pytest.approx(0.2 + 1.5e7)
    # the same rule for the non-factor tensors
    x = weighted_sum([torch.tensor([0.1]), big[0], big[0] - 2], [1.0, 0.3, -0.3])
    assert x.item() == pytest.approx(0.7, abs=1e-6)
    assert weighted_sum([torch.tensor([1.0]), torch.tensor([2.0])], [3.0, -1.0]).item() == 1.0


def test_factorwise_merge_and_reference_a_disagreement():
    a1, b1 = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0], [0.0]])
    a2, b2 = torch.tensor([[3.0, 0.0]]), torch.tensor([[2.0], [1.0]])
    a3, b3 = torch.tensor([[2.0, 1.0]]), torch.tensor([[0.0], [1.0]])
    pair = lambda a, b: _lora({m: (a, b) for m in MODULES}, 1, 2)  # noqa: E731
    merged = adamergex(pair(a1, b1), pair(a2, b2), pair(a3, b3), 0.5, mode="factorwise")
    A = merged.adapter.tensors[f"{PREFIX}self_attn.q_proj.lora_A.weight"]
    B = merged.adapter.tensors[f"{PREFIX}self_attn.q_proj.lora_B.weight"]
    # A1 + 0.5 (A2 - A3) = [1.5, 1.5]; B1 + 0.5 (B2 - B3) = [2, 0]; the task config (r 1, alpha 2)
    assert A.tolist() == [[1.5, 1.5]] and B.tolist() == [[2.0], [0.0]]
    assert merged.adapter.config["r"] == 1 and merged.adapter.config["lora_alpha"] == 2
    assert merged.adapter.config["inference_mode"] is True
    # ||A2 - A3|| / ||A3|| over both modules: sqrt(2 * (1 + 1) / (2 * (4 + 1))) = sqrt(0.4)
    assert merged.report["ref_A_disagreement"] == pytest.approx(math.sqrt(0.4))
    same = adamergex(pair(a1, b1), pair(a2, b2), pair(a2, b3), 0.5, mode="factorwise")
    assert same.report["ref_A_disagreement"] == 0.0
    # as released: A1 + t A2, B1 + t B2, ref_source unused, no disagreement reported
    released = adamergex(pair(a1, b1), pair(a2, b2), pair(a3, b3), 0.5, mode="as-released")
    assert released.adapter.tensors[f"{PREFIX}self_attn.v_proj.lora_A.weight"].tolist() == [[2.5, 2.0]]
    assert released.report["mode"] == "as-released" and "ref_A_disagreement" not in released.report
    assert released.report["inputs"] == ["task", "ref_target", "ref_source"]
    assert released.report["t"] == 0.5 and released.report["method"] == "adamergex"


@pytest.mark.parametrize("t", [float("nan"), float("inf"), True, "1"])
def test_t_must_be_a_finite_number(t):
    pair = _lora(_random(1, 0), 1, 1)
    with pytest.raises(ConfigError, match="finite"):
        adamergex(pair, pair, pair, t)


def test_merge_lora_rejects_bad_requests():
    pair = _as_state(_lora(_random(1, 0), 1, 1))
    with pytest.raises(ConfigError, match="mode"):
        merge_lora([pair], [1.0], mode="cat")
    with pytest.raises(ConfigError, match="1 adapters but 2 weights"):
        merge_lora([pair], [1.0, 2.0])
    with pytest.raises(ConfigError, match="no adapters"):
        merge_lora([], [])
    with pytest.raises(ConfigError, match="rank"):
        merge_lora([pair], [1.0], mode="factorwise", rank=1)
    with pytest.raises(ConfigError, match="mode"):
        adamergex(pair, pair, pair, 1.0, mode="cat")


def test_ia3_quotient_and_clamp_by_hand():
    task = torch.tensor([2.0, 2.0, 2.0, 2.0])
    tgt = torch.tensor([3.0, 1.0, 1.0, 1.0])
    src = torch.tensor([1.5, 0.0, -1e-9, 0.5])
    merged, clamped = ia3_adamergex(task, tgt, src, 0.5, eps=0.01)
    # l * (t (tgt / src - 1) + 1), src clamped to +-0.01 (0 -> +0.01): entries 2 and 3 touched
    expected = [2 * (0.5 * (3 / 1.5 - 1) + 1), 2 * (0.5 * (1 / 0.01 - 1) + 1),
                2 * (0.5 * (1 / -0.01 - 1) + 1), 2 * (0.5 * (1 / 0.5 - 1) + 1)]
    assert merged.tolist() == pytest.approx(expected)
    assert clamped == 2
    denominator, touched = guarded_denominator(torch.tensor([0.01, -0.02, 0.0]), 0.01)
    assert denominator.tolist() == pytest.approx([0.01, -0.02, 0.01]) and touched == 1
    unchanged, none = guarded_denominator(src, 0.0)
    assert unchanged is src and none == 0


def test_lora_delta_applies_the_scaling():
    factors = LoraFactors(A=torch.tensor([[1.0, 2.0]]), B=torch.tensor([[3.0], [4.0]]), scaling=0.5)
    assert lora_delta(factors).tolist() == [[1.5, 3.0], [2.0, 4.0]]


def test_ia3_default_clamp_and_config():
    merged, clamped = ia3_adamergex(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([2.0, 2.0, 2.0]),
                                    torch.tensor([0.0, -1e-7, 0.5]), 1.0)
    # IA3_EPS = 1e-6: 0 -> +1e-6, -1e-7 -> -1e-6; t = 1: l_task * l_tgt / l_src
    assert merged.tolist() == pytest.approx([2e6, -2e6, 4.0])
    assert clamped == 2
    keys = [f"{PREFIX}self_attn.v_proj.ia3_l"]
    pair = lambda value: ({"peft_type": "IA3", "task_type": "CAUSAL_LM", "target_modules": ["v_proj"],  # noqa: E731
                           "feedforward_modules": [], "base_model_name_or_path": "tiny"},
                          {k: torch.full((3, 1), value) for k in keys})
    result = adamergex(pair(2.0), pair(3.0), pair(1.5), 0.5)
    # 2 * (0.5 * (3 / 1.5 - 1) + 1) = 3
    assert result.adapter.tensors[keys[0]].view(-1).tolist() == [3.0, 3.0, 3.0]
    assert result.adapter.config["inference_mode"] is True and result.report["eps"] == 1e-6
    assert result.report["clamped_entries"] == 0 and result.report["modules"] == 1


def test_different_base_models_are_refused_unless_allowed():
    task, other = _lora(_random(1, 0), 1, 1), _lora(_random(1, 1), 1, 1)
    other[0]["base_model_name_or_path"] = "another-model"
    with pytest.raises(ModelError, match="base models differ"):
        merge_lora([_as_state(task), _as_state(other)], [1.0, 1.0])
    with pytest.raises(ModelError, match="base models differ"):
        adamergex(task, other, task, 1.0)
    assert merge_lora([_as_state(task), _as_state(other)], [1.0, 1.0], allow_base_mismatch=True).report["rank"] == 2


def test_requested_dtypes_are_kept():
    from xlt.merge.adamergex import concat_updates

    factors = [LoraFactors(A=torch.ones(1, 2), B=torch.ones(2, 1), scaling=1.0)] * 2
    assert concat_updates(factors, [1.0, 1.0], dtype=torch.float64).A.dtype == torch.float64
    assert concat_updates(factors, [1.0, 1.0]).A.dtype == torch.float32
    assert combine_factors(factors, [1.0, 1.0], dtype=torch.float64).B.dtype == torch.float64
    mixed = [factors[0], LoraFactors(A=torch.ones(1, 2, dtype=torch.float64), B=torch.ones(2, 1, dtype=torch.float64),
                                     scaling=1.0)]
    assert combine_factors(mixed, [1.0, 1.0]).A.dtype == torch.float32  # the first adapter's
    # the first tensor's dtype sets the working precision: 1 + 1e-9 survives in float64
    total = weighted_sum([torch.tensor([1.0], dtype=torch.float64), torch.tensor([1e-9])], [1.0, 1.0])
    assert total.dtype == torch.float64 and total.item() != 1.0


def test_truncate_rank_of_zero_and_of_tiny_updates():
    from xlt.merge.adamergex import truncate_rank

    for A, B in [(torch.zeros(2, 3), torch.zeros(4, 2)), (torch.ones(2, 3), torch.zeros(4, 2))]:
        factors, error = truncate_rank(LoraFactors(A=A, B=B, scaling=1.0), 1)
        assert error == 0.0 and factors.A.shape == (1, 3) and factors.B.shape == (4, 1)
        assert not factors.A.any() and not factors.B.any()
    # an exact rank-2 update whose Gram eigenvalues are ~2e-8 and ~5e-15: both directions are
    # real (the tolerance is relative to the largest eigenvalue), so rank 2 reproduces it exactly
    A = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    B = 1e-4 * torch.tensor([[1.0, 1.0], [0.0, 1e-3], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    update = B @ A
    factors, error = truncate_rank(LoraFactors(A=A, B=B, scaling=1.0), 2)
    assert error == pytest.approx(0.0, abs=1e-12)
    assert torch.linalg.norm(factors.B @ factors.A - update) <= 1e-9 * torch.linalg.norm(update)


def test_output_dtype_applies_to_every_tensor():
    from xlt.merge.adamergex import merge_ia3_linear

    config, tensors = _lora(_random(1, 0), 1, 1)
    tensors = {k: v.float() for k, v in tensors.items()}
    tensors["base_model.model.score.weight"] = torch.ones(2, 4)  # a non-factor tensor
    merged = merge_lora([_as_state((config, tensors))] * 2, [1.0, 0.5], dtype=torch.float64)
    assert {t.dtype for t in merged.adapter.tensors.values()} == {torch.float64}
    assert merged.adapter.tensors["base_model.model.score.weight"].tolist() == [[1.5] * 4] * 2
    key = f"{PREFIX}self_attn.v_proj.ia3_l"
    ia3 = _as_state(({"peft_type": "IA3", "task_type": "CAUSAL_LM", "target_modules": ["v_proj"],
                      "feedforward_modules": [], "base_model_name_or_path": "tiny"}, {key: torch.ones(3, 1)}))
    linear = merge_ia3_linear([ia3, ia3], [0.25, 0.5], dtype=torch.float64)
    assert linear.adapter.tensors[key].dtype == torch.float64
    assert linear.adapter.tensors[key].view(-1).tolist() == [0.75] * 3
    assert merge_ia3_linear([ia3, ia3], [1.0, 1.0]).adapter.tensors[key].dtype == torch.float32
