"""Hidden-state and gradient similarity: the spec's numbers, independent checks, any HF model, CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from xlt.analysis import (analyze_parallel, gradient_cosine, hidden_similarity, layer_states, linear_cka,
                          max_weight_matching, pack_parallel)
from xlt.errors import DataError


def _spec_tensors():
    hs1 = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 10 - 1
    hs2 = hs1.flip(1) * torch.tensor([1.0, -1.0, 2.0, 0.5])
    return hs1, hs2


def test_position_wise_similarity():
    hs1, hs2 = _spec_tensors()
    assert hidden_similarity(hs1, hs2, "position").tolist() == pytest.approx([0.263140, 0.543270], abs=1e-6)
    assert hidden_similarity(hs1, hs1, "position").tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_matching_similarity():
    hs1, hs2 = _spec_tensors()
    assert hidden_similarity(hs1, hs2, "matching").tolist() == pytest.approx([0.516523, 0.551217], abs=1e-6)
    other = torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(0))
    assert hidden_similarity(hs1, other, "matching").tolist() == pytest.approx([0.505419, 0.257467], abs=1e-6)
    assert max_weight_matching(torch.tensor([[0.9, 0.1, 0.3], [0.8, 0.7, 0.2]])) == [(0, 0), (1, 1)]


@pytest.mark.parametrize("shape", [(5, 5), (4, 7), (7, 4), (6, 6)])
def test_matching_is_optimal_against_brute_force(shape):
    w = np.random.default_rng(sum(shape)).normal(size=shape)
    pairs = max_weight_matching(w)
    n, m = shape
    assert len(pairs) == min(n, m) and len({i for i, _ in pairs}) == len({j for _, j in pairs}) == min(n, m)
    if n <= m:
        best = max(sum(w[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
    else:
        best = max(sum(w[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))
    assert sum(w[i, j] for i, j in pairs) == pytest.approx(best, abs=1e-12)


def test_position_mode_needs_equal_lengths():
    with pytest.raises(DataError, match="equal length, got 3 and 2 tokens"):
        hidden_similarity(torch.zeros(2, 3, 4), torch.zeros(2, 2, 4), "position")


def test_gradient_cosine_and_cka():
    g = gradient_cosine({"w": torch.tensor([1.0, 2.0, 0.0, -1.0])}, {"w": torch.tensor([2.0, 1.0, 1.0, 0.0])})
    assert g["w"] == pytest.approx(0.666667, abs=1e-6)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert linear_cka(torch.tensor(x), torch.tensor(3.0 * x @ q + 1.0)) == pytest.approx(1.0, abs=1e-9)
    y = rng.normal(size=(20, 3))
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(torch.tensor(x), torch.tensor(y)) == pytest.approx(expected, rel=1e-9)


def test_parallel_packing():
    lengths = [(3, 4), (4, 3), (2, 2), (11, 5), (6, 7), (1, 1), (2, 2), (5, 5), (1, 1)]
    pairs = [([1] * a, [2] * b) for a, b in lengths]
    packed = pack_parallel(pairs, max_len=10, min_len=4)
    assert [(len(a), len(b)) for a, b in packed] == [(9, 9), (9, 10), (6, 6)]
    # the reference keeps a short final pair; the default checks it like the others
    short_tail = pairs + [([1] * 9, [2] * 9), ([1] * 3, [2] * 2)]
    assert [(len(a), len(b)) for a, b in pack_parallel(short_tail, max_len=10, min_len=4)][-1] == (9, 9)
    assert [(len(a), len(b)) for a, b in pack_parallel(short_tail, max_len=10, min_len=4,
                                                        check_last=False)][-1] == (3, 2)


@pytest.fixture(scope="module")
def llama():
    import transformers as tf

    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=60, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    return tf.LlamaForCausalLM(config).eval()


def test_layer_states_are_raw_block_outputs(llama):
    ids = torch.randint(0, 60, (9,), generator=torch.Generator().manual_seed(2))
    states, grads = layer_states(llama, ids)
    with torch.no_grad():
        out = llama(ids.unsqueeze(0), output_hidden_states=True)
    assert states.shape == (4, 9, 16)
    for i in range(3):  # hidden_states[0..2] are block inputs / raw outputs
        assert torch.allclose(states[i], out.hidden_states[i][0], atol=1e-6)
    # hidden_states[-1] is final-normed in transformers 5; ours is the raw last block output
    assert torch.allclose(llama.model.norm(states[3]), out.hidden_states[3][0], atol=1e-5)
    assert not torch.allclose(states[3], out.hidden_states[3][0], atol=1e-3)
    loss = llama(ids.unsqueeze(0), labels=ids.unsqueeze(0)).loss
    loss.backward()
    for name, p in llama.named_parameters():
        assert torch.allclose(grads[name], p.grad, atol=1e-6), name
    llama.zero_grad()


def test_analyze_parallel_on_any_causal_lm(llama):
    g = torch.Generator().manual_seed(3)
    same = [(x, x.clone()) for x in (torch.randint(1, 30, (7,), generator=g) for _ in range(4))]
    result = analyze_parallel(llama, same, mode="position")
    means = result.layer_means()
    assert means["hidden_cos"] == pytest.approx([1.0] * 4, abs=1e-5)
    assert result.mean_block_gradient_cosine() == pytest.approx(1.0, abs=1e-5)
    types, matrix = result.gradient_matrix()
    assert "self_attn.q_proj.weight" in types and len(matrix[0]) == 3
    shifted = [(x, x + 30) for x, _ in same]  # a "clone": disjoint embedding rows
    other = analyze_parallel(llama, shifted, mode="matching")
    assert other.layer_means()["hidden_cos"][0] < 0.9
    with pytest.raises(DataError, match="input 1: position-wise similarity needs equal lengths"):
        analyze_parallel(llama, [(same[0][0], same[0][0][:5])], mode="position")


def test_clone_embedding_similarity():
    import transformers as tf

    from xlt.analysis import clone_embedding_similarity

    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=20, n_positions=8, n_embd=6, n_layer=1, n_head=2,
                                             tie_word_embeddings=False))
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        emb[13] = 2 * emb[3]          # clone of id 3: same direction
        emb[15] = -emb[5]             # clone of id 5: opposite
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[3, 5]] = True
    got = clone_embedding_similarity(model, 10, 1, mask)
    assert got["input_clones"] == pytest.approx(0.0, abs=1e-6)  # mean of +1 and -1
    e = emb.detach().double()
    e = e / e.norm(dim=-1, keepdim=True)
    assert got["input_all_pairs"] == pytest.approx(float((e @ e.T).mean()), abs=1e-6)
    assert "output_clones" in got


@pytest.mark.slow
def test_cli_cloned_and_real_pairs(tmp_path, xlt_cli, capsys):
    import transformers as tf

    from _pretrain_helpers import make_lines, small_tokenizer
    from xlt.formats import ParallelPair, write_jsonl
    from xlt.io import write_json
    from xlt.pretrain import LanguageMap

    tokenizer = small_tokenizer()
    model_dir = tmp_path / "m"
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=2 * len(tokenizer), n_positions=64, n_embd=16, n_layer=2,
                                     n_head=2)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_json(model_dir / "languages.json", LanguageMap.cloned(len(tokenizer), 1).to_dict())
    text = tmp_path / "text.txt"
    text.write_text("\n".join(make_lines(12, seed=4)) + "\n", encoding="utf-8")
    out = tmp_path / "sim"
    result = xlt_cli("analyze", "similarity", "--model", model_dir, model_dir, "--label", "a", "b",
                     "--text", text, "--n_inputs", "5", "--output_dir", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert {"similarity.json", "layers.csv", "gradients.csv", "similarity_by_layer.png",
            "gradient_heatmap_a.png", "gradient_heatmap_b.png"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "similarity.json").read_text())
    assert report["a"]["n_inputs"] == 5 and len(report["a"]["hidden_cos"]) == 3
    assert report["a"]["hidden_cos"] == report["b"]["hidden_cos"]
    # GPT-2 ties its head to the input embeddings by default: only the input figures exist
    assert set(report["a"]["clone_embedding_cos"]) == {"input_clones", "input_all_pairs"}

    from xlt.cli import main

    lines = make_lines(6, seed=7)
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [ParallelPair(src_lang="qaa", tgt_lang="qab", src=a, tgt=b + " " + a)
                        for a, b in zip(lines, reversed(lines))])
    assert main(["analyze", "similarity", "--model", str(model_dir), "--pairs", str(pairs),
                 "--output_dir", str(tmp_path / "sim2"), "--no_gradients"]) == 0
    assert json.loads((tmp_path / "sim2" / "similarity.json").read_text())["m"]["mode"] == "matching"
    assert main(["analyze", "similarity", "--model", str(model_dir), "--pairs", str(pairs), "--mode",
                 "position", "--output_dir", str(tmp_path / "sim3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "position-wise similarity needs equal lengths" in err
    assert not (tmp_path / "sim3").exists()
