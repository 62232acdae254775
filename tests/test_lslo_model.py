"""LSLo model behaviour beyond the conformance cases: routing, errors, files, folding, pruning."""

from __future__ import annotations

import copy

import pytest
import torch

from _lslo_helpers import LANGS, SRC_IDS, TGT_IDS, paper_config, seed_lslo, seq2seq_inputs, tiny_llama, tiny_m2m100


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def seeded():
    from xlt.lslo import apply_lslo

    lslo = apply_lslo(tiny_m2m100(), paper_config())
    seed_lslo(lslo)
    return lslo


def _route(src=SRC_IDS, tgt=TGT_IDS):
    return dict(src_lang_ids=torch.tensor(src), tgt_lang_ids=torch.tensor(tgt))


def _logits(model, **kw):
    with torch.no_grad():
        return model(**seq2seq_inputs(), **kw).logits


# ---------------------------------------------------------------------------------------------
# routing


def test_language_codes_are_accepted_as_ids(seeded):
    by_index = _logits(seeded, **_route())
    by_code = _logits(seeded, src_lang_ids=[LANGS[i] for i in SRC_IDS], tgt_lang_ids=[LANGS[i] for i in TGT_IDS])
    assert torch.equal(by_index, by_code)


def test_gradient_reaches_only_the_routed_subspaces(seeded):
    lslo = copy.deepcopy(seeded)
    lslo.train()
    out = lslo(**seq2seq_inputs(), **_route([0, 0, 0], [1, 1, 1]))
    out.logits.sum().backward()
    enc0 = lslo.lslo_layers["model.encoder.layers.0.fc1"]   # routed by src -> language 0
    dec0 = lslo.lslo_layers["model.decoder.layers.0.fc1"]   # routed by tgt -> language 1
    for layer, used in ((enc0, 0), (dec0, 1)):
        for l in range(12):
            lo, hi = layer.offsets[l], layer.offsets[l + 1]
            grad_a, grad_b = layer.lora_a.grad[:, lo:hi], layer.lora_b.grad[lo:hi]
            if l == used:
                assert grad_a.abs().sum() > 0 and grad_b.abs().sum() > 0
            else:
                assert grad_a.abs().sum() == 0 and grad_b.abs().sum() == 0
    assert all(p.grad is None for n, p in lslo.named_parameters() if "lora_" not in n)


def test_missing_ids_and_bad_ids_are_clear_errors(seeded):
    from xlt.errors import ConfigError, ModelError

    with pytest.raises(ModelError, match="without src_lang_ids"):
        _logits(seeded, tgt_lang_ids=torch.tensor(TGT_IDS))
    with pytest.raises(ConfigError, match="language 'xx' is not in the adapter's languages"):
        _logits(seeded, src_lang_ids=["en", "xx", "fr"], tgt_lang_ids=torch.tensor(TGT_IDS))
    with pytest.raises(ConfigError, match="language id 12 is outside"):
        _logits(seeded, **_route([0, 12, 1], TGT_IDS))
    with pytest.raises(ModelError, match="got 2 src_lang_ids for a batch of 3"):
        _logits(seeded, **_route([0, 1], TGT_IDS))


def test_beam_search_of_a_mixed_batch_equals_each_example_alone(seeded):
    inputs = seq2seq_inputs()
    kw = dict(max_new_tokens=5, num_beams=3, eos_token_id=None, forced_bos_token_id=None, do_sample=False)
    with torch.no_grad():
        batch = seeded.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                **_route(), **kw)
        for b in range(3):
            n = int(inputs["attention_mask"][b].sum())
            alone = seeded.generate(input_ids=inputs["input_ids"][b:b + 1, :n], **_route(SRC_IDS[b:b + 1],
                                    TGT_IDS[b:b + 1]), **kw)
            assert alone[0].tolist() == batch[b].tolist()


def test_decoder_only_mixed_batch_and_generate():
    from xlt.lslo import LSLoConfig, apply_lslo

    lslo = apply_lslo(tiny_llama(), LSLoConfig(languages=LANGS, decoder_directions=["src", "tgt"]))
    seed_lslo(lslo)
    ids = torch.tensor([[50, 5, 9, 17, 2, 51], [58, 7, 11, 12, 2, 56]])
    with torch.no_grad():
        batch = lslo(input_ids=ids, src_lang_ids=torch.tensor([0, 8]), tgt_lang_ids=torch.tensor([1, 6])).logits
        alone = lslo(input_ids=ids[1:], src_lang_ids=torch.tensor([8]), tgt_lang_ids=torch.tensor([6])).logits
        assert (batch[1] - alone[0]).abs().max().item() < 1e-6
        gen = lslo.generate(input_ids=ids, src_lang_ids=torch.tensor([0, 8]), tgt_lang_ids=torch.tensor([1, 6]),
                            max_new_tokens=3, num_beams=2, do_sample=False, eos_token_id=None)
        gen1 = lslo.generate(input_ids=ids[1:], src_lang_ids=torch.tensor([8]), tgt_lang_ids=torch.tensor([6]),
                             max_new_tokens=3, num_beams=2, do_sample=False, eos_token_id=None)
    assert gen[1].tolist() == gen1[0].tolist()


# ---------------------------------------------------------------------------------------------
# bad configuration


