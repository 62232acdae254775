"""xlt analyze neurons: activation probabilities against a forward recomputed by hand from
``output_hidden_states`` (Llama: act_fn(gate_proj(post_attention_layernorm(h))); GPT-2: gelu_new
of c_fc(ln_2(h))), LAPE and the paper's selection against hand computations on constructed
probabilities, padding excluded, deactivation changing exactly the chosen activations, and the
command end to end with its bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

EN = ["The cat sat on the mat.", "Hello world. How are you? Good night.", "The quick brown fox jumps over the lazy dog.",
      "Question: what is two plus three? Answer: five"]
DE = ["Der Hund schläft im Garten.", "Translate into German: good morning", "0 1 2 3 4 5 6 7 8 9 10 100 1000"]


def _manual_activations(model, ids: list[int]) -> torch.Tensor:
    """(layers, seq, width) FFN activations of one unpadded sequence, each block recomputed by hand
    from its input hidden state; the recomputed block output is checked against the next hidden state."""
    arch = model.config.model_type
    x_ids = torch.tensor([ids])
    with torch.no_grad():
        hs = model(input_ids=x_ids, output_hidden_states=True).hidden_states
        blocks = model.model.layers if arch == "llama" else model.transformer.h
        out = []
        for layer, block in enumerate(blocks):
            h = hs[layer]
            if arch == "llama":
                cos, sin = model.model.rotary_emb(h, torch.arange(len(ids))[None])
                mid = h + block.self_attn(hidden_states=block.input_layernorm(h), position_embeddings=(cos, sin),
                                          attention_mask=None)[0]
                x = block.post_attention_layernorm(mid)
                act = torch.nn.functional.silu(x @ block.mlp.gate_proj.weight.T)
                block_out = mid + block.mlp.down_proj(act * block.mlp.up_proj(x))
                final_norm = model.model.norm
            else:  # GPT-2: Conv1D weights are (in, out); gelu_new written out
                mid = h + block.attn(block.ln_1(h))[0]
                pre = block.ln_2(mid) @ block.mlp.c_fc.weight + block.mlp.c_fc.bias
                act = 0.5 * pre * (1 + torch.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre ** 3)))
                block_out = mid + act @ block.mlp.c_proj.weight + block.mlp.c_proj.bias
                final_norm = model.transformer.ln_f
            last = layer == len(blocks) - 1
            assert torch.allclose(final_norm(block_out) if last else block_out, hs[layer + 1], atol=1e-5)
            out.append(act[0])
        return torch.stack(out)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_activation_probability_equals_a_forward_by_hand(arch, bpe_tokenizer):
    from xlt.analysis.neurons import activation_probability
    from xlt.testing import tiny_model

    model = tiny_model(arch, bpe_tokenizer, seed=5)
    got, n_tokens = activation_probability(model, bpe_tokenizer, {"en": iter(EN), "de": iter(DE)}, batch_size=3)
    assert got.shape == (2, 4, 64) and got.dtype == torch.float32
    for k, lines in enumerate((EN, DE)):
        positive, total = 0, 0
        for line in lines:
            ids = bpe_tokenizer(line)["input_ids"]
            positive = positive + (_manual_activations(model, ids) > 0).sum(dim=1)  # (layers, width)
            total += len(ids)
        assert n_tokens[["en", "de"][k]] == total
        assert torch.equal(got[k], (positive.double() / total).float())
    assert not torch.equal(got[0], got[1])


SITES = {"llama": "mlp.act_fn", "qwen2": "mlp.act_fn", "gemma": "mlp.act_fn", "mistral": "mlp.act_fn",
         "gpt2": "mlp.act", "xglm": "activation_fn", "bloom": "mlp.gelu_impl"}


@pytest.mark.parametrize("arch", ["qwen2", "gemma", "mistral", "xglm", "bloom"])
def test_every_fixture_architecture_has_an_activation_site(arch, bpe_tokenizer):
    """The site found reads (batch, seq, FFN width) with values of both signs, once per block."""
    from xlt.analysis.neurons import activation_sites, positive_counts
    from xlt.testing import tiny_model

    model = tiny_model(arch, bpe_tokenizer, seed=1)
    sites = activation_sites(model)
    assert len(sites) == 4 and {site.name for site in sites} == {SITES[arch]}
    ids = torch.tensor([bpe_tokenizer(EN[2])["input_ids"]])
    counts, n = positive_counts(model, ids)
    assert n == ids.shape[1] and counts.shape[0] == 4
    assert 0 < int(counts.sum()) < n * counts.numel()


def test_an_architecture_without_an_activation_module_is_one_error(bpe_tokenizer):
    from xlt.analysis.neurons import activation_sites
    from xlt.errors import ModelError
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer)
    for block in model.model.layers:
        del block.mlp.act_fn  # a gated MLP whose activation is not a module: down_proj's input is act * up
    with pytest.raises(ModelError, match="cannot find the FFN activation of LlamaForCausalLM block 0"):
        activation_sites(model)


def test_a_non_gated_mlp_is_read_at_its_down_projection_input(bpe_tokenizer):
    """GPT-2 with its activation no longer a registered module: c_proj's input is the same activation."""
    from xlt.analysis.neurons import activation_sites, positive_counts
    from xlt.testing import tiny_model

    model = tiny_model("gpt2", bpe_tokenizer, seed=6)
    ids = torch.tensor([bpe_tokenizer(EN[1])["input_ids"]])
    want, _ = positive_counts(model, ids)
    for block in model.transformer.h:
        act = block.mlp._modules.pop("act")
        object.__setattr__(block.mlp, "act", act)  # still called by forward, no longer found by name
    sites = activation_sites(model)
    assert {(site.name, site.kind) for site in sites} == {("mlp.c_proj (input)", "input")}
    got, _ = positive_counts(model, ids)
    assert torch.equal(got, want)


