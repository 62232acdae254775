"""xlt merge layer-swap: every tensor traced to its expert.

The experts are a tiny saved model with a constant added to every weight (task expert +1,
language expert +2), so each tensor of the result tells where it came from: ``result - base`` is
1 (task), 2 (language) or ``1 + w`` (a blend with language weight w). The expected source of each
parameter is derived here from the loaded model's module tree (which block owns it, embeddings,
final norm, head), not from the code under test's key parsing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

TASK_OFFSET, LANGUAGE_OFFSET = 1.0, 2.0


def _expert(base_dir: Path, out: Path, offset: float) -> Path:
    """The base model with ``offset`` added to every floating-point parameter, saved with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(offset)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def experts(request, tmp_path_factory, tiny_model_dir):
    base = tiny_model_dir(request.param)
    root = tmp_path_factory.mktemp(f"swap-{request.param}")
    return {"arch": request.param, "base": base, "root": root,
            "task": _expert(base, root / "task", TASK_OFFSET),
            "language": _expert(base, root / "language", LANGUAGE_OFFSET)}


def _expected_offsets(model, bottom: int, top: int, transition: int = 0, blend: float = 0.5) -> dict[str, float]:
    """Parameter name -> the offset it must carry, from the module tree: blocks by position,
    input embeddings with block 0, final norm and head with the last block."""
    from xlt.models import decoder_blocks

    blocks = decoder_blocks(model)
    n = len(blocks)
    owner = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}

    def block_offset(i: int) -> float:
        if i < bottom or i >= n - top:
            return LANGUAGE_OFFSET
        if (bottom > 0 and i < bottom + transition) or (top > 0 and i >= n - top - transition):
            return TASK_OFFSET + blend * (LANGUAGE_OFFSET - TASK_OFFSET)
        return TASK_OFFSET

    embedding_ids = {id(p) for p in model.get_input_embeddings().parameters()}
    head_ids = {id(p) for p in model.get_output_embeddings().parameters()}
    expected = {}
    for name, p in model.named_parameters():
        if id(p) in owner:
            expected[name] = block_offset(owner[id(p)])
        elif id(p) in embedding_ids:
            expected[name] = LANGUAGE_OFFSET if bottom > 0 else TASK_OFFSET
        else:  # final norm and the untied head sit after the last block
            assert id(p) in head_ids or "norm" in name, name
            expected[name] = LANGUAGE_OFFSET if top > 0 else TASK_OFFSET
    return expected


def _offsets(result_dir: Path, base_dir: Path) -> dict[str, float]:
    """Parameter name -> the constant ``result - base`` (asserting it is constant)."""
    from transformers import AutoModelForCausalLM

    result = dict(AutoModelForCausalLM.from_pretrained(result_dir).named_parameters())
    base = dict(AutoModelForCausalLM.from_pretrained(base_dir).named_parameters())
    offsets = {}
    for name, p in result.items():
        diff = (p.detach() - base[name].detach()).flatten()
        assert torch.allclose(diff, diff[0].expand_as(diff), atol=1e-5), name
        offsets[name] = float(diff[0])
    return offsets


@pytest.mark.parametrize("bottom,top", [(1, 1), (2, 0), (0, 1)])
def test_every_tensor_comes_from_the_expected_expert(experts, bottom, top, xlt_cli):
    from transformers import AutoModelForCausalLM

    out = experts["root"] / f"swap-{bottom}-{top}"
    proc = xlt_cli("merge", "layer-swap", "--task-expert", experts["task"], "--language-expert",
                   experts["language"], "--bottom", bottom, "--top", top, "--out", out)
    assert proc.returncode == 0, proc.stderr
    expected = _expected_offsets(AutoModelForCausalLM.from_pretrained(out), bottom, top)
    got = _offsets(out, experts["base"])
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-5), name
    # a normal HF model directory: config, tokenizer and weights, loadable and usable
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "model.safetensors").is_file()
    assert (out / "generation_config.json").is_file()
    report = json.loads((out / "merge_report.json").read_text())
    assert report["bottom"] == bottom and report["top"] == top and report["num_layers"] == 4
    assert report["blocks"] == ["language" if i < bottom or i >= 4 - top else "task" for i in range(4)]
    assert report["outer_tensors"]["lm_head.weight"] == ("language" if top else "task")
    assert report["outer_tensors"]["model.embed_tokens.weight"] == ("language" if bottom else "task")
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


