"""Numeric conformance cases of the two papers' reference implementations (pooling, layer
states, losses). Expected values are the ones recomputed in the method descriptions, not our
own output; tolerances as stated there (fp32 1e-6; six printed decimals -> 1e-5)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from xlt.align import alignment_loss, info_nce, layer_states, pool
from xlt.align.data import common_prefix_length, pack_documents

FP32 = 1e-6


def lengths_to_mask(lengths, T):
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()


def base_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    h0 = torch.randn(4, 6, 8, generator=g)
    h1 = torch.randn(4, 5, 8, generator=g)
    return (h0.to(dtype), lengths_to_mask([6, 4, 2, 5], 6), h1.to(dtype), lengths_to_mask([5, 5, 3, 1], 5))


def mid_loss(h0, m0, h1, m1, tau=0.1, pooling="mean", **kw):
    return alignment_loss(h0, m0, h1, m1, temperature=tau, pooling=pooling, **kw)


# ---- mid-align C1-C7 ------------------------------------------------------------------------

def test_mid_c1_mean_pooling_losses():
    h0, m0, h1, m1 = base_inputs(torch.float64)
    assert mid_loss(h0, m0, h1, m1).item() == pytest.approx(2.309266362853348, abs=1e-12)
    assert mid_loss(h0, m0, h1, m1, tau=1.0).item() == pytest.approx(1.275000410729392, abs=1e-12)
    assert mid_loss(h0, m0, h1, m1, symmetric=True).item() == pytest.approx(2.355288595546406, abs=1e-12)
    assert mid_loss(h1, m1, h0, m0).item() == pytest.approx(2.401310828239464, abs=1e-12)
    perm = torch.tensor([2, 0, 3, 1])
    assert mid_loss(h0[perm], m0[perm], h1[perm], m1[perm]).item() == pytest.approx(2.309266362853348, abs=1e-12)
    f0, fm0, f1, fm1 = base_inputs()
    assert mid_loss(f0, fm0, f1, fm1).item() == pytest.approx(2.3092663288116455, abs=FP32)
    assert mid_loss(f0, fm0, f1, fm1, tau=1.0).item() == pytest.approx(1.2750004529953003, abs=FP32)
    z0, z1 = pool(h0, m0, "mean"), pool(h1, m1, "mean")
    assert z0[0, :3].tolist() == pytest.approx([-0.3536536507, -0.6455144957, -0.0482810314], abs=1e-9)
    cos = torch.nn.functional.cosine_similarity(z0[:, None, :], z1[None, :, :], dim=-1)
    expected = [[0.0075307254, -0.0171182375, -0.5388069758, 0.2643801549],
                [0.4235914604, 0.119489069, 0.3939735575, -0.5387403162],
                [0.0308303782, 0.1275281392, 0.3614203957, -0.7003761952],
                [-0.3772920087, 0.3349357657, -0.4390567461, 0.0622682648]]
    assert torch.allclose(cos, torch.tensor(expected, dtype=torch.float64), atol=1e-9)


def test_mid_c2_first_position_pooling():
    h0, m0, h1, m1 = base_inputs(torch.float64)
    assert mid_loss(h0, m0, h1, m1, pooling="first").item() == pytest.approx(4.833666090264247, abs=1e-12)
    f0, fm0, f1, fm1 = base_inputs()
    assert mid_loss(f0, fm0, f1, fm1, pooling="first").item() == pytest.approx(4.83366584777832, abs=FP32)


def test_mid_c3_single_pair_is_zero_with_zero_gradient_and_warns_once():
    import xlt.align.losses as losses

    losses._warned_single_pair = False
    h0, m0, h1, m1 = base_inputs(torch.float64)
    h0, h1 = h0[:1].clone().requires_grad_(), h1[:1].clone().requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = mid_loss(h0, m0[:1], h1, m1[:1])
        mid_loss(h0, m0[:1], h1, m1[:1])
    assert abs(loss.item()) == 0.0
    loss.backward()
    assert h0.grad.abs().max().item() == 0.0 and h1.grad.abs().max().item() == 0.0
    messages = [w for w in caught if "one pair" in str(w.message)]
    assert len(messages) == 1


def test_mid_c4_padding_is_ignored_and_both_sides_get_gradient():
    h0, m0, h1, m1 = base_inputs(torch.float64)
    g0 = torch.where(m0[..., None].bool(), h0, torch.full_like(h0, 1e3)).requires_grad_()
    g1 = torch.where(m1[..., None].bool(), h1, torch.full_like(h1, -7.0)).requires_grad_()
    loss = mid_loss(g0, m0, g1, m1)
    assert loss.item() == pytest.approx(2.309266362853348, abs=1e-12)
    loss.backward()
    assert g0.grad[~m0.bool()].abs().max().item() == 0.0
    assert g1.grad[~m1.bool()].abs().max().item() == 0.0
    assert g0.grad.norm().item() == pytest.approx(2.0474047663849584, abs=1e-9)
    assert g1.grad.norm().item() == pytest.approx(2.184087799603692, abs=1e-9)


def test_mid_c5_detached_candidates():
    h0, m0, h1, m1 = base_inputs(torch.float64)
    h0.requires_grad_()
    h1.requires_grad_()
    loss = mid_loss(h0, m0, h1, m1, detach_candidates=True)
    assert loss.item() == pytest.approx(2.3092663628533474, abs=1e-12)
    loss.backward()
    assert h0.grad.norm().item() == pytest.approx(2.0474047663849584, abs=1e-9)
    assert h1.grad is None or h1.grad.abs().max().item() == 0.0


def test_mid_c6_degenerate_alignment_and_false_negative_floor():
    h0, m0, _, _ = base_inputs(torch.float64)
    assert mid_loss(h0, m0, h0, m0).item() == pytest.approx(0.00046532256316960633, abs=1e-12)
    assert mid_loss(h0, m0, h0, m0, tau=1.0).item() == pytest.approx(0.7270793538185163, abs=1e-12)
    d, dm = h0.clone(), m0.clone()
    d[1], dm[1] = d[0], dm[0]
    assert mid_loss(d, dm, d, dm, tau=0.01).item() == pytest.approx(2 * math.log(2) / 4, abs=1e-9)


def test_mid_c7_correlated_pairs_realistic_width():
    g = torch.Generator().manual_seed(99)
    S = torch.randn(32, 1, 1024, generator=g)
    off = torch.randn(1, 1, 1024, generator=g)
    X0 = S + 2 * torch.randn(32, 24, 1024, generator=g) + 2 * off
    X1 = S + 2 * torch.randn(32, 20, 1024, generator=g) + 2 * off
    m0 = lengths_to_mask([24 - (i % 7) for i in range(32)], 24)
    m1 = lengths_to_mask([20 - (i % 5) for i in range(32)], 20)
    d0, d1 = X0.double(), X1.double()
    assert mid_loss(d0, m0, d1, m1).item() == pytest.approx(1.7956434901818903, abs=1e-9)
    assert mid_loss(d0, m0, d1, m1, tau=1.0).item() == pytest.approx(3.2896676106092047, abs=1e-9)
    assert mid_loss(d0, m0, d1, m1, tau=1.5).item() == pytest.approx(3.3482270102581517, abs=1e-9)
    assert mid_loss(X0, m0, X1, m1).item() == pytest.approx(1.79564368724823, abs=1e-5)
    # bf16 inputs: we pool in fp32, the reference in bf16 (1.796875); within the stated 0.03 band
    assert mid_loss(X0.bfloat16(), m0, X1.bfloat16(), m1).item() == pytest.approx(1.796875, abs=0.03)


# ---- mid-align C8-C10: end-to-end tiny Llama / Qwen2 ----------------------------------------

def _reference_init(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            r = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * r if "norm" in name else 0.2 * r)


def _tiny_fork_model(arch):
    import transformers as tf

    cls = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM), "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM)}[arch]
    config = cls[0](vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                    rms_norm_eps=1e-5, rope_theta=10000, tie_word_embeddings=False, pad_token_id=0,
                    bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    torch.manual_seed(0)
    model = cls[1](config)
    _reference_init(model)
    model.train()
    return model


def _pad_rows(rows, T):
    return torch.tensor([r + [0] * (T - len(r)) for r in rows])


P0 = [[1, 33, 28, 34, 3, 60, 32, 0], [1, 7, 45, 43, 23, 0, 0, 0], [1, 32, 63, 0, 0, 0, 0, 0], [1, 10, 19, 49, 59, 39, 0, 0]]
P1 = [[1, 53, 8, 10, 0, 0, 0, 0], [1, 24, 31, 13, 41, 7, 0, 0], [1, 22, 0, 0, 0, 0, 0, 0], [1, 62, 52, 13, 36, 0, 0, 0]]
TASK = [[1, 52, 7, 23, 55, 18, 24, 33, 63, 8], [1, 17, 29, 36, 4, 27, 56, 5], [1, 54, 46, 26, 34, 53, 6, 32, 52], [1, 17, 49, 31, 29, 63]]


def _c8_batch():
    ids0, ids1 = torch.tensor(P0), torch.tensor(P1)
    m0, m1 = lengths_to_mask([7, 5, 3, 6], 8), lengths_to_mask([4, 6, 2, 5], 8)
    ids = _pad_rows(TASK, 16)
    mask = lengths_to_mask([len(r) for r in TASK], 16)
    labels = ids.clone()
    labels[mask == 0] = -100
    for i, p in enumerate([6, 5, 6, 3]):
        labels[i, :p] = -100
    return ids0, m0, ids1, m1, ids, mask, labels


def _align(model, ids0, m0, ids1, m1, layer=2, tau=0.1, pooling="mean"):
    h0 = layer_states(model, ids0, m0, layer)
    h1 = layer_states(model, ids1, m1, layer)
    return alignment_loss(h0, m0, h1, m1, temperature=tau, pooling=pooling)


@pytest.mark.parametrize("arch,expected", [
    ("llama", dict(align=2.1357903480529785, ce=4.633908748626709, swapped=1.7078663110733032,
                   q=[2.6302692890167236, 0.3023498058319092], embed=6.075155258178711)),
    ("qwen2", dict(align=1.8069756031036377, ce=5.271575450897217, swapped=1.7857366800308228,
                   q=[1.164477825164795, 0.317976176738739], embed=3.579503297805786)),
])
def test_mid_c8_c9_tiny_models_end_to_end(arch, expected):
    model = _tiny_fork_model(arch)
    ids0, m0, ids1, m1, ids, mask, labels = _c8_batch()
    loss = _align(model, ids0, m0, ids1, m1)
    assert loss.item() == pytest.approx(expected["align"], abs=FP32)
    loss.backward()
    layers = model.model.layers
    for k in (0, 1):
        assert layers[k].self_attn.q_proj.weight.grad.norm().item() == pytest.approx(expected["q"][k], abs=1e-5)
    for k in (2, 3):
        assert layers[k].self_attn.q_proj.weight.grad is None
    assert model.model.norm.weight.grad is None and model.lm_head.weight.grad is None
    assert model.model.embed_tokens.weight.grad.norm().item() == pytest.approx(expected["embed"], abs=1e-5)
    model.zero_grad()
    with torch.no_grad():
        assert _align(model, ids1, m1, ids0, m0).item() == pytest.approx(expected["swapped"], abs=FP32)
        ce = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert ce.item() == pytest.approx(expected["ce"], abs=FP32)
        # one pass over both sides (what the trainer does) gives the same value
        both = layer_states(model, torch.cat([ids0, ids1]), torch.cat([m0, m1]), 2)
        joint = alignment_loss(both[:4], m0, both[4:], m1, temperature=0.1)
        assert joint.item() == pytest.approx(expected["align"], abs=FP32)


def test_mid_c8_bos_pooling_is_degenerate():
    model = _tiny_fork_model("llama")
    ids0, m0, ids1, m1, *_ = _c8_batch()
    with torch.no_grad():
        loss = 0.5 * _align(model, ids0, m0, ids1, m1, tau=1.0, pooling="first")
    assert loss.item() == pytest.approx(0.5 * math.log(4), abs=FP32)


def test_mid_c10_top_layer_is_pre_norm():
    model = _tiny_fork_model("llama")
    ids0, m0, ids1, m1, *_ = _c8_batch()
    with torch.no_grad():
        assert _align(model, ids0, m0, ids1, m1, layer=4).item() == pytest.approx(2.6114742755889893, abs=FP32)
        out0 = model(input_ids=ids0, attention_mask=m0, output_hidden_states=True).hidden_states[4]
        out1 = model(input_ids=ids1, attention_mask=m1, output_hidden_states=True).hidden_states[4]
        normed = alignment_loss(out0, m0, out1, m1, temperature=0.1)
    assert normed.item() == pytest.approx(2.60825514793396, abs=FP32)


def test_mid_c11_collation_shapes_and_right_padding():
    from xlt.align.data import AlignCollator

    rows = [{"input_ids": [5] * n, "labels": [5] * n, "anchor_input_ids": [6] * a, "candidate_input_ids": [6] * c}
            for n, a, c in zip([11, 5, 7], [3, 2, 1], [20, 2, 4])]
    batch = AlignCollator(0, pad_to_multiple_of=8)(rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, 16)
    assert batch["anchor_input_ids"].shape == (3, 8) and batch["candidate_input_ids"].shape == (3, 24)
    assert batch["candidate_input_ids"][1].tolist() == [6, 6] + [0] * 22
    assert batch["labels"][1].tolist() == [5] * 5 + [-100] * 11
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 11


def test_mid_c12_inverse_sqrt_schedule_and_alternation():
    from transformers import get_scheduler

    from xlt.align.config import MidAlignConfig
    from xlt.align.trainer import AlignTrainer

    for max_steps, steps in ((1000, [0, 15, 30, 120, 1000]), (2000, [0, 30, 60, 240, 2000])):
        cfg = MidAlignConfig(output_dir="unused", max_steps=max_steps)
        warmup = cfg.get_warmup_steps(max_steps)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
        sched = get_scheduler(cfg.lr_scheduler_type, opt, num_warmup_steps=warmup, num_training_steps=max_steps)
        lrs = {}
        for s in range(max_steps + 1):
            lrs[s] = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
        got = [lrs[s] for s in steps]
        assert got == pytest.approx([0, 2.5e-4, 5e-4, 2.5e-4, 8.660254e-5], rel=1e-6, abs=1e-12)
    modes = [AlignTrainer._objective(None, k) for k in range(8)]
    assert modes == ["task", "alignment"] * 4


# ---- AFP C1-C4, C7 --------------------------------------------------------------------------

def test_afp_c1_info_nce():
    torch.manual_seed(0)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    assert z1[0, :3].tolist() == pytest.approx([-1.12584, -1.15236, -0.25058], abs=1e-5)
    assert info_nce(z1, z2, 0.05).item() == pytest.approx(8.200145, abs=1e-5)
    assert info_nce(z1, z2, 1.0).item() == pytest.approx(1.484865, abs=1e-5)
    assert info_nce(z1[:2], z2[:2], 0.05).item() == pytest.approx(6.347436, abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert info_nce(z1[:1], z2[:1], 0.05).item() == 0.0
    assert info_nce(z1, z2, 0.05, symmetric=True).item() == pytest.approx(7.000326, abs=1e-5)
    torch.manual_seed(1)
    z2b = z1 + 0.3 * torch.randn(4, 8)
    assert info_nce(z1, z2b, 0.05).item() == pytest.approx(0.005609, abs=1e-5)


def test_afp_c2_pooling_right_and_left_padding():
    torch.manual_seed(0)
    h = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.allclose(pool(h, mask, "last"), torch.tensor(
        [[-0.316013, -2.115219, 0.322275], [0.052507, 0.522860, 2.302205]]), atol=1e-5)
    assert torch.allclose(pool(h, mask, "mean"), torch.tensor(
        [[-0.625244, -0.806290, 0.254568], [-0.108335, 0.021814, 0.033557]]), atol=1e-5)
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    # the reference's sum(mask) - 1 would pick position 2; the last real token is position 4
    assert torch.equal(pool(h, left, "last")[0], h[0, 4])
    assert torch.equal(pool(h, left, "first")[0], h[0, 2])


def test_afp_c3_prompt_length_in_tokens():
    assert common_prefix_length([2, 5, 6, 7, 8], [2, 5, 6, 9]) == 3
    assert common_prefix_length([2, 5, 6, 7, 8], [2, 5, 6]) == 3


def test_afp_c4_packing_and_labels():
    docs, prompts = [[2, 10, 11, 12, 13], [2, 20, 21, 22]], [3, 2]
    pack = lambda block, d=docs, p=prompts: [t.tolist() for t in pack_documents(d, p, block, bos_token_id=0, eos_token_id=2)]
    assert pack(512) == [[[2, 10, 11, 12, 13, 2, 20, 21, 22]], [[2, -100, -100, 12, 13, 2, -100, 21, 22]]]
    assert pack(4) == [[[2, 10, 11, 12], [13, 2, 20, 21]], [[2, -100, -100, 12], [13, 2, -100, 21]]]
    assert pack(3) == [[[2, 10, 11], [12, 13, 2], [20, 21, 22]], [[2, -100, 11], [12, 13, 2], [-100, 21, 22]]]
    assert pack(4, [[2, 10, 11, 12, 13], [2, 20, 21]], [5, 3])[1] == [[2, -100, -100, 12], [-100, 2, -100, -100]]


def test_afp_c7_tiny_xglm_end_to_end():
    import transformers as tf

    config = tf.XGLMConfig(vocab_size=64, d_model=16, num_layers=2, attention_heads=2, ffn_dim=32,
                           max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
                           activation_dropout=0.0, layerdrop=0.0, scale_embedding=True, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2)
    model = tf.XGLMForCausalLM(config)
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in sorted(model.model.named_parameters(), key=lambda kv: kv[0]):
            if "layer_norm" in name or "layernorm" in name:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.eval()
    flat = [[2, 10, 11, 12], [2, 30, 31], [2, 20, 21], [2, 40, 41, 42, 43]]
    ids = torch.tensor([r + [1] * (5 - len(r)) for r in flat])
    mask = torch.tensor([[1] * len(r) + [0] * (5 - len(r)) for r in flat])
    hidden = layer_states(model, ids, mask, 1)
    a, c = [0, 2], [1, 3]
    cl = alignment_loss(hidden[a], mask[a], hidden[c], mask[c], temperature=0.05, pooling="last")
    avg = alignment_loss(hidden[a], mask[a], hidden[c], mask[c], temperature=0.05, pooling="mean")
    assert cl.item() == pytest.approx(5.170894, abs=1e-5)
    assert avg.item() == pytest.approx(0.968519, abs=1e-5)
    row, labels = pack_documents([[2, 5, 6, 7, 8, 9], [2, 15, 16, 17]], [3, 2], 512, bos_token_id=0, eos_token_id=2)
    assert labels.tolist() == [[2, -100, -100, 7, 8, 9, 2, -100, 16, 17]]
    clm = model(input_ids=row, labels=labels).loss
    assert clm.item() == pytest.approx(4.920310, abs=1e-5)
    assert (1.0 * cl + 1.5 * clm).item() == pytest.approx(12.551359, abs=1e-5)
    model.zero_grad()
    cl.backward()
    block1 = sum(p.grad.abs().sum().item() for p in model.model.layers[0].parameters() if p.grad is not None)
    assert block1 == pytest.approx(570.676, abs=1e-2)
    assert all(p.grad is None or p.grad.abs().sum().item() == 0 for p in model.model.layers[1].parameters())
    assert model.model.layer_norm.weight.grad is None