def test_an_activation_module_run_twice_per_block_is_refused(bpe_tokenizer):
    from xlt.analysis.neurons import positive_counts
    from xlt.errors import ModelError
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer)
    model.model.layers[1].mlp.act_fn = model.model.layers[0].mlp.act_fn  # one module, two blocks
    with pytest.raises(ModelError, match="ran .* times per block"):
        positive_counts(model, torch.tensor([[1, 5, 6, 7]]))


def test_lines_are_grouped_by_length(bpe_tokenizer):
    from xlt.analysis.neurons import encode_lines

    lines = EN + DE
    chunks = list(encode_lines(bpe_tokenizer, lines, max_length=512, buffer=4))
    assert [len(c) for c in chunks] == [4, 3]
    for chunk in chunks:
        assert [len(ids) for ids in chunk] == sorted(len(ids) for ids in chunk)
    assert sorted(map(tuple, sum(chunks, []))) == sorted(tuple(bpe_tokenizer(t)["input_ids"]) for t in lines)


def test_padding_is_excluded(bpe_tokenizer):
    from xlt.analysis.neurons import activation_probability
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=2)
    corpora = {"en": EN, "de": DE}
    one, n_one = activation_probability(model, bpe_tokenizer, corpora, batch_size=1)
    four, n_four = activation_probability(model, bpe_tokenizer, corpora, batch_size=4)
    assert n_one == n_four == {"en": sum(len(bpe_tokenizer(t)["input_ids"]) for t in EN),
                               "de": sum(len(bpe_tokenizer(t)["input_ids"]) for t in DE)}
    assert torch.allclose(one, four, atol=1e-6, rtol=0)


def test_max_tokens_and_max_length_cut_the_corpus(bpe_tokenizer):
    from xlt.analysis.neurons import activation_probability, line_perplexity
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=2)
    _, n = activation_probability(model, bpe_tokenizer, {"en": EN, "de": DE}, max_tokens=10)
    assert n == {"en": 10, "de": 10}
    _, n = activation_probability(model, bpe_tokenizer, {"en": EN, "de": DE}, max_length=5)
    assert n == {"en": 5 * len(EN), "de": 5 * len(DE)}  # every line has more than 5 tokens: truncated
    short = tiny_model("llama", bpe_tokenizer, seed=2, max_positions=6)
    _, n = activation_probability(short, bpe_tokenizer, {"en": EN, "de": DE}, max_length=512)
    assert n == {"en": 6 * len(EN), "de": 6 * len(DE)}  # no more than the model's positions
    assert line_perplexity(short, bpe_tokenizer, EN)["n_tokens"] == 5 * len(EN)