def test_blend_at_the_seams(experts):
    from transformers import AutoModelForCausalLM

    from xlt.merge.layer_swap import layer_swap_directories

    out = experts["root"] / "blend"
    layer_swap_directories(experts["task"], experts["language"], out, bottom=1, top=1, transition=1, blend=0.25)
    expected = _expected_offsets(AutoModelForCausalLM.from_pretrained(out), 1, 1, transition=1, blend=0.25)
    assert sorted(set(expected.values())) == [1.25, 2.0]  # blocks 1 and 2 blended, 0 and 3 swapped
    got = _offsets(out, experts["base"])
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-5), name


def test_degenerate_swaps_are_the_experts_bit_for_bit(experts):
    """J = K = 0 gives the task expert; J = L the language expert (embeddings and head follow)."""
    from safetensors.torch import load_file

    from xlt.merge.layer_swap import layer_swap_directories

    for bottom, source in ((0, "task"), (4, "language")):
        out = experts["root"] / f"degenerate-{bottom}"
        layer_swap_directories(experts["task"], experts["language"], out, bottom=bottom, top=0)
        got = load_file(out / "model.safetensors")
        want = load_file(experts[source] / "model.safetensors")
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_sharded_output_loads_like_the_single_file(experts):
    from transformers import AutoModelForCausalLM

    from xlt.merge.layer_swap import layer_swap_directories

    one, sharded = experts["root"] / "one", experts["root"] / "sharded"
    for out, size in ((one, None), (sharded, 20_000)):
        layer_swap_directories(experts["task"], experts["language"], out, bottom=1, top=1, max_shard_bytes=size)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    a = dict(AutoModelForCausalLM.from_pretrained(one).named_parameters())
    b = dict(AutoModelForCausalLM.from_pretrained(sharded).named_parameters())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_language_weights_by_hand():
    from xlt.merge.layer_swap import language_weights

    assert language_weights(8, 2, 1) == [1, 1, 0, 0, 0, 0, 0, 1]
    assert language_weights(8, 2, 1, transition=2, blend=0.3) == [1, 1, 0.3, 0.3, 0, 0.3, 0.3, 1]
    assert language_weights(8, 0, 2, transition=1, blend=0.5) == [0, 0, 0, 0, 0, 0.5, 1, 1]  # no bottom seam


@pytest.mark.parametrize("kwargs,message", [
    (dict(bottom=3, top=2), "exceed the model's 4 blocks"),
    (dict(bottom=1, top=1, transition=2), "transition zones"),
    (dict(bottom=-1, top=1), "--bottom must be an integer >= 0"),
    (dict(bottom=1, top=1, blend=1.5), "--blend must be a number in [0, 1]"),
])
def test_impossible_zones_are_refused(kwargs, message):
    from xlt.errors import ConfigError
    from xlt.merge.layer_swap import language_weights

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        language_weights(4, **kwargs)


def test_mismatched_experts_are_one_line_errors(experts, tiny_model_dir, tmp_path, xlt_cli):
    other = "qwen2" if experts["arch"] == "llama" else "llama"
    cases = [
        (tiny_model_dir(other), "architectures differ"),
        (experts["root"] / "deeper", "block counts differ"),
    ]
    from xlt.testing import save_tiny_model, train_bpe_tokenizer

    if not (experts["root"] / "deeper").exists():
        save_tiny_model(experts["arch"], experts["root"] / "deeper", tokenizer=train_bpe_tokenizer(), num_layers=6)
    for language, message in cases:
        proc = xlt_cli("merge", "layer-swap", "--task-expert", experts["task"], "--language-expert", language,
                       "--bottom", 1, "--top", 1, "--out", tmp_path / "x")
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert not (tmp_path / "x").exists()


