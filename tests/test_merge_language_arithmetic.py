"""xlt merge language-arithmetic: task + lambda * (target language - source language), checked
against the dense updates PEFT applies to the base weights (independent of xlt.merge)."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


def _lora(base_dir, out, seed, r, alpha):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"],
                                      task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.save_pretrained(out)
    return out


def _folded(base_dir, adapter_dir) -> dict[str, torch.Tensor]:
    """Parameter name -> (base + adapter) - base, as PEFT folds the adapter into the weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = dict(AutoModelForCausalLM.from_pretrained(base_dir).named_parameters())
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).merge_and_unload()
    return {n: p.detach().double() - base[n].detach().double() for n, p in merged.named_parameters()
            if n.endswith(("q_proj.weight", "v_proj.weight"))}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_llama_dir):
    root = tmp_path_factory.mktemp("lang-arith")
    # different ranks and alphas: a factor-wise rule could not even add them
    return {"root": root, "task": _lora(tiny_llama_dir, root / "task", 1, r=4, alpha=8),
            "tgt": _lora(tiny_llama_dir, root / "tgt", 2, r=2, alpha=6),
            "src": _lora(tiny_llama_dir, root / "src", 3, r=3, alpha=3)}


@pytest.mark.parametrize("lam", [1.0, 0.4])
def test_merged_update_is_task_plus_lambda_language_difference(adapters, tiny_llama_dir, lam, xlt_cli):
    out = adapters["root"] / f"merged-{lam}"
    proc = xlt_cli("merge", "language-arithmetic", "--task", adapters["task"], "--target-language", adapters["tgt"],
                   "--source-language", adapters["src"], "--lambda", lam, "--out", out)
    assert proc.returncode == 0, proc.stderr
    task, tgt, src = (_folded(tiny_llama_dir, adapters[k]) for k in ("task", "tgt", "src"))
    got = _folded(tiny_llama_dir, out)
    assert got.keys() == task.keys() and len(got) == 8
    for name in got:
        expected = task[name] + lam * (tgt[name] - src[name])
        assert torch.allclose(got[name], expected, atol=1e-5), name
    report = json.loads((out / "merge_report.json").read_text())
    assert report["method"] == "language_arithmetic" and report["lambda"] == lam
    assert report["rank"] == 4 + 2 + 3


def test_registered_under_its_name(adapters):
    from xlt.merge import get_merge_method, language_arithmetic, lora_delta, lora_modules

    assert get_merge_method("language-arithmetic") is language_arithmetic
    at_zero = lora_modules(language_arithmetic(adapters["task"], adapters["tgt"], adapters["src"], 0.0).adapter)
    from xlt.merge import read_adapter

    task = lora_modules(read_adapter(adapters["task"]))
    for name, factors in task.items():  # lambda = 0 is the task adapter's update
        assert torch.allclose(lora_delta(at_zero[name]), lora_delta(factors), atol=1e-6)


def test_non_finite_lambda_is_one_line(adapters, xlt_cli, tmp_path):
    proc = xlt_cli("merge", "language-arithmetic", "--task", adapters["task"], "--target-language", adapters["tgt"],
                   "--source-language", adapters["src"], "--lambda", "nan", "--out", tmp_path / "x")
    assert proc.returncode == 2 and "--lambda must be finite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_ia3_vectors_are_combined_additively():
    from xlt.merge import language_arithmetic

    config = {"peft_type": "IA3", "task_type": "CAUSAL_LM", "target_modules": ["k_proj"],
              "feedforward_modules": [], "base_model_name_or_path": None}
    key = "base_model.model.model.layers.0.self_attn.k_proj.ia3_l"
    vectors = [torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [5.0]]), torch.tensor([[2.0], [1.0]])]
    result = language_arithmetic(*[(config, {key: v}) for v in vectors], 0.5)
    assert torch.allclose(result.adapter.tensors[key], torch.tensor([[1.5], [4.0]]))  # l1 + 0.5 (l2 - l3)


def test_same_update_as_adamergex_delta(adapters):
    from xlt.merge import adamergex, language_arithmetic, lora_delta, lora_modules

    ours = lora_modules(language_arithmetic(adapters["task"], adapters["tgt"], adapters["src"], 0.7).adapter)
    theirs = lora_modules(adamergex(adapters["task"], adapters["tgt"], adapters["src"], 0.7).adapter)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(lora_delta(ours[name]), lora_delta(theirs[name]))
