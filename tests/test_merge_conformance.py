"""AdaMergeX conformance: the paper-reference numeric cases (effective updates, (IA)^3 vectors and
logits of tiny merged models), PEFT equivalences and the reference-data chunkers.

Expected numbers are those of the method's conformance table (an independent re-implementation
on torch 2.13 / transformers 5.23 / peft 0.21.2), not outputs of xlt. Merged adapters are
written by xlt, loaded with ``PeftModel.from_pretrained`` and measured through PEFT's layers.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import _merge_helpers as H

pytestmark = pytest.mark.usefixtures("one_thread")

DW_TOL = 1e-6
LOGIT_TOL = 1e-4

# case: (total ΣΔW, total ‖ΔW‖F, L0.q Σ, L0.q ‖·‖F, L1.down Σ, L1.down ‖·‖F,
#        logits sum, logits L2, last-position logits[0:4], argmax)
LORA_CASES = {
    "0": (None, None, None, None, None, None, 5.516293, 6.487691,
          [.081798, -.141343, .290889, -.214173], 101),
    "0b": (-20.4473283401, 16.3597255284, 5.3190358806, 3.8816958152, -2.841982467, 5.2547402454,
           13.217248, 6.418409, [.126236, -.191247, .111170, .050297], 118),
    "1a": (68.6298275, 48.7810336599, 13.2596374289, 10.4752182304, 6.7698624315, 16.029721632,
           -2.928157, 6.158735, [-.228577, -.197661, -.198815, -.057517], 56),
    "1b": (28.9086350409, 24.3905702444, 10.7260903031, 5.4635154251, 5.4414287048, 8.0070063467,
           -20.619372, 6.413136, [.146659, -.432559, -.019964, .123020], 26),
    "2a": (-33.194820513, 28.1691910735, -2.2797642844, 6.4141904121, 14.0935388295, 9.0610310173,
           -8.834533, 6.834577, [.235750, -.069577, -.018419, -.111017], 77),
    "2b": (-26.8210744265, 19.9747583068, 1.5196357981, 4.6552397304, 5.6257781812, 6.376390213,
           -24.305224, 5.994738, [-.025190, .070187, -.053042, .141958], 118),
    "3": (8.2778789563, 32.4934726058, 9.608032405, 7.1768381036, 7.3450428387, 10.5320475959,
          -15.712366, 6.848991, [.250004, -.368615, .062754, .146933], 21),
}
# case: (Σl', ‖l'‖2, L0.k Σl', L1.down Σl', logits sum, L2, logits[0:4], argmax)
IA3_CASES = {
    "7-0": (510.9969900846, 22.6930234601, 64.5189293027, 128.4862657785, 4.165914, 6.478472,
            [.061078, -.133419, .273819, -.213221], 101),
    "7a": (513.6505781412, 23.044742896, 63.438239336, 128.9902854562, 6.584117, 6.423852,
           [.089332, -.149615, .283315, -.208921], 101),
    "7b": (512.323784709, 22.81059835, 63.9785841107, 128.7382765412, 5.2932, 6.451654,
           [.075024, -.141655, .278694, -.211611], 101),
    "7c": (508.3473745584, 22.7858389439, 62.6822252274, 127.6870065331, 6.759419, 6.426765,
           [.087443, -.149365, .283073, -.210057], 101),
    "7d": (509.6721820831, 22.6862578209, 63.6005772948, 128.08663553, 5.387941, 6.452631,
           [.074082, -.141526, .278550, -.212148], 101),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The three LoRA and three (IA)^3 adapter directories of the conformance cases."""
    root = tmp_path_factory.mktemp("conformance")
    dirs = {}
    for name, seed in (("task", 1), ("ref_tgt", 2), ("ref_src", 3)):
        dirs[name] = H.write_adapter_dir(root / name, H.lora_config(), H.lora_state_dict(H.lora_factors(seed)))
    for name, seed in (("ia3_task", 11), ("ia3_ref_tgt", 12), ("ia3_ref_src", 13)):
        dirs[name] = H.write_adapter_dir(root / name, H.ia3_config(), H.ia3_state_dict(H.ia3_vectors(seed)))
    dirs["root"] = root
    return dirs