def test_model_and_adapter_cannot_be_swapped(experts, tmp_path):
    from xlt.errors import ModelError
    from xlt.merge.layer_swap import layer_swap_directories

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(ModelError, match="is a model directory and the language expert .* is a PEFT adapter"):
        layer_swap_directories(experts["task"], adapter, tmp_path / "out", bottom=1, top=1)


def test_shape_mismatch_names_the_tensor():
    from xlt.errors import ModelError
    from xlt.merge.layer_swap import layer_swap

    task = {"model.layers.0.w": torch.zeros(2, 3), "model.layers.1.w": torch.zeros(2, 3)}
    language = {"model.layers.0.w": torch.zeros(2, 3), "model.layers.1.w": torch.zeros(3, 3)}
    with pytest.raises(ModelError, match=r"shapes differ for model.layers.1.w: \(2, 3\)"):
        layer_swap(task, language, bottom=1, top=0)


# --------------------------------------------------------------------------------------------
# LoRA adapters


def _lora(base_dir, out, seed, r, alpha):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj", "down_proj"],
                                      task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.save_pretrained(out)
    return out


def _dense_updates(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """module -> alpha / r * B @ A, straight from the adapter files (no xlt code)."""
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    updates = {}
    for key, A in tensors.items():
        if key.endswith(".lora_A.weight"):
            module = key[: -len(".lora_A.weight")]
            B = tensors[module + ".lora_B.weight"]
            updates[module] = config["lora_alpha"] / config["r"] * (B.double() @ A.double())
    return updates


def test_lora_adapters_swap_per_layer(tiny_llama_dir, tmp_path, xlt_cli):
    """Ranks and alphas differ between the experts; each module's update must be its expert's,
    and a blended module the weighted sum of both, as PEFT applies the written adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    task = _lora(tiny_llama_dir, tmp_path / "task", 1, r=4, alpha=8)
    language = _lora(tiny_llama_dir, tmp_path / "language", 2, r=2, alpha=6)
    out = tmp_path / "swapped"
    proc = xlt_cli("merge", "layer-swap", "--task-expert", task, "--language-expert", language,
                   "--bottom", 1, "--top", 1, "--blend", 0.25, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "wrote the layer-swapped adapter" in proc.stdout
    task_dw, language_dw = _dense_updates(task), _dense_updates(language)
    base = dict(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).named_parameters())
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out).merge_and_unload()
    weights = {0: 1.0, 1: 0.25, 2: 0.25, 3: 1.0}  # blocks 0 and 3 swapped, 1 and 2 transition
    checked = 0
    for module, dw in task_dw.items():
        layer = int(module.split(".layers.")[1].split(".")[0])
        w = weights[layer]
        expected = (1 - w) * dw + w * language_dw[module]
        name = module[len("base_model.model."):] + ".weight"
        got = dict(merged.named_parameters())[name].detach().double() - base[name].detach().double()
        assert torch.allclose(got, expected, atol=1e-5), module
        checked += 1
    assert checked == 4 * 3


def test_language_weights_of_adapter_keys_match_model_keys():
    """The adapter's ``base_model.model.`` prefix does not change which block a tensor is in."""
    from xlt.merge.layer_swap import block_index

    assert block_index("base_model.model.model.layers.3.mlp.down_proj.lora_A.weight") == \
        ("base_model.model.model.layers", 3)
    assert block_index("transformer.h.11.attn.c_attn.weight") == ("transformer.h", 11)
    assert block_index("model.norm.weight") is None


def test_transition_alone_implies_half_blend(experts, xlt_cli):
    out = experts["root"] / "transition-only"
    proc = xlt_cli("merge", "layer-swap", "--task-expert", experts["task"], "--language-expert",
                   experts["language"], "--bottom", 1, "--top", 0, "--transition", 1, "--out", out)
    assert proc.returncode == 0, proc.stderr
    got = _offsets(out, experts["base"])
    assert got["model.layers.1.mlp.up_proj.weight"] == pytest.approx(1.5, abs=1e-5)
    assert got["model.layers.2.mlp.up_proj.weight"] == pytest.approx(1.0, abs=1e-5)


def test_default_shard_size_is_five_gigabytes():
    from xlt.merge.checkpoints import DEFAULT_SHARD_BYTES

    assert DEFAULT_SHARD_BYTES == 5 * 1024 ** 3


def test_tied_embeddings_follow_the_input_side(tiny_model_dir, tmp_path, xlt_cli):
    base = tiny_model_dir("gpt2")
    task, language = _expert(base, tmp_path / "t", TASK_OFFSET), _expert(base, tmp_path / "l", LANGUAGE_OFFSET)
    out = tmp_path / "swap"
    proc = xlt_cli("merge", "layer-swap", "--task-expert", task, "--language-expert", language,
                   "--bottom", 0, "--top", 1, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "tied embeddings" in proc.stdout and "(task expert)" in proc.stdout
    got = _offsets(out, base)
    assert got["transformer.wte.weight"] == pytest.approx(TASK_OFFSET, abs=1e-5)
    assert got["transformer.ln_f.weight"] == pytest.approx(LANGUAGE_OFFSET, abs=1e-5)
    assert got["transformer.h.3.mlp.c_fc.weight"] == pytest.approx(LANGUAGE_OFFSET, abs=1e-5)


def test_encoder_decoder_models_are_refused(tiny_model_dir, tmp_path):
    from xlt.errors import ModelError
    from xlt.merge.layer_swap import layer_swap_directories

    seq2seq = tiny_model_dir("m2m100")
    with pytest.raises(ModelError, match="encoder-decoder"):
        layer_swap_directories(seq2seq, seq2seq, tmp_path / "out", bottom=1, top=0)
    assert not (tmp_path / "out").exists()


def test_ia3_vectors_are_taken_per_block(tiny_llama_dir, tmp_path):
    from peft import IA3Config, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from xlt.merge.layer_swap import layer_swap_directories

    dirs = []
    for name, value in (("task", 1.5), ("language", 3.0)):
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), IA3Config(task_type="CAUSAL_LM"))
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "ia3_l" in pname:
                    p.fill_(value)
        model.save_pretrained(tmp_path / name)
        dirs.append(tmp_path / name)
    layer_swap_directories(*dirs, tmp_path / "out", bottom=1, top=0, transition=1, blend=0.5)
    tensors = load_file(tmp_path / "out" / "adapter_model.safetensors")
    for key, value in tensors.items():
        layer = int(key.split(".layers.")[1].split(".")[0])
        assert torch.all(value == {0: 3.0, 1: 2.25}.get(layer, 1.5)), key


