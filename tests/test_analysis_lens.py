"""xlt analyze lens: the logit lens against a manual forward through each model's final norm and
head applied to ``output_hidden_states`` (one prompt at a time, unpadded), on several fixture
architectures; the last layer against the model's own output; the command end to end."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["The cat sat on the", "Le chat dort sur le lit et", "Hello", "0 1 2 3 4 5 6 7"]


def _manual_final_norm(model):
    """The final norm, named per architecture by hand (not found by the code under test)."""
    arch = model.config.model_type
    return {"llama": lambda: model.model.norm, "qwen2": lambda: model.model.norm,
            "gemma": lambda: model.model.norm, "mistral": lambda: model.model.norm,
            "gpt2": lambda: model.transformer.ln_f, "bloom": lambda: model.transformer.ln_f,
            "xglm": lambda: model.model.layer_norm}[arch]()


def _manual_lens(model, ids: list[int]) -> torch.Tensor:
    """(N, vocab) log-probabilities at the last position: norm + head on hidden_states[1..N-1]
    (raw block outputs), and the model's own logits for layer N (hidden_states[N] is already normed)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        norm, head = _manual_final_norm(model), model.lm_head
        n = len(out.hidden_states) - 1
        rows = [head(norm(out.hidden_states[i][0, -1])) for i in range(1, n)]
        rows.append(out.logits[0, -1])
        return torch.log_softmax(torch.stack(rows).float(), dim=-1)


def _batch(tokenizer, prompts):
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, encoded))
    ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in encoded])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in encoded])
    return encoded, ids, mask


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gemma", "mistral", "xglm", "bloom"])
def test_lens_equals_manual_norm_and_head_on_hidden_states(arch, bpe_tokenizer):
    from xlt.analysis.lens import lens_log_probs
    from xlt.testing import tiny_model

    model = tiny_model(arch, bpe_tokenizer, seed=3)
    encoded, ids, mask = _batch(bpe_tokenizer, PROMPTS)  # padded batch, different lengths
    got = lens_log_probs(model, ids, mask)
    assert got.shape == (4, len(PROMPTS), len(bpe_tokenizer))
    for row, seq in enumerate(encoded):
        want = _manual_lens(model, seq)
        assert torch.allclose(got[:, row], want, atol=1e-5), (arch, row)
    # the layers differ from each other (the lens is not reading one state four times)
    assert not torch.allclose(got[0], got[-1], atol=1e-3)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_last_layer_is_the_models_own_output_distribution(arch, bpe_tokenizer):
    from xlt.analysis.lens import lens_log_probs
    from xlt.testing import tiny_model

    model = tiny_model(arch, bpe_tokenizer, seed=4)
    encoded, ids, mask = _batch(bpe_tokenizer, PROMPTS)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    last = torch.tensor([len(s) - 1 for s in encoded])
    own = torch.log_softmax(logits[torch.arange(len(encoded)), last].float(), dim=-1)
    got = lens_log_probs(model, ids, mask)[-1]
    assert torch.allclose(got, own, atol=1e-6, rtol=0)