def test_perplexity_and_generation_under_deactivation(bpe_tokenizer):
    from xlt.analysis.neurons import deactivate_neurons, greedy_generate, line_perplexity
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=4)
    lines = EN[:3]

    def by_hand():  # one unpadded line at a time, the mean NLL over every predicted token
        nll, n = 0.0, 0
        with torch.no_grad():
            for line in lines:
                ids = torch.tensor([bpe_tokenizer(line)["input_ids"]])
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
                nll -= float(logp.gather(-1, ids[0, 1:, None]).sum())
                n += ids.shape[1] - 1
        return math.exp(nll / n), n

    want, n = by_hand()
    got = line_perplexity(model, bpe_tokenizer, lines, batch_size=2)
    assert got["n_tokens"] == n and got["ppl"] == pytest.approx(want, rel=1e-6)
    neurons = {layer: list(range(0, 64, 2)) for layer in range(4)}
    with deactivate_neurons(model, neurons):
        off = line_perplexity(model, bpe_tokenizer, lines, batch_size=2)
        off_by_hand, _ = by_hand()
        off_text = greedy_generate(model, bpe_tokenizer, ["The cat"], max_new_tokens=6)
    assert off["ppl"] == pytest.approx(off_by_hand, rel=1e-6)
    assert abs(off["ppl"] - want) > 1e-5 * want  # a random tiny model: a small but real change
    ids = torch.tensor([bpe_tokenizer("The cat")["input_ids"]])
    plain = model.generate(input_ids=ids, do_sample=False, max_new_tokens=6, pad_token_id=bpe_tokenizer.pad_token_id)
    assert greedy_generate(model, bpe_tokenizer, ["The cat"], max_new_tokens=6) == [
        bpe_tokenizer.decode(plain[0, ids.shape[1]:], skip_special_tokens=True)]
    assert isinstance(off_text[0], str)


def test_lape_by_hand():
    from xlt.analysis.neurons import lape

    p = torch.tensor([[[0.5, 0.2, 0.0, 0.3]],
                      [[0.5, 0.0, 0.0, 0.1]],
                      [[0.0, 0.0, 0.0, 0.6]]])  # (languages 3, layers 1, width 4)
    got = lape(p)
    assert got.shape == (1, 4)
    assert got[0, 0] == pytest.approx(math.log(2), abs=1e-6)  # two languages equally
    assert got[0, 1] == pytest.approx(0.0, abs=1e-7)  # one language only
    assert math.isnan(got[0, 2])  # never active: no distribution
    q = [0.3, 0.1, 0.6]
    assert got[0, 3] == pytest.approx(-sum(x * math.log(x) for x in q), abs=1e-6)


