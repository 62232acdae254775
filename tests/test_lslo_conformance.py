"""LSLo conformance cases C1-C13 (numbers from the method's specification, not from this code)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from _lslo_helpers import (CAUSAL_INPUT_IDS, DECODER_INPUT_IDS, LANGS, SRC_IDS, TGT_IDS, TIERS,
                           paper_config, seed_lslo, seq2seq_inputs, summary, tiny_llama, tiny_m2m100)

ABS = 1e-4  # tolerance on the 6-decimal sums
LOGIT = 1e-5  # tolerance on single logits


pytestmark = pytest.mark.usefixtures("one_thread")


def _route(ids_src=SRC_IDS, ids_tgt=TGT_IDS):
    return dict(src_lang_ids=torch.tensor(ids_src), tgt_lang_ids=torch.tensor(ids_tgt))


def _check(out, sums=None, abs_sums=None, last4=None, argmax=None):
    s = summary(out)
    if sums is not None:
        assert s["sums"] == pytest.approx(sums, abs=ABS)
    if abs_sums is not None:
        assert s["abs"] == pytest.approx(abs_sums, abs=ABS)
    if last4 is not None:
        for got, want in zip(s["last4"], last4):
            if want is not None:
                assert got == pytest.approx(want, abs=LOGIT)
    if argmax is not None:
        assert s["argmax"] == argmax


@pytest.fixture(scope="module")
def base_m2m():
    return tiny_m2m100()


@pytest.fixture(scope="module")
def seeded(base_m2m):
    from xlt.lslo import apply_lslo

    lslo = apply_lslo(copy.deepcopy(base_m2m), paper_config())
    seed_lslo(lslo)
    return lslo


def _logits(model, **route):
    with torch.no_grad():
        return model(**seq2seq_inputs(), **route).logits


# ---------------------------------------------------------------------------------------------
# C1 schedule


def test_c1_schedule():
    from xlt.lslo import pruning_ratio

    expected = {1: None, 2: 0.0, 3: 0.2438999999999999, 4: 0.4391999999999999, 5: 0.5913000000000002,
                6: 0.7056, 7: 0.7875, 8: 0.8424, 9: 0.8757, 10: 0.8928, 11: 0.8991, 12: 0.9,
                13: 0.9, 14: 0.9, 15: 0.9}
    for epoch, want in expected.items():
        got = pruning_ratio(epoch, 2, 10, 0.9)
        if want is None:
            assert got is None
        else:
            assert got == pytest.approx(want, abs=1e-12)
            # independent form from the specification: 0.9 * (1 - (1 - k/10)^3), k = e - 2
            assert got == pytest.approx(0.9 * (1 - (1 - min(epoch - 2, 10) / 10) ** 3), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# C2 parameter counts of the README configuration (built on the meta device: no memory)


def test_c2_parameter_counts_readme_configuration():
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    from xlt.lslo import LSLoConfig, apply_lslo, pool_sizes

    config = M2M100Config(vocab_size=64, d_model=1024, encoder_layers=12, decoder_layers=12,
                          encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                          decoder_ffn_dim=4096, max_position_embeddings=64)
    with torch.device("meta"):
        model = M2M100ForConditionalGeneration(config)
    lslo = apply_lslo(model, LSLoConfig(languages=LANGS, tiers=TIERS, dim="model",
                                        encoder_directions="src*9,tgt*3", decoder_directions="tgt*12"))
    layers = lslo.lslo_layers
    assert len(layers) == 156
    assert {l.lora_a.numel() + l.lora_b.numel() for l in layers.values()} == {98_304}
    assert sum(p.numel() for p in lslo.parameters() if p.requires_grad) == 15_335_424
    per_language = [sum(sum(t.numel() for t in layer.pair(l)) for layer in layers.values()) for l in range(12)]
    assert per_language == [638_976] * 8 + [2_555_904] * 4
    sizes = pool_sizes(lslo, "language")
    assert [sizes[l] for l in LANGS] == [319_488] * 8 + [1_277_952] * 4
    assert round(0.9 * 319_488) == 287_539 and round(0.9 * 1_277_952) == 1_150_157
    from xlt.lslo import pruning_ratio

    p3 = pruning_ratio(3, 2, 10, 0.9)
    assert [round(p3 * sizes[l]) for l in ("en", "oc")] == [77_923, 311_692]
    layer_sizes = pool_sizes(lslo, "layer")
    assert {layer_sizes[f"encoder/{k}"] for k in range(12)} == {245_760}
    assert {layer_sizes[f"decoder/{k}"] for k in range(12)} == {393_216}
    assert round(0.9 * 245_760) == 221_184 and round(0.9 * 393_216) == 353_894
    # fc1's adapter writes only the first d_model of the 4096 hidden units (the reference's slice)
    fc1 = layers["model.encoder.layers.0.fc1"]
    assert (fc1.in_width, fc1.out_width, fc1.base.out_features) == (1024, 1024, 4096)


# ---------------------------------------------------------------------------------------------
# C3 A init


@pytest.mark.parametrize("rank,bound,observed", [(2, 0.70711, 0.70699), (8, 0.35355, None)])
def test_c3_a_init_bound(rank, bound, observed):
    # The specification observed 0.70699 (r=2) and 0.35351 (r=8) at seed 0; the r=2 value is
    # reproduced by kaiming_uniform_ on a fresh (1024, 2) tensor after manual_seed(0); the r=8
    # draw depends on an unstated RNG state, so only its closeness to the bound is checked.
    from xlt.lslo import LSLoLinear, LSLoRoute

    layer = LSLoLinear(torch.nn.Linear(1024, 1024), [rank], "src", LSLoRoute(), dim=1024)
    torch.manual_seed(0)
    layer.reset_parameters()
    assert 1 / math.sqrt(rank) == pytest.approx(bound, abs=1e-5)
    if observed is not None:
        assert layer.lora_a.abs().max().item() == pytest.approx(observed, abs=1e-5)
    assert layer.lora_a.abs().max().item() > 0.999 * bound
    assert layer.lora_a.abs().max().item() <= 1 / math.sqrt(rank)
    assert torch.count_nonzero(layer.lora_b) == 0


# ---------------------------------------------------------------------------------------------
# C4 - C8 tiny M2M-100


def test_c4_base_model(base_m2m):
    assert sum(p.numel() for p in base_m2m.parameters()) == 44_928
    _check(_logits(base_m2m), sums=[-3.652956, -3.559056, -1.038067],
           abs_sums=[114.618637, 115.55423, 115.363388],
           last4=[[-0.725838, -0.109324, -0.461796, 0.422759], [-0.05397, 0.088898, -0.30792, -0.04177],
                  [-0.254935, 0.896254, 0.034576, -0.016893]], argmax=[31, 31, 23])


def test_c5_c6_trainable_parameters_and_identity_at_init(base_m2m):
    from xlt.lslo import apply_lslo

    base_logits = _logits(base_m2m)
    lslo = apply_lslo(copy.deepcopy(base_m2m), paper_config())
    trainable = [n for n, p in lslo.named_parameters() if p.requires_grad]
    assert sum(p.numel() for p in lslo.parameters() if p.requires_grad) == 79_872
    assert len(lslo.lslo_layers) == 26
    assert all("lora_" in n for n in trainable)
    assert (_logits(lslo, **_route()) - base_logits).abs().max().item() == 0.0


def test_c7_seeded_forward_and_invariances(seeded):
    out = _logits(seeded, **_route())
    _check(out, sums=[-5.848617, -6.738787, -6.124354], abs_sums=[116.827919, 112.934891, 116.499275],
           last4=[[-0.441947, 0.158033, -0.559649, 0.295085], [0.289175, -0.042452, -0.283135, -0.179495],
                  [0.171377, 0.64105, -0.179049, -0.057379]], argmax=[31, 31, 23])
    inputs = seq2seq_inputs()
    for b in range(3):  # alone, unpadded
        n = int(inputs["attention_mask"][b].sum())
        with torch.no_grad():
            alone = seeded(input_ids=inputs["input_ids"][b:b + 1, :n],
                           attention_mask=inputs["attention_mask"][b:b + 1, :n],
                           decoder_input_ids=inputs["decoder_input_ids"][b:b + 1],
                           **_route(SRC_IDS[b:b + 1], TGT_IDS[b:b + 1])).logits
        assert (alone[0] - out[b]).abs().max().item() == 0.0
    changed_tgt = _logits(seeded, **_route(SRC_IDS, [2, 6, 11]))
    assert (changed_tgt[0] - out[0]).abs().max().item() == pytest.approx(1.4567, abs=1e-4)
    assert (changed_tgt[1] - out[1]).abs().max().item() == 0.0
    changed_src = _logits(seeded, **_route([1, 8, 5], TGT_IDS))
    assert (changed_src[0] - out[0]).abs().max().item() == pytest.approx(0.2075, abs=1e-4)


def test_c8_direction_string_matters(base_m2m):
    from xlt.lslo import apply_lslo

    lslo = apply_lslo(copy.deepcopy(base_m2m), paper_config(encoder_directions=["src", "src"]))
    seed_lslo(lslo)
    _check(_logits(lslo, **_route()), sums=[-4.13972, -7.738197, -7.38517],
           abs_sums=[113.525818, 112.257301, 115.060135],
           last4=[[-0.487973, 0.298759, -0.412663, 0.478173], None, None])


# ---------------------------------------------------------------------------------------------
# C9 - C10 pruning


def _zeroed_per_language(lslo):
    counts = []
    for l in range(12):
        counts.append(sum(int((layer.effective_b()[layer.offsets[l]:layer.offsets[l + 1]] == 0).sum())
                          for layer in lslo.lslo_layers.values()))
    return counts


def test_c9_language_specific_pruning(seeded):
    from torch.nn.utils import prune

    from xlt.lslo import make_pruning_permanent, pool_sizes, prune_step, pruning_ratio

    assert set(pool_sizes(seeded, "language").values()) == {1_664, 6_656}
    lslo = copy.deepcopy(seeded)
    counts = prune_step(lslo, pruning_ratio(3, 2, 10, 0.9), "language")
    assert [counts[l] for l in LANGS] == [406] * 8 + [1_623] * 4
    assert _zeroed_per_language(lslo) == [406] * 8 + [1_623] * 4
    _check(_logits(lslo, **_route()), sums=[-6.041759, -6.942455, -6.209201],
           abs_sums=[117.308289, 112.375267, 117.166695],
           last4=[[-0.413195, 0.149036, -0.596802, 0.300044], None, None])

    lslo = copy.deepcopy(seeded)
    counts = prune_step(lslo, 0.9, "language")
    assert [counts[l] for l in LANGS] == [1_498] * 8 + [5_990] * 4
    out = _logits(lslo, **_route())
    _check(out, sums=[1.105191, -4.368358, -7.519323], abs_sums=[118.636139, 110.602417, 117.712692],
           last4=[[-0.739504, 0.105233, -0.42746, 0.572173], [0.044879, 0.013025, -0.414291, -0.108602],
                  [-0.067659, 0.672312, 0.003831, -0.064899]])
    # language 0's mask equals torch's own global L1 pruner over the same 26 tensors
    holders = []
    for _, layer in sorted(seeded.lslo_layers.items()):
        holder = torch.nn.Linear(1, 1)
        holder.weight = torch.nn.Parameter(layer.pair(0)[1].detach().clone())
        holders.append(holder)
    prune.global_unstructured([(h, "weight") for h in holders], pruning_method=prune.L1Unstructured,
                              amount=0.9)
    ours = [layer.lora_b_mask[layer.offsets[0]:layer.offsets[1]] for _, layer in sorted(lslo.lslo_layers.items())]
    for holder, mask in zip(holders, ours):
        assert torch.equal(holder.weight_mask.bool(), mask)
    # permanent: zeros in B, no mask, same logits
    make_pruning_permanent(lslo)
    assert all(layer.lora_b_mask is None for layer in lslo.lslo_layers.values())
    assert torch.equal(_logits(lslo, **_route()), out)


def test_c10_cross_language_pruning(seeded):
    from xlt.lslo import pool_sizes, prune_step

    sizes = pool_sizes(seeded, "layer")
    assert sizes == {"decoder/0": 12_288, "decoder/1": 12_288, "encoder/0": 7_680, "encoder/1": 7_680}
    lslo = copy.deepcopy(seeded)
    counts = prune_step(lslo, 0.9, "layer")
    assert counts == {"decoder/0": 11_059, "decoder/1": 11_059, "encoder/0": 6_912, "encoder/1": 6_912}
    assert _zeroed_per_language(lslo) == [1504, 1495, 1476, 1501, 1497, 1489, 1503, 1511,
                                          6005, 5977, 5969, 6015]
    _check(_logits(lslo, **_route()), sums=[1.146346, -4.585728, -6.887275],
           abs_sums=[118.417946, 110.318268, 117.544769],
           last4=[[-0.732083, 0.107755, -0.432987, 0.569341], None, None])


# ---------------------------------------------------------------------------------------------
# C11 decoding


def test_c11_greedy_and_beam_decoding(seeded):
    inputs = seq2seq_inputs()
    prefix = torch.tensor([row[:2] for row in DECODER_INPUT_IDS])
    greedy = [[2, 51, 31, 31, 31, 31, 31, 31], [2, 56, 56, 17, 17, 17, 17, 17], [2, 61, 61, 61, 61, 61, 61, 61]]
    seq = prefix
    for _ in range(6):  # full recomputation at every step
        with torch.no_grad():
            logits = seeded(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            decoder_input_ids=seq, **_route()).logits
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert seq.tolist() == greedy
    common = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                  decoder_input_ids=prefix, max_new_tokens=6, eos_token_id=None, min_length=0,
                  no_repeat_ngram_size=0, forced_bos_token_id=None, forced_eos_token_id=None,
                  do_sample=False, **_route())
    with torch.no_grad():
        assert seeded.generate(num_beams=1, **common).tolist() == greedy
        beams = seeded.generate(num_beams=3, length_penalty=1.0, early_stopping=False, **common)
    assert beams.tolist() == [[2, 51, 31, 31, 31, 31, 31, 31], [2, 56, 17, 17, 17, 17, 17, 17],
                              [2, 61, 39, 39, 39, 31, 31, 31]]


# ---------------------------------------------------------------------------------------------
# C12 PEFT equivalence (square, single-direction case)


def test_c12_peft_mixed_batch_equivalence():
    from peft import LoraConfig, get_peft_model

    from xlt.lslo import apply_lslo

    targets = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
               "encoder_attn.q_proj", "encoder_attn.k_proj", "encoder_attn.v_proj"]
    lslo = apply_lslo(tiny_m2m100(), paper_config(target_modules=targets, encoder_directions=["tgt", "tgt"]))
    assert len(lslo.lslo_layers) == 18
    seed_lslo(lslo)
    ours = _logits(lslo, **_route())
    _check(ours, sums=[-4.170243, -7.742614, -1.892044], abs_sums=[110.032623, 112.350616, 113.997238])

    ranks = lslo.lslo_config.rank_table()
    peft_model = None
    for lang in LANGS:
        cfg = LoraConfig(r=ranks[lang], lora_alpha=ranks[lang], lora_dropout=0.0,
                         target_modules=r".*(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj)")
        if peft_model is None:
            peft_model = get_peft_model(tiny_m2m100(), cfg, adapter_name=lang)
        else:
            peft_model.add_adapter(lang, cfg)
    modules = dict(peft_model.base_model.model.named_modules())
    with torch.no_grad():
        for path, layer in lslo.lslo_layers.items():
            target = modules[path]
            for l, lang in enumerate(LANGS):
                a, b = layer.pair(l)
                target.lora_A[lang].weight.copy_(a.t())
                target.lora_B[lang].weight.copy_(b.t())
    peft_model.eval()
    with torch.no_grad():
        theirs = peft_model(**seq2seq_inputs(), adapter_names=[LANGS[i] for i in TGT_IDS]).logits
    assert (theirs - ours).abs().max().item() < 1e-5


# ---------------------------------------------------------------------------------------------
# C13 decoder-only extension


def test_c13_decoder_only():
    from xlt.lslo import CAUSAL_TARGET_MODULES, LSLoConfig, apply_lslo

    base = tiny_llama()
    input_ids = torch.tensor(CAUSAL_INPUT_IDS)
    with torch.no_grad():
        base_logits = base(input_ids=input_ids).logits
    assert base_logits.sum(dim=(1, 2)).tolist() == pytest.approx([-59.235764, 4.737151, 26.316481], abs=ABS)
    lslo = apply_lslo(base, LSLoConfig(languages=LANGS, tiers=TIERS, target_modules=CAUSAL_TARGET_MODULES,
                                       decoder_directions=["src", "tgt"], dim=None))
    assert sum(p.numel() for p in lslo.parameters() if p.requires_grad) == 43_008
    with torch.no_grad():
        assert (lslo(input_ids=input_ids, **_route()).logits - base_logits).abs().max().item() == 0.0
    assert sorted(lslo.lslo_layers)[:6] == [
        "model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj",
        "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    seed_lslo(lslo)
    with torch.no_grad():
        out = lslo(input_ids=input_ids, **_route()).logits
    _check(out, sums=[-17.995296, 28.286993, 23.268066], abs_sums=[241.206635, 221.309113, 205.180725],
           last4=[[0.432347, 0.026536, -0.143194, -0.583222], [-0.265165, 0.748245, 0.315524, 0.184942],
                  [0.090993, 0.108564, -0.525595, -0.723298]])