def _reference_deltas(adapter_dir) -> dict[str, torch.Tensor]:
    """dW = s B A in float64 from the written float32 factors (independent of xlt)."""
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert not config.get("rank_pattern") and not config.get("use_rslora")
    s = config["lora_alpha"] / config["r"]
    sd = load_file(adapter_dir / "adapter_model.safetensors")
    out = {}
    for key, A in sd.items():
        if key.endswith("lora_A.weight"):
            B = sd[key.replace("lora_A", "lora_B")]
            assert A.dtype == torch.float32
            out[key[len(H.PREFIX):-len(".lora_A.weight")]] = s * (B.double() @ A.double())
    return out


def _peft_model(adapter_dir):
    from peft import PeftModel

    return PeftModel.from_pretrained(H.base_model(), str(adapter_dir)).eval()


def _check_logits(stats, expected):
    assert stats["sum"] == pytest.approx(expected[0], abs=LOGIT_TOL)
    assert stats["l2"] == pytest.approx(expected[1], abs=LOGIT_TOL)
    assert stats["first4"] == pytest.approx(expected[2], abs=LOGIT_TOL)
    assert stats["argmax"] == expected[3]


def _check_lora_case(adapter_dir, case):
    exp = LORA_CASES[case]
    deltas = _reference_deltas(adapter_dir)
    stats = H.delta_stats(deltas)
    got = [stats[k] for k in ("total_sum", "total_fro", "q_sum", "q_fro", "down_sum", "down_fro")]
    assert got == pytest.approx(list(exp[:6]), abs=DW_TOL), case
    model = _peft_model(adapter_dir)
    peft_deltas = H.peft_lora_deltas(model, "default")
    assert set(peft_deltas) == set(deltas)
    for k in deltas:  # PEFT applies what the file says
        assert torch.allclose(peft_deltas[k], deltas[k], atol=1e-6)
    _check_logits(H.logits_stats(model), exp[6:])


def test_base_checksums_and_logits():
    model = H.base_model()
    params = [p.detach().double() for p in model.parameters()]
    assert sum(float(p.sum()) for p in params) == pytest.approx(315.10868791, abs=1e-6)
    assert sum(float(p.abs().sum()) for p in params) == pytest.approx(1891.86327497, abs=1e-6)
    _check_logits(H.logits_stats(model), LORA_CASES["0"][6:])


def test_factor_checksums():
    expected = {1: (-0.1392752753, 2.2041797799), 2: (2.2098568841, 3.2582086923),
                3: (0.9226501299, -2.1646838824)}
    for seed, (sa, sb) in expected.items():
        A, B = H.lora_factors(seed)["model.layers.0.self_attn.q_proj"]
        assert float(A.double().sum()) == pytest.approx(sa, abs=1e-8)
        assert float(B.double().sum()) == pytest.approx(sb, abs=1e-8)


def test_task_adapter_alone(inputs):
    from pathlib import Path

    _check_lora_case(Path(inputs["task"]), "0b")


@pytest.mark.parametrize("mode,t,case", [
    ("factorwise", 1.0, "1a"), ("factorwise", 0.5, "1b"),
    ("delta", 1.0, "2a"), ("delta", 0.5, "2b"),
    ("as-released", 1.0, "3"), ("as-released", 0.0, "0b"),
])
def test_lora_modes(inputs, tmp_path, mode, t, case):
    from xlt.merge import adamergex, write_adapter

    result = adamergex(inputs["task"], inputs["ref_tgt"], inputs["ref_src"], t, mode=mode)
    out = write_adapter(result.adapter, tmp_path / "merged")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == (24 if mode == "delta" else 8)
    _check_lora_case(out, case)


def test_factorwise_uses_ref_source(inputs):
    """The released script's typo drops the subtraction; the factor-wise mode must not."""
    from xlt.merge import adamergex

    fw = adamergex(inputs["task"], inputs["ref_tgt"], inputs["ref_src"], 1.0, mode="factorwise").adapter
    rel = adamergex(inputs["task"], inputs["ref_tgt"], inputs["ref_src"], 1.0, mode="as-released").adapter
    task = adamergex(inputs["task"], inputs["ref_tgt"], inputs["ref_src"], 0.0, mode="factorwise").adapter
    key = H.PREFIX + "model.layers.0.self_attn.q_proj.lora_A.weight"
    A1, _ = H.lora_factors(1)["model.layers.0.self_attn.q_proj"]
    A2, _ = H.lora_factors(2)["model.layers.0.self_attn.q_proj"]
    A3, _ = H.lora_factors(3)["model.layers.0.self_attn.q_proj"]
    assert torch.allclose(fw.tensors[key], A1 + (A2 - A3), atol=1e-6)
    assert torch.allclose(rel.tensors[key], A1 + A2, atol=1e-6)
    assert torch.equal(task.tensors[key], A1)