def test_selection_on_a_constructed_tensor():
    """2 languages x 2 layers x 4 neurons: 16 probabilities, sorted 0.01 0.01 0.02 0.02 0.02 0.02 0.03
    0.10 0.50 0.50 0.70 0.81 0.85 0.86 0.90 0.95; the q-percentile is the round(16 q)-th of them."""
    from xlt.analysis.neurons import select_neurons

    p = torch.tensor([
        # (0,0) (0,1) (0,2) (0,3) (1,0) (1,1) (1,2) (1,3)
        [0.90, 0.85, 0.10, 0.50, 0.02, 0.02, 0.81, 0.01],   # en
        [0.01, 0.86, 0.95, 0.50, 0.02, 0.02, 0.70, 0.03],   # fr
    ]).reshape(2, 2, 4)
    # the paper's 0.95: the 15th value, 0.90; only (0,2) fires above it on some language
    selection = select_neurons(p, ["en", "fr"], lape_quantile=0.5)
    assert selection.filter_threshold == pytest.approx(0.90) and selection.activation_threshold == pytest.approx(0.90)
    assert selection.n_candidates == 1 and selection.n_selected == 1
    assert selection.neurons == {"en": [], "fr": [(0, 2)]}
    # filter at the 11th value (0.70): candidates (0,0), (0,1), (0,2), (1,2); by LAPE: (0,0) (0.90 vs 0.01),
    # (0,2), (1,2), (0,1) (nearly even); 0.25 * 8 = 2 selected; a language above the 12th value (0.81)
    selection = select_neurons(p, ["en", "fr"], lape_quantile=0.25, filter_quantile=11 / 16, threshold_quantile=0.75)
    assert selection.filter_threshold == pytest.approx(0.70) and selection.activation_threshold == pytest.approx(0.81)
    assert selection.n_candidates == 4 and selection.n_selected == 2
    assert selection.neurons == {"en": [(0, 0)], "fr": [(0, 2)]}
    # all four selected; (0,1) belongs to both, (1,2) to none (0.81 is not above 0.81)
    selection = select_neurons(p, ["en", "fr"], lape_quantile=1.0, filter_quantile=11 / 16, threshold_quantile=0.75)
    assert selection.n_selected == 4
    assert selection.neurons == {"en": [(0, 0), (0, 1)], "fr": [(0, 1), (0, 2)]}
    assert selection.overlap() == {"en": {"en": 2, "fr": 1}, "fr": {"en": 1, "fr": 2}}
    assert selection.counts_per_layer() == {"en": [2, 0], "fr": [2, 0]}
    assert selection.by_layer("fr") == {0: [1, 2]}
    # the LAPE order decides: with (1,2) made the most specific, it is picked before (0,2)
    q = p.clone()
    q[1, 1, 2] = 0.0
    selection = select_neurons(q, ["en", "fr"], lape_quantile=0.25, filter_quantile=11 / 16, threshold_quantile=0.5)
    assert sorted(selection.neurons["en"] + selection.neurons["fr"]) == [(0, 0), (1, 2)]