def test_metrics_by_hand():
    from xlt.analysis.lens import lens_metrics

    probs = torch.tensor([[[0.5, 0.25, 0.25, 0.0]], [[0.1, 0.2, 0.3, 0.4]]])  # (N=2, batch=1, vocab=4)
    m = lens_metrics(probs.log(), [2], [3])
    assert torch.allclose(m["p_target"], torch.tensor([[0.25], [0.3]]))
    assert torch.allclose(m["p_pivot"], torch.tensor([[0.0], [0.4]]))
    h0 = -(0.5 * torch.tensor(0.5).log() + 2 * 0.25 * torch.tensor(0.25).log())  # 0 log 0 = 0
    h1 = -sum(p * torch.tensor(p).log() for p in (0.1, 0.2, 0.3, 0.4))
    assert torch.allclose(m["entropy"], torch.stack([h0, h1]).reshape(2, 1).float())


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_command_with_prompts(tiny_model_dir, tmp_path, xlt_cli):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tiny_model_dir("llama")
    rows = [{"prompt": "The cat sat on the", "target": "mat", "pivot": "Tisch"},
            {"prompt": "Der Hund schläft im", "target": "Garten", "pivot": "garden"},
            {"prompt": "Hello world. How are", "target": "you", "pivot": "du"},
            {"prompt": "a b c", "target": "d", "pivot": "d"}]  # same first token: not averaged
    prompts = _write_jsonl(tmp_path / "probes.jsonl", rows)
    out = tmp_path / "lens"
    proc = xlt_cli("analyze", "lens", "--model", model_dir, "--prompts", prompts, "--batch-size", 3, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "1 left out of the averages" in proc.stdout
    data = json.loads((out / "lens.json").read_text())
    assert data["layers"] == [1, 2, 3, 4] and data["n_prompts"] == 4 and data["n_averaged"] == 3
    assert (data["model"], data["adapter"], data["task"]) == (str(model_dir), None, "prompts")
    assert (out / "lens.png").stat().st_size > 1000
    per = data["per_prompt"]
    assert [p["averaged"] for p in per] == [True, True, True, False]
    for metric in ("p_target", "p_pivot", "entropy"):
        for layer in range(4):  # averages over the included prompts, recomputed from the per-prompt values
            mean = sum(p[metric][layer] for p in per[:3]) / 3
            assert data[metric][layer] == pytest.approx(mean, abs=1e-9)
            assert data["ci95"][metric]["low"][layer] <= mean <= data["ci95"][metric]["high"][layer]
    # layer N is the model's own next-token distribution, computed here without xlt
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    for row, p in zip(rows, per):
        with torch.no_grad():
            probs = model(**tokenizer(row["prompt"], return_tensors="pt")).logits[0, -1].softmax(-1)
        target = tokenizer(row["target"], add_special_tokens=False)["input_ids"][0]
        pivot = tokenizer(row["pivot"], add_special_tokens=False)["input_ids"][0]
        assert p["target_token"] == target and p["pivot_token"] == pivot
        assert p["p_target"][-1] == pytest.approx(float(probs[target]), abs=1e-6)
        assert p["p_pivot"][-1] == pytest.approx(float(probs[pivot]), abs=1e-6)
        assert p["entropy"][-1] == pytest.approx(float(-(probs * probs.log()).sum()), abs=1e-5)


def test_adapter_is_applied(tiny_llama_dir, tmp_path):
    """The lens of base + adapter equals the lens of the model with the adapter folded in."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xlt.analysis.lens import LensProbe, run_lens
    from xlt.models import load_model

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                           task_type="CAUSAL_LM", init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    folded = peft_model.merge_and_unload().eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    probes = [LensProbe("The cat sat on the", "mat", "Tisch"), LensProbe("Hello", "world", "Welt")]
    with_adapter = run_lens(load_model(tiny_llama_dir, adapter=tmp_path / "adapter").eval(), tokenizer, probes)
    want = run_lens(folded, tokenizer, probes)
    plain = run_lens(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), tokenizer, probes)
    for metric in ("p_target", "entropy"):
        assert torch.allclose(torch.tensor(with_adapter.values[metric]), torch.tensor(want.values[metric]), atol=1e-5)
        assert not torch.allclose(torch.tensor(with_adapter.values[metric]), torch.tensor(plain.values[metric]),
                                  atol=1e-5)


def _pairs(path):
    words = [("cat", "chat", "Katze"), ("dog", "chien", "Hund"), ("house", "maison", "Haus"),
             ("tree", "arbre", "Baum"), ("water", "eau", "Wasser"), ("sun", "soleil", "Sonne")]
    rows = []
    for en, fr, de in words:
        rows.append({"src_lang": "en", "tgt_lang": "fr", "src": en, "tgt": fr})
        rows.append({"src_lang": "de", "tgt_lang": "en", "src": de, "tgt": en})  # pivot on either side
    return _write_jsonl(path, rows)


def test_probes_from_pairs_translation_and_repetition(tmp_path):
    from xlt.analysis.lens import probes_from_pairs
    from xlt.formats import read_parallel_pairs

    pairs = read_parallel_pairs(_pairs(tmp_path / "pairs.jsonl"))
    translation = probes_from_pairs(pairs, pivot="en", target_lang="fr", source_lang="de", shots=2)
    assert len(translation) == 6
    assert translation[0].prompt == 'de: "Hund" - fr: "chien"\nde: "Haus" - fr: "maison"\nde: "Katze" - fr: "'
    assert (translation[0].target, translation[0].pivot) == ("chat", "cat")
    assert translation[5].prompt.startswith('de: "Katze" - fr: "chat"\nde: "Hund"')  # wraps around
    repetition = probes_from_pairs(pairs, pivot="en", target_lang="de", shots=1)
    assert repetition[2].prompt == 'de: "Baum" - de: "Baum"\nde: "Haus" - de: "'
    assert (repetition[2].target, repetition[2].pivot) == ("Haus", "house")


def test_command_with_pairs_and_its_errors(tiny_llama_dir, tmp_path, xlt_cli):
    pairs = _pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "lens"
    proc = xlt_cli("analyze", "lens", "--model", tiny_llama_dir, "--pairs", pairs, "--target-lang", "fr",
                   "--source-lang", "de", "--shots", 2, "--out", out)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "lens.json").read_text())
    assert data["n_prompts"] == 6 and data["task"] == "translation" and data["pivot_lang"] == "en"
    assert data["per_prompt"][0]["target"] == "chat" and data["per_prompt"][0]["pivot"] == "cat"

    cases = [
        (["--pairs", pairs], "several languages (de, fr); choose one with --target-lang"),
        (["--pairs", pairs, "--target-lang", "es"], "no pair of 'en' with 'es'"),
        (["--pairs", pairs, "--pivot", "es"], "no pair has the pivot language 'es'"),
    ]
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "target": "b", "pivot": "c"},
                                                 {"prompt": "a", "target": "b"}])
    cases.append((["--prompts", bad], f"{bad}:2: field 'pivot': missing"))
    for extra, message in cases:
        proc = xlt_cli("analyze", "lens", "--model", tiny_llama_dir, *extra, "--out", tmp_path / "x")
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
        assert not (tmp_path / "x").exists()


def test_all_prompts_sharing_the_first_token_is_an_error(bpe_tokenizer):
    from xlt.analysis.lens import LensProbe, run_lens
    from xlt.errors import DataError
    from xlt.testing import tiny_model

    with pytest.raises(DataError, match="cannot tell the two languages apart"):
        run_lens(tiny_model("llama", bpe_tokenizer), bpe_tokenizer, [LensProbe("a b", "c", "c")])


def test_final_logit_softcapping_is_applied(bpe_tokenizer):
    """Gemma-2 caps its logits after the head; the lens does too, so layer N is still the model's output."""
    import transformers as tf

    from xlt.analysis.lens import lens_log_probs

    config = tf.Gemma2Config(vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=8, final_logit_softcapping=0.5,
                             pad_token_id=bpe_tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    encoded, ids, mask = _batch(bpe_tokenizer, PROMPTS[:2])
    got = lens_log_probs(model, ids, mask)
    for row, seq in enumerate(encoded):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([seq]), output_hidden_states=True)
            first = model.lm_head(model.model.norm(out.hidden_states[1][0, -1]))
            first = torch.tanh(first / 0.5) * 0.5
        assert torch.allclose(got[0, row], torch.log_softmax(first.float(), -1), atol=1e-5)
        assert torch.allclose(got[-1, row], torch.log_softmax(out.logits[0, -1].float(), -1), atol=1e-5)
