"""xlt analyze lens --tuned-lens: hand-made affine translators in the ``tuned-lens`` package's file
layout, decoded against a manual forward (final norm + head applied to ``h + A h + b`` of each
``output_hidden_states`` entry), zero translators against the plain logit lens, the pickle and
safetensors forms, and each malformed file refused in one line naming the file and the field."""

from __future__ import annotations

import json

import pytest
import torch
from test_analysis_lens import _batch

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["The cat sat on the", "Le chat dort sur le lit et", "Hello"]


def _translators(n_layers: int, width: int, seed: int, scale: float = 0.2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(n_layers):
        out[f"{i}.weight"] = scale * torch.randn(width, width, generator=g)
        out[f"{i}.bias"] = scale * torch.randn(width, generator=g)
    return out


def _write_lens(directory, tensors, *, width: int, n_layers: int, form: str = "safetensors", **config):
    """A tuned lens directory as the tuned-lens package lays it out (config.json + weights)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(
        {"base_model_name_or_path": "tiny", "d_model": width, "num_hidden_layers": n_layers, "bias": True,
         "lens_type": "linear_tuned_lens", **config}), encoding="utf-8")
    if form == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "params.safetensors"))
    else:
        torch.save(tensors, directory / "params.pt")
    return directory


def _manual_norm(model):
    arch = model.config.model_type
    return model.model.norm if arch == "llama" else model.transformer.ln_f


def _manual_tuned_lens(model, ids: list[int], tensors) -> torch.Tensor:
    """(N, vocab) log-probabilities at the last position: layer l (1..N-1) decodes
    norm(h + A_l h + b_l) of hidden_states[l]; layer N is the model's own logits."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        norm, head = _manual_norm(model), model.lm_head
        n = len(out.hidden_states) - 1
        rows = []
        for layer in range(1, n):
            h = out.hidden_states[layer][0, -1]
            a, b = tensors[f"{layer}.weight"], tensors[f"{layer}.bias"]
            rows.append(head(norm(h + a @ h + b)))
        rows.append(out.logits[0, -1])
        return torch.log_softmax(torch.stack(rows).float(), dim=-1)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tuned_lens_equals_manual_forward(arch, bpe_tokenizer, tmp_path):
    from xlt.analysis.lens import lens_log_probs, load_tuned_lens
    from xlt.testing import tiny_model

    model = tiny_model(arch, bpe_tokenizer, seed=7)
    tensors = _translators(4, 32, seed=1)
    lens = load_tuned_lens(_write_lens(tmp_path / "lens", tensors, width=32, n_layers=4), model)
    encoded, ids, mask = _batch(bpe_tokenizer, PROMPTS)
    got = lens_log_probs(model, ids, mask, tuned_lens=lens)
    plain = lens_log_probs(model, ids, mask)
    for row, seq in enumerate(encoded):
        want = _manual_tuned_lens(model, seq, tensors)
        assert torch.allclose(got[:, row], want, atol=1e-5), (arch, row)
    # the translators change layers 1..N-1, never layer N (the model's own output)
    assert not torch.allclose(got[:-1], plain[:-1], atol=1e-3)
    assert torch.equal(got[-1], plain[-1])


def test_zero_translators_are_the_logit_lens(bpe_tokenizer, tmp_path):
    from xlt.analysis.lens import LensProbe, run_lens
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=8)
    zeros = {k: torch.zeros_like(v) for k, v in _translators(4, 32, seed=0).items()}
    lens_dir = _write_lens(tmp_path / "zeros", zeros, width=32, n_layers=4)
    probes = [LensProbe(p, "mat", "Tisch") for p in PROMPTS]
    tuned = run_lens(model, bpe_tokenizer, probes, tuned_lens=lens_dir)
    plain = run_lens(model, bpe_tokenizer, probes)
    assert tuned.values == plain.values
    assert (tuned.extra["lens"], tuned.extra["tuned_lens"]) == ("tuned", str(lens_dir / "params.safetensors"))
    assert (plain.extra["lens"], plain.extra["tuned_lens"]) == ("logit", None)


def test_params_pt_with_layer_translators_prefix_needs_allow_pickle(bpe_tokenizer, tmp_path):
    """Older releases save the whole lens (``layer_translators.{i}.*`` beside other keys); a pickle
    is read only when allowed, and then gives the same translators as the safetensors form."""
    from xlt.analysis.lens import load_tuned_lens
    from xlt.errors import DataError
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=9)
    tensors = _translators(4, 32, seed=2)
    old = {f"layer_translators.{k}": v for k, v in tensors.items()}
    old["unembedding.weight"] = torch.zeros(len(bpe_tokenizer), 32)
    pickled = _write_lens(tmp_path / "pt", old, width=32, n_layers=4, form="pt")
    with pytest.raises(DataError, match=r"params\.pt: a pickle file.*--allow-pickle"):
        load_tuned_lens(pickled, model)
    from_pt = load_tuned_lens(pickled, model, allow_pickle=True)
    from_st = load_tuned_lens(_write_lens(tmp_path / "st", tensors, width=32, n_layers=4), model)
    assert torch.equal(from_pt.weight, from_st.weight) and torch.equal(from_pt.bias, from_st.bias)
    for i in range(4):
        assert torch.equal(from_pt.weight[i], tensors[f"{i}.weight"])