def test_deactivation_changes_exactly_the_chosen_activations(bpe_tokenizer):
    from xlt.analysis.neurons import activation_sites, deactivate_neurons
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=3)
    ids = torch.tensor([bpe_tokenizer(EN[0])["input_ids"]])
    chosen = {1: [0, 5, 63], 3: [7]}

    def capture():
        seen = {}
        handles = [block.mlp.act_fn.register_forward_hook(
            lambda m, a, out, i=i: seen.__setitem__(i, out.detach().clone()))
            for i, block in enumerate(model.model.layers)]
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        for handle in handles:
            handle.remove()
        return seen, logits

    # only block 3 changed: the inputs of blocks 0..3 are the same, so block 3's other neurons must be too
    with deactivate_neurons(model, {3: [7]}):
        late, _ = capture()
    plain, plain_logits = capture()
    assert torch.equal(late[3][..., 7], torch.zeros_like(late[3][..., 7]))
    keep = [j for j in range(64) if j != 7]
    assert torch.equal(late[3][..., keep], plain[3][..., keep])
    assert all(torch.equal(late[i], plain[i]) for i in range(3))
    with deactivate_neurons(model, [(layer, j) for layer, js in chosen.items() for j in js]):
        off, off_logits = capture()
    assert torch.equal(off[0], plain[0])
    assert torch.equal(off[1][..., [0, 5, 63]], torch.zeros(1, ids.shape[1], 3))
    assert torch.equal(off[1][..., [j for j in range(64) if j not in (0, 5, 63)]],
                       plain[1][..., [j for j in range(64) if j not in (0, 5, 63)]])
    assert not torch.allclose(off_logits, plain_logits)
    with deactivate_neurons(model, {3: [7]}, value=1.5):  # set rather than deactivated
        raised, _ = capture()
    assert torch.equal(raised[3][..., 7], torch.full_like(raised[3][..., 7], 1.5))
    assert torch.equal(raised[3][..., keep], plain[3][..., keep])
    # removed on exit: the model is its plain self again
    again, again_logits = capture()
    assert torch.equal(again_logits, plain_logits)
    assert len(activation_sites(model)) == 4 and not model.model.layers[1].mlp.act_fn._forward_hooks


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_command_end_to_end(tiny_model_dir, tmp_path, xlt_cli):
    from safetensors.torch import load_file

    model_dir = tiny_model_dir("gpt2")
    en, de = _write(tmp_path / "en.txt", EN), _write(tmp_path / "de.txt", DE)
    prompts = _write(tmp_path / "prompts.txt", ["The cat", "Der Hund"])
    out = tmp_path / "neurons"
    proc = xlt_cli("analyze", "neurons", "--model", model_dir, "--corpus", f"en={en}", f"de={de}",
                   "--lape-quantile", "0.2", "--batch-size", 2, "--steer-lines", 2, "--steer-prompts", prompts,
                   "--max-new-tokens", 3, "--out", out)
    assert proc.returncode == 0, proc.stderr
    tensors = load_file(out / "neurons.safetensors")
    probs, entropy = tensors["activation_probability"], tensors["lape"]
    assert probs.shape == (2, 4, 64) and entropy.shape == (4, 64) and probs.dtype == torch.float32
    data = json.loads((out / "neurons.json").read_text())
    assert data["languages"] == ["en", "de"] and data["num_layers"] == 4 and data["ffn_width"] == 64
    assert data["settings"] == {"lape_quantile": 0.2, "filter_quantile": 0.95, "threshold_quantile": 0.95,
                                "max_length": 256, "max_tokens": None, "batch_size": 2}  # 512 > the 256 positions
    assert data["n_tokens"]["de"] == sum(len(ids) for ids in _tokens(model_dir, DE))
    # the probabilities are counts over the corpus: multiples of 1 / n_tokens
    scaled = probs[1].double() * data["n_tokens"]["de"]
    assert torch.allclose(scaled, scaled.round(), atol=1e-3)
    # the selection, recomputed from the saved probabilities by hand
    flat = sorted(probs.flatten().tolist())
    bar = flat[round(0.95 * len(flat)) - 1]
    assert data["filter_threshold"] == pytest.approx(bar) and data["activation_threshold"] == pytest.approx(bar)
    candidates = [(i, j) for i in range(4) for j in range(64) if max(probs[:, i, j].tolist()) > bar]
    assert data["n_candidates"] == len(candidates)
    chosen = sorted(candidates, key=lambda ij: (float(entropy[ij]), ij))[:min(round(0.2 * 256), len(candidates))]
    for k, lang in enumerate(["en", "de"]):
        want = sorted(ij for ij in chosen if float(probs[k][ij]) > bar)
        assert [tuple(x) for x in data["neurons"][lang]] == want
        assert sum(data["counts_per_layer"][lang]) == data["counts"][lang] == len(want)
    assert data["overlap"]["en"]["de"] == len({tuple(x) for x in data["neurons"]["en"]}
                                              & {tuple(x) for x in data["neurons"]["de"]})
    assert set(data["steering"]["ppl"]) == {"none", "en", "de"}
    assert set(data["steering"]["generations"]) == {"none", "en", "de"}
    assert len(data["steering"]["generations"]["none"]) == 2
    assert (out / "neurons.png").stat().st_size > 1000


def _tokens(model_dir, lines):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [tokenizer(line)["input_ids"] for line in lines]


def test_bad_input_is_one_line(tiny_llama_dir, tmp_path, xlt_cli):
    en = _write(tmp_path / "en.txt", EN)
    missing = tmp_path / "nope.txt"
    late = tmp_path / "late.txt"  # valid until its third line: caught before any counting
    late.write_bytes("Der Hund\nschläft\n".encode() + "im Garten ä\n".encode("latin-1"))
    empty = _write(tmp_path / "empty.txt", ["", "  "])
    cases = [
        ([f"en={en}", f"de={late}"], f"{late}: not UTF-8 text"),
        ([f"en={en}", f"de={empty}"], f"{empty}: no text"),
        ([f"en={en}", f"de={missing}"], f"{missing}: no such corpus file"),
        ([f"en={en}", "de"], "--corpus 'de': expected LANG=FILE"),
        ([f"en={en}", f"={en}"], "expected LANG=FILE"),
        ([f"en={en}"], "give at least two"),
        ([f"en={en}", f"en={en}"], "language 'en' given twice"),
    ]
    for corpus, message in cases:
        proc = xlt_cli("analyze", "neurons", "--model", tiny_llama_dir, "--corpus", *corpus, "--out", tmp_path / "x")
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
        assert not (tmp_path / "x").exists()