def test_num_layers_counts_blocks_the_adapters_skip(tiny_llama_dir, tmp_path):
    """Adapters on blocks 0-1 of a 4-block model: --top 2 swaps blocks 2-3, which they do not touch."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from xlt.merge.adapters import lora_modules, read_adapter
    from xlt.merge.layer_swap import layer_swap_adapters

    dirs = []
    for seed in (1, 2):
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                               LoraConfig(r=2, lora_alpha=2, target_modules=["q_proj"], layers_to_transform=[0, 1],
                                          task_type="CAUSAL_LM", init_lora_weights=False))
        model.save_pretrained(tmp_path / str(seed))
        dirs.append(tmp_path / str(seed))
    task = lora_modules(read_adapter(dirs[0]))
    language = lora_modules(read_adapter(dirs[1]))
    full = lora_modules(layer_swap_adapters(*dirs, bottom=0, top=2, num_layers=4).adapter)
    short = lora_modules(layer_swap_adapters(*dirs, bottom=0, top=2).adapter)
    for name in task:
        assert torch.equal(full[name].B @ full[name].A, task[name].B @ task[name].A)
        assert torch.equal(short[name].B @ short[name].A, language[name].B @ language[name].A)


def test_result_has_the_task_experts_dtype():
    from xlt.merge.layer_swap import layer_swap

    task = {f"model.layers.{i}.w": torch.full((2,), 1.0, dtype=torch.bfloat16) for i in range(3)}
    language = {f"model.layers.{i}.w": torch.full((2,), 2.0, dtype=torch.float32) for i in range(3)}
    out = layer_swap(task, language, bottom=1, top=0, transition=1, blend=0.5)
    assert {t.dtype for t in out.values()} == {torch.bfloat16}
    assert [float(out[f"model.layers.{i}.w"][0]) for i in range(3)] == [2.0, 1.5, 1.0]


def test_modules_to_save_copies_follow_the_outer_rule():
    from xlt.merge.layer_swap import layer_swap_adapters

    def adapter(value):
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 1, "lora_alpha": 1,
                  "target_modules": ["q_proj"], "base_model_name_or_path": None}
        tensors = {f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_{x}.weight": torch.full((1, 1), value)
                   for i in range(2) for x in "AB"}
        tensors["base_model.model.model.embed_tokens.modules_to_save.weight"] = torch.full((3, 1), value)
        tensors["base_model.model.lm_head.modules_to_save.weight"] = torch.full((3, 1), value)
        return config, tensors

    out = layer_swap_adapters(adapter(1.0), adapter(2.0), bottom=1, top=0).adapter.tensors
    assert torch.all(out["base_model.model.model.embed_tokens.modules_to_save.weight"] == 2.0)
    assert torch.all(out["base_model.model.lm_head.modules_to_save.weight"] == 1.0)
    out = layer_swap_adapters(adapter(1.0), adapter(2.0), bottom=1, top=0, outer="task").adapter.tensors
    assert torch.all(out["base_model.model.model.embed_tokens.modules_to_save.weight"] == 1.0)
    out = layer_swap_adapters(adapter(1.0), adapter(2.0), bottom=1, top=0, outer="language").adapter.tensors
    assert torch.all(out["base_model.model.lm_head.modules_to_save.weight"] == 2.0)


def _call_sides(model) -> dict[str, str]:
    """Parameter name -> ``"input"`` / ``"output"`` for tensors outside the blocks, found by running
    the model: a module that runs before block 0 is on the input side, after the last block on the
    output side (no name matching, so it holds for any architecture)."""
    from xlt.models import decoder_blocks

    blocks = decoder_blocks(model)
    in_blocks = {id(m) for block in blocks for m in block.modules()}
    order: list = []
    handles = [m.register_forward_hook(lambda mod, a, o, name=name: order.append(name))
               for name, m in model.named_modules() if id(m) not in in_blocks and not list(m.children())]
    handles.append(blocks[0].register_forward_hook(lambda *a: order.append("<block 0>")))
    handles.append(blocks[-1].register_forward_hook(lambda *a: order.append("<last block>")))
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 5, 6, 7]]))
    for handle in handles:
        handle.remove()
    first, last = order.index("<block 0>"), order.index("<last block>")
    sides = {}
    for name, module in model.named_modules():
        if name in order:
            for pname, _ in module.named_parameters(recurse=False):
                at = order.index(name)
                sides[f"{name}.{pname}"] = "input" if at < first else "output" if at > last else "?"
    return sides


@pytest.mark.parametrize("arch", ["mistral", "gemma", "gpt2", "xglm", "bloom"])
def test_every_fixture_architecture_swaps(arch, tiny_model_dir, tmp_path):
    """Bottom 1 block from the language expert, the rest from the task expert, on each decoder-only
    fixture architecture (llama and qwen2 run every test above): each tensor's source is traced to
    its block, or to the side of the blocks it runs on (embeddings and their norm or positions with
    block 0, final norm and head with the last block)."""
    from transformers import AutoModelForCausalLM

    from xlt.merge.layer_swap import layer_swap_directories
    from xlt.models import decoder_blocks

    base = tiny_model_dir(arch)
    task, language = _expert(base, tmp_path / "task", TASK_OFFSET), _expert(base, tmp_path / "lang", LANGUAGE_OFFSET)
    out = tmp_path / "swapped"
    layer_swap_directories(task, language, out, bottom=1, top=0)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    owner = {id(p): i for i, block in enumerate(decoder_blocks(model)) for p in block.parameters()}
    sides = _call_sides(model)
    got = _offsets(out, base)
    assert set(got) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        if id(p) in owner:
            want = LANGUAGE_OFFSET if owner[id(p)] == 0 else TASK_OFFSET
        else:
            assert sides.get(name) in ("input", "output"), (arch, name)
            want = LANGUAGE_OFFSET if sides[name] == "input" else TASK_OFFSET
        assert got[name] == pytest.approx(want, abs=1e-5), (arch, name)