def _bad(tmp_path, name, mutate, **config):
    tensors = _translators(4, 32, seed=3)
    mutate(tensors)
    return _write_lens(tmp_path / name, tensors, width=32, n_layers=4, **config)


BAD_LENSES = [
    ("no-bias", lambda t: t.pop("2.bias"), {}, r"params\.safetensors: field '2\.bias': missing"),
    ("narrow", lambda t: t.update({"1.weight": torch.zeros(16, 16)}), {},
     r"params\.safetensors: field '1\.weight': shape \(16, 16\) does not match the model's hidden width 32"),
    ("three", lambda t: [t.pop("3.weight"), t.pop("3.bias")], {},
     r"params\.safetensors: field '3\.weight': missing: 3 translators \(0\.\.2\) for a model of 4 layers"),
    ("five", lambda t: t.update({"4.weight": torch.zeros(32, 32), "4.bias": torch.zeros(32)}), {},
     r"params\.safetensors: field '4\.weight': present: 5 translators"),
    ("config-width", lambda t: None, {"d_model": 64},
     r"config\.json: field 'd_model': 64 does not match the model's hidden width 32"),
    ("config-layers", lambda t: None, {"num_hidden_layers": 6},
     r"config\.json: field 'num_hidden_layers': 6 does not match the model's number of layers 4"),
    ("nan", lambda t: t["0.bias"].__setitem__(0, float("nan")), {}, r"field '0\.bias': holds NaN"),
    ("mlp-lens", lambda t: None, {"lens_type": "mlp_tuned_lens"},
     r"config\.json: field 'lens_type': 'mlp_tuned_lens' is not supported"),
]


@pytest.mark.parametrize("name,mutate,config,pattern", BAD_LENSES, ids=[case[0] for case in BAD_LENSES])
def test_malformed_lens_is_one_error_naming_file_and_field(name, mutate, config, pattern, bpe_tokenizer, tmp_path):
    from xlt.analysis.lens import load_tuned_lens
    from xlt.errors import DataError
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=9)
    with pytest.raises(DataError, match=pattern) as caught:
        load_tuned_lens(_bad(tmp_path, name, mutate, **config), model)
    assert "\n" not in str(caught.value)


def test_lens_without_bias_when_config_says_so(bpe_tokenizer, tmp_path):
    from xlt.analysis.lens import load_tuned_lens
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=9)
    tensors = {k: v for k, v in _translators(4, 32, seed=4).items() if k.endswith("weight")}
    lens = load_tuned_lens(_write_lens(tmp_path / "nobias", tensors, width=32, n_layers=4, bias=False), model)
    assert torch.equal(lens.bias, torch.zeros(4, 32))


def test_command_records_the_tuned_lens(tiny_llama_dir, tmp_path, capsys):
    """``xlt analyze lens --tuned-lens`` in-process: lens.json says which lens, and its layer-1 values
    are the manual tuned lens's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xlt.cli import main

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    width, n_layers = model.config.hidden_size, model.config.num_hidden_layers
    tensors = _translators(n_layers, width, seed=5)
    lens_dir = _write_lens(tmp_path / "lens", tensors, width=width, n_layers=n_layers)
    rows = [{"prompt": "The cat sat on the", "target": "mat", "pivot": "Tisch"},
            {"prompt": "Hello world. How are", "target": "you", "pivot": "du"}]
    prompts = tmp_path / "probes.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["analyze", "lens", "--model", str(tiny_llama_dir), "--prompts", str(prompts),
                 "--tuned-lens", str(lens_dir), "--out", str(out)]) == 0
    assert "tuned lens by layer" in capsys.readouterr().out
    data = json.loads((out / "lens.json").read_text())
    assert (data["lens"], data["tuned_lens"]) == ("tuned", str(lens_dir / "params.safetensors"))
    for row, per in zip(rows, data["per_prompt"]):
        want = _manual_tuned_lens(model, tokenizer(row["prompt"])["input_ids"], tensors).exp()
        target = tokenizer(row["target"], add_special_tokens=False)["input_ids"][0]
        for layer in range(n_layers):
            assert per["p_target"][layer] == pytest.approx(float(want[layer, target]), abs=1e-6)


def test_a_directory_without_weights_is_refused(bpe_tokenizer, tmp_path):
    from xlt.analysis.lens import load_tuned_lens
    from xlt.errors import DataError
    from xlt.testing import tiny_model

    (tmp_path / "empty").mkdir()
    model = tiny_model("llama", bpe_tokenizer, seed=9)
    with pytest.raises(DataError, match=r"empty: not a tuned lens: no params\.safetensors or params\.pt"):
        load_tuned_lens(tmp_path / "empty", model)
    with pytest.raises(DataError, match=r"absent: no such tuned lens"):
        load_tuned_lens(tmp_path / "absent", model)