def test_adapter_is_applied(tiny_llama_dir, tmp_path):
    """Probabilities of base + adapter equal those of the model with the adapter folded in."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xlt.analysis.neurons import activation_probability
    from xlt.models import load_model

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["gate_proj", "q_proj"],
                                           task_type="CAUSAL_LM", init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    folded = peft_model.merge_and_unload().eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    corpora = {"en": EN, "de": DE}
    got, _ = activation_probability(load_model(tiny_llama_dir, adapter=tmp_path / "adapter").eval(), tokenizer, corpora)
    want, _ = activation_probability(folded, tokenizer, corpora)
    plain, _ = activation_probability(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), tokenizer, corpora)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert not torch.equal(got, plain)


#: the module whose output is the FFN's pre-activation, named by hand per architecture
PRE_ACTIVATION = {"qwen2": lambda m, i: m.model.layers[i].mlp.gate_proj,
                  "mistral": lambda m, i: m.model.layers[i].mlp.gate_proj,
                  "gemma": lambda m, i: m.model.layers[i].mlp.gate_proj,
                  "xglm": lambda m, i: m.model.layers[i].fc1,
                  "bloom": lambda m, i: m.transformer.h[i].mlp.dense_h_to_4h}


@pytest.mark.parametrize("arch", sorted(PRE_ACTIVATION))
def test_activation_probability_on_every_fixture_architecture(arch, bpe_tokenizer):
    """On the architectures without a forward by hand above: the probabilities equal the share of
    tokens whose pre-activation (gate / fc1 output, one unpadded line at a time) is above 0 —
    SiLU and every GELU variant here are above 0 exactly where their input is."""
    from xlt.analysis.neurons import activation_probability
    from xlt.testing import tiny_model

    model = tiny_model(arch, bpe_tokenizer, seed=5)
    got, n_tokens = activation_probability(model, bpe_tokenizer, {"en": iter(EN), "de": iter(DE)}, batch_size=3)
    kept: dict[int, torch.Tensor] = {}
    handles = [PRE_ACTIVATION[arch](model, i).register_forward_hook(
        lambda mod, a, out, i=i: kept.__setitem__(i, out[0])) for i in range(4)]
    try:
        for k, lines in enumerate((EN, DE)):
            positive, total = 0, 0
            for line in lines:
                ids = bpe_tokenizer(line)["input_ids"]
                with torch.no_grad():
                    model(input_ids=torch.tensor([ids]))
                positive = positive + torch.stack([(kept[i] > 0).sum(dim=0) for i in range(4)])
                total += len(ids)
            assert n_tokens[["en", "de"][k]] == total
            assert torch.equal(got[k], (positive.double() / total).float()), arch
    finally:
        for handle in handles:
            handle.remove()


def test_encoder_decoder_models_are_refused(nllb_tokenizer, tiny_model_dir, tmp_path, capsys):
    from xlt.analysis.lens import LensProbe, run_lens
    from xlt.analysis.neurons import activation_probability
    from xlt.cli import main
    from xlt.errors import ModelError
    from xlt.testing import tiny_model

    seq2seq = tiny_model("m2m100", nllb_tokenizer)
    with pytest.raises(ModelError, match="M2M100ForConditionalGeneration is an encoder-decoder model"):
        activation_probability(seq2seq, nllb_tokenizer, {"en": iter(EN)})
    with pytest.raises(ModelError, match="M2M100ForConditionalGeneration is an encoder-decoder model"):
        run_lens(seq2seq, nllb_tokenizer, [LensProbe("The cat", "sat", "saß")])
    # the commands: one line, before any output
    model_dir = tiny_model_dir("m2m100")
    prompts = tmp_path / "probes.jsonl"
    prompts.write_text(json.dumps({"prompt": "The cat", "target": "sat", "pivot": "saß"}) + "\n", encoding="utf-8")
    corpus = _write(tmp_path / "en.txt", EN)
    for command in (["lens", "--prompts", str(prompts)], ["neurons", "--corpus", f"en={corpus}", f"de={corpus}"]):
        capsys.readouterr()
        assert main(["analyze", command[0], "--model", str(model_dir), *command[1:],
                     "--out", str(tmp_path / "never")]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("xlt: error:") and "encoder-decoder" in err[0], err
        assert not (tmp_path / "never").exists()