def test_direction_list_length_and_missing_target_module_are_clear_errors():
    from xlt.errors import ConfigError, ModelError
    from xlt.lslo import LSLoConfig, apply_lslo

    with pytest.raises(ConfigError, match="encoder_directions has 3 entries but the model has 2 encoder layers"):
        apply_lslo(tiny_m2m100(), paper_config(encoder_directions="src*3"))
    with pytest.raises(ConfigError, match="'sideways' is not a direction"):
        paper_config(decoder_directions=["tgt", "sideways"])
    with pytest.raises(ModelError, match="target module 'mlp.gate_proj' not found in M2M100ForConditionalGeneration"):
        apply_lslo(tiny_m2m100(), paper_config(target_modules=["fc1", "mlp.gate_proj"]))
    with pytest.raises(ConfigError, match="decoder-only"):
        apply_lslo(tiny_llama(), LSLoConfig(languages=LANGS, encoder_directions=["src", "src"]))
    with pytest.raises(ConfigError, match="tiers names language 'xx'"):
        LSLoConfig(languages=["en", "fr"], tiers={"xx": "low"})
    with pytest.raises(ModelError, match="does not fit"):  # GQA k_proj: 32 -> 16 features
        apply_lslo(tiny_llama(), LSLoConfig(languages=LANGS, dim="model"))


# ---------------------------------------------------------------------------------------------
# files


def test_save_load_roundtrip_and_refuse_another_base(seeded, tmp_path):
    from xlt.errors import ModelError
    from xlt.lslo import load_lslo

    seeded.save_pretrained(tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["lslo_config.json", "lslo_model.safetensors"]
    loaded = load_lslo(tiny_m2m100(), tmp_path / "adapter")
    assert torch.equal(_logits(loaded, **_route()), _logits(seeded, **_route()))

    other = tiny_m2m100()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    with pytest.raises(ModelError, match="saved for another base model .*different weights"):
        load_lslo(other, tmp_path / "adapter")
    with pytest.raises(ModelError, match="saved for another base model"):
        load_lslo(tiny_llama(), tmp_path / "adapter")


def test_pruned_adapter_saves_zeros_without_masks(seeded, tmp_path):
    from safetensors.torch import load_file

    from xlt.lslo import prune_step

    lslo = copy.deepcopy(seeded)
    prune_step(lslo, 0.5, "language")
    assert all(layer.lora_b_mask is not None for layer in lslo.lslo_layers.values())
    masked_logits = _logits(lslo, **_route())
    lslo.save_pretrained(tmp_path / "pruned")
    state = load_file(str(tmp_path / "pruned" / "lslo_model.safetensors"))
    zeros = sum(int((t == 0).sum()) for k, t in state.items() if ".lora_b." in k)
    assert zeros == 8 * 832 + 4 * 3328  # round(0.5 * 1664), round(0.5 * 6656)
    assert not any("mask" in k for k in state)
    from xlt.lslo import load_lslo

    assert torch.equal(_logits(load_lslo(tiny_m2m100(), tmp_path / "pruned"), **_route()), masked_logits)


# ---------------------------------------------------------------------------------------------
# folding one direction


@pytest.mark.parametrize("dim", [32, None])
def test_merged_direction_equals_the_lslo_model(dim):
    from xlt.lslo import apply_lslo, merge_direction

    lslo = apply_lslo(tiny_m2m100(), paper_config(dim=dim))
    seed_lslo(lslo)
    inputs = seq2seq_inputs()
    ids = dict(src_lang_ids=["oc"] * 3, tgt_lang_ids=["ja"] * 3)
    want = _logits(lslo, **ids)
    merged = merge_direction(lslo, "oc", "ja")
    assert type(merged).__name__ == "M2M100ForConditionalGeneration"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        got = merged(**inputs).logits
    assert (got - want).abs().max().item() < 1e-5
    # the LSLo model itself is untouched by a non-inplace merge
    assert torch.equal(_logits(lslo, **ids), want)


# ---------------------------------------------------------------------------------------------
# pruning lifecycle and report


def test_pruning_schedule_masks_gradients_then_bakes(seeded):
    from xlt.lslo import PruningSchedule, pruning_report

    lslo = copy.deepcopy(seeded)
    schedule = PruningSchedule(t1=2, t2=2, target=0.5, pool="layer")
    assert schedule.begin_epoch(lslo, 1) is None
    assert all(layer.lora_b_mask is None for layer in lslo.lslo_layers.values())
    assert schedule.begin_epoch(lslo, 3) == pytest.approx(0.5 - 0.5 * 0.5 ** 3)
    lslo.train()
    lslo(**seq2seq_inputs(), **_route()).logits.sum().backward()
    for layer in lslo.lslo_layers.values():
        assert torch.all(layer.lora_b.grad[~layer.lora_b_mask] == 0)
    schedule.end_epoch(lslo)
    report = pruning_report(lslo)
    total_b = report["b_parameters"]
    assert total_b == 26 * 32 * 48
    # per-layer pools: encoder layer 7,680 entries, decoder layer 12,288 (C10)
    expected = sum(n - round(0.4375 * n) for n in (7680, 7680, 12288, 12288))
    assert report["b_surviving"] == expected
    assert report["layers"] == ["encoder.0", "encoder.1", "decoder.0", "decoder.1"]
    assert sum(map(sum, report["surviving"])) == expected
    figure = __import__("xlt.lslo", fromlist=["plot_pruning_report"]).plot_pruning_report(report)
    assert figure.axes


# ---------------------------------------------------------------------------------------------
# shared baseline


def test_shared_baseline_has_the_same_parameter_count_and_ignores_language(seeded):
    from xlt.lslo import apply_lslo

    shared = apply_lslo(tiny_m2m100(), paper_config(shared=True))
    assert shared.num_lslo_parameters() == seeded.num_lslo_parameters() == 79_872
    with torch.no_grad():
        for layer in shared.lslo_layers.values():
            layer.lora_b.normal_()
    assert torch.equal(_logits(shared, **_route()), _logits(shared, **_route([3, 3, 3], [5, 5, 5])))