@pytest.mark.parametrize("t", [1.0, 0.5])
def test_delta_equals_peft_cat(inputs, t):
    """xlt's delta mode is PEFT's add_weighted_adapter(..., [1, t, -t], "cat"), tensor for tensor."""
    from peft import PeftModel

    from xlt.merge import adamergex

    model = PeftModel.from_pretrained(H.base_model(), inputs["task"], adapter_name="task_src")
    model.load_adapter(inputs["ref_tgt"], adapter_name="ref_tgt")
    model.load_adapter(inputs["ref_src"], adapter_name="ref_src")
    name = f"cat_{str(t).replace('.', 'p')}"
    model.add_weighted_adapter(["task_src", "ref_tgt", "ref_src"], [1.0, t, -t], name,
                               combination_type="cat")
    from peft.tuners.lora import LoraLayer

    ours = adamergex(inputs["task"], inputs["ref_tgt"], inputs["ref_src"], t, mode="delta").adapter
    compared = 0
    for module_name, module in model.named_modules():
        if isinstance(module, LoraLayer) and name in module.lora_A:
            key = module_name[len(H.PREFIX):] if module_name.startswith(H.PREFIX) else module_name
            A = ours.tensors[f"{H.PREFIX}{key}.lora_A.weight"]
            B = ours.tensors[f"{H.PREFIX}{key}.lora_B.weight"]
            assert torch.allclose(A, module.lora_A[name].weight, atol=1e-7)
            assert torch.allclose(B, module.lora_B[name].weight, atol=1e-7)
            assert module.scaling[name] == pytest.approx(1.0)
            compared += 1
    assert compared == 14


@pytest.mark.parametrize("t,default_svd_error", [(1.0, 0.587397), (0.5, 0.489061)])
def test_rank_truncation(inputs, t, default_svd_error):
    """--rank 24 is exact; --rank 8 gives the optimal truncation (PEFT's svd at rank 8)."""
    from xlt.merge import adamergex

    exact = adamergex(inputs["task"], inputs["ref_tgt"], inputs["ref_src"], t)
    full = adamergex(inputs["task"], inputs["ref_tgt"], inputs["ref_src"], t, rank=24)
    low = adamergex(inputs["task"], inputs["ref_tgt"], inputs["ref_src"], t, rank=8)
    assert full.report["max_relative_error"] < 1e-6
    num = den = 0.0
    for key, A in exact.adapter.tensors.items():
        if key.endswith("lora_A.weight"):
            bkey = key.replace("lora_A", "lora_B")
            ref = exact.adapter.tensors[bkey].double() @ A.double()
            assert torch.allclose(full.adapter.tensors[bkey].double() @ full.adapter.tensors[key].double(),
                                  ref, atol=1e-6)
            approx = low.adapter.tensors[bkey].double() @ low.adapter.tensors[key].double()
            assert low.adapter.tensors[key].shape[0] == 8
            num += float(((approx - ref) ** 2).sum())
            den += float((ref ** 2).sum())
    assert math.sqrt(num / den) == pytest.approx(default_svd_error, abs=1e-5)
    # the per-module errors reported are the true ones
    per_module = low.report["relative_error"]
    assert len(per_module) == 14 and all(0 < e < 1 for e in per_module.values())


def _ia3_stats(adapter_dir):
    from safetensors.torch import load_file

    sd = load_file(adapter_dir / "adapter_model.safetensors")
    vecs = {k[len(H.PREFIX):-len(".ia3_l")]: v.double().flatten() for k, v in sd.items()}
    total = sum(float(v.sum()) for v in vecs.values())
    l2 = math.sqrt(sum(float((v ** 2).sum()) for v in vecs.values()))
    return [total, l2, float(vecs["model.layers.0.self_attn.k_proj"].sum()),
            float(vecs["model.layers.1.mlp.down_proj"].sum())]


def _check_ia3_case(adapter_dir, case):
    exp = IA3_CASES[case]
    assert _ia3_stats(adapter_dir) == pytest.approx(list(exp[:4]), abs=DW_TOL), case
    _check_logits(H.logits_stats(_peft_model(adapter_dir)), exp[4:])


@pytest.mark.parametrize("t,case", [(1.0, "7a"), (0.5, "7b"), (0.0, "7-0")])
def test_ia3_multiplicative(inputs, tmp_path, t, case):
    from xlt.merge import adamergex, write_adapter

    result = adamergex(inputs["ia3_task"], inputs["ia3_ref_tgt"], inputs["ia3_ref_src"], t)
    assert result.report["clamped_entries"] == 0
    _check_ia3_case(write_adapter(result.adapter, tmp_path / "m"), case)


@pytest.mark.parametrize("t,case", [(1.0, "7c"), (0.5, "7d")])
def test_ia3_additive_cross_ablation(inputs, tmp_path, t, case):
    """The additive "cross" ablation is task arithmetic on the vectors (= PEFT's IA3 weighted sum)."""
    from xlt.merge import task_arithmetic, write_adapter

    result = task_arithmetic([inputs["ia3_task"], inputs["ia3_ref_tgt"], inputs["ia3_ref_src"]], [1.0, t, -t])
    _check_ia3_case(write_adapter(result.adapter, tmp_path / "m"), case)


def test_ia3_multi_adapter_activation_equals_t1(inputs):
    """Case 7e: PEFT multiplies active (IA)^3 adapters; [task, ref_tgt, 1/ref_src] = merge at t=1."""
    from peft import PeftModel

    from xlt.merge import adamergex

    root = inputs["root"]
    recip = {k: 1.0 / v for k, v in H.ia3_vectors(13).items()}
    H.write_adapter_dir(root / "ia3_recip", H.ia3_config(), H.ia3_state_dict(recip))
    model = PeftModel.from_pretrained(H.base_model(), inputs["ia3_task"], adapter_name="task_src")
    model.load_adapter(inputs["ia3_ref_tgt"], adapter_name="ref_tgt")
    model.load_adapter(str(root / "ia3_recip"), adapter_name="ref_src_recip")
    model.base_model.set_adapter(["task_src", "ref_tgt", "ref_src_recip"])
    model.eval()
    _check_logits(H.logits_stats(model), IA3_CASES["7a"][4:])
    merged = adamergex(inputs["ia3_task"], inputs["ia3_ref_tgt"], inputs["ia3_ref_src"], 1.0).adapter
    key = H.PREFIX + "model.layers.0.self_attn.k_proj.ia3_l"
    l1, l2, l3 = (H.ia3_vectors(s)["model.layers.0.self_attn.k_proj"] for s in (11, 12, 13))
    assert torch.allclose(merged.tensors[key].flatten(), l1 * l2 / l3, atol=1e-6)


def test_ia3_zero_guard(inputs):
    """Case 8: one zero in ref_src -> one non-finite entry without a guard; the guard clamps it."""
    from xlt.errors import ModelError
    from xlt.merge import adamergex, ia3_adamergex
    from xlt.merge.adapters import read_adapter

    l1, l2, l3 = (H.ia3_vectors(s)["model.layers.0.self_attn.k_proj"] for s in (11, 12, 13))
    l3 = l3.clone()
    l3[0] = 0.0
    raw, touched = ia3_adamergex(l1, l2, l3, 1.0, eps=0.0)
    assert int((~torch.isfinite(raw)).sum()) == 1 and touched == 0
    guarded, touched = ia3_adamergex(l1, l2, l3, 1.0, eps=1e-6)
    assert touched == 1 and bool(torch.isfinite(guarded).all())
    assert float(guarded[0]) == pytest.approx(float(l1[0] * l2[0] / 1e-6), rel=1e-5)
    assert torch.equal(guarded[1:], raw[1:])
    src = read_adapter(inputs["ia3_ref_src"])
    key = H.PREFIX + "model.layers.0.self_attn.k_proj.ia3_l"
    src.tensors[key] = src.tensors[key].clone()
    src.tensors[key][0, 0] = 0.0
    result = adamergex(inputs["ia3_task"], inputs["ia3_ref_tgt"], src, 1.0)
    assert result.report["clamped_entries"] == 1
    assert result.report["clamped_by_module"] == {"model.layers.0.self_attn.k_proj": 1}
    with pytest.raises(ModelError, match="non-finite"):
        adamergex(inputs["ia3_task"], inputs["ia3_ref_tgt"], src, 1.0, eps=0.0)


@pytest.mark.parametrize("eps,rel,prod,fw", [
    (0.01, 0.180410, (-1.7398211887, 2.8071380096), (-2.0009447776, 2.8309469797)),
    (0.001, 0.018136, (-0.1836764397, 0.2792457786), (-0.1862876741, 0.2792388594)),
])
def test_shared_init_first_order_agreement(eps, rel, prod, fw):
    """Case 9: with a shared A0 the factor-wise and delta merges agree to first order in eps."""
    from xlt.merge import adamergex

    g = torch.Generator().manual_seed(7)
    sds = [{}, {}, {}]
    for key, fan_in, fan_out in H.canonical_modules():
        A0 = torch.randn(H.R, fan_in, generator=g) * 0.1
        for i in range(3):
            A = A0 + eps * torch.randn(H.R, fan_in, generator=g)
            B = eps * torch.randn(fan_out, H.R, generator=g)
            sds[i][f"{H.PREFIX}{key}.lora_A.weight"] = A
            sds[i][f"{H.PREFIX}{key}.lora_B.weight"] = B
    adapters = [(H.lora_config(), sd) for sd in sds]
    stats = {}
    for mode in ("delta", "factorwise"):
        result = adamergex(*adapters, 1.0, mode=mode)
        s = result.adapter.config["lora_alpha"] / result.adapter.config["r"]
        deltas = {}
        for key, A in result.adapter.tensors.items():
            if key.endswith("lora_A.weight"):
                deltas[key] = s * (result.adapter.tensors[key.replace("lora_A", "lora_B")].double() @ A.double())
        stats[mode] = deltas
        if mode == "factorwise":
            assert result.report["ref_A_disagreement"] < 0.2  # shared init detected
    total = {m: (sum(float(d.sum()) for d in v.values()), math.sqrt(sum(float((d ** 2).sum()) for d in v.values())))
             for m, v in stats.items()}
    assert total["delta"] == pytest.approx(prod, abs=DW_TOL)
    assert total["factorwise"] == pytest.approx(fw, abs=DW_TOL)
    diff = math.sqrt(sum(float(((stats["factorwise"][k] - stats["delta"][k]) ** 2).sum()) for k in stats["delta"]))
    assert diff / total["delta"][1] == pytest.approx(rel, abs=1e-6)


def _synthetic_articles():
    articles = []
    for k, nw in enumerate([700, 300, 900]):
        words = [f"w{k}_{i}" for i in range(nw)]
        articles.append(words[0] + " " + " ".join(words[1:60]) + "\n" + " ".join(words[60:]))
    return articles


def test_chunk_chars_as_released():
    from xlt.merge import chunk_chars

    chunks = chunk_chars(_synthetic_articles(), 511, 1, boundary="glue")
    assert len(chunks.pairs) == 25
    prompt, completion = chunks.pairs[0]
    assert len(prompt) == 511 and prompt[-12:] == "w0_85 w0_86 " and completion == "w"
    assert chunks.pairs[1][0][:12] == "0_87 w0_88 w"
    assert len(chunks.dropped) == 164
    assert "w0_59w0_60" in "".join(p + c for p, c in chunks.pairs)


def test_chunk_words_inferred():
    from xlt.merge import chunk_words

    chunks = chunk_words(_synthetic_articles(), 511, 1, boundary="glue")
    assert len(chunks.pairs) == 3
    assert len(chunks.pairs[0][0].split()) == 511 and chunks.pairs[0][1] == "w0_511"
    assert chunks.pairs[1][0].startswith("w0_512 w0_513 ")
    assert chunks.pairs[1][1] == "w2_25"
    assert chunks.pairs[2][1] == "w2_537"
    assert len(chunks.dropped.split()) == 362
    assert "w0_699w1_0" in chunks.pairs[1][0].split()


def test_chunk_space_boundary_fuses_nothing():
    from xlt.merge import chunk_chars, chunk_words

    words = chunk_words(_synthetic_articles(), 511, 1)
    assert all("w" not in tok[1:] for p, c in words.pairs for tok in (p + " " + c).split())
    # 1900 words, nothing fused: 3 chunks and 364 words left over
    assert len(words.pairs) == 3 and len(words.dropped.split()) == 1900 - 3 * 512
    chars = chunk_chars(_synthetic_articles(), 511, 1)
    text = "".join(p + c for p, c in chars.pairs) + chars.dropped
    assert all("w" not in tok[1:] for tok in text.split())
