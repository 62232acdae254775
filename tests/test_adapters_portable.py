"""Adapters xlt writes load anywhere: with PEFT's own ``AutoPeftModelForCausalLM`` from another
working directory, and as ``--model`` (the base read from ``adapter_config.json``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from xlt.errors import ModelError
from xlt.models import load_model, load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = [[1, 5, 9, 14, 3, 7], [2, 8, 4, 4, 11, 6]]


def _seeded_peft(base: str, config, seed: int, out: Path, *, offset: float = 0.0) -> Path:
    """A PEFT adapter of ``config`` on ``base`` (a path as typed) with seeded non-trivial weights."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "lora_" in name or "ia3_l" in name:
                p.copy_(offset + 0.2 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out)
    return out


def _logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(IDS)).logits


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_llama_dir, xlt_cli_module):
    """Every kind of adapter xlt writes, each made with the base given as the relative path
    ``base`` from the working directory ``work``."""
    from peft import IA3Config, LoraConfig

    work = tmp_path_factory.mktemp("work")
    shutil.copytree(tiny_llama_dir, work / "base")
    train = work / "train.jsonl"
    train.write_text("".join(json.dumps({"lang": "en", "prompt": f"the cat {i} is", "completion": " good"}) + "\n"
                             for i in range(8)), encoding="utf-8")
    out = {"work": work}
    proc = xlt_cli_module("train", "sft", "--model", "base", "--train_file", "train.jsonl",
                          "--output_dir", "sft", "--max_steps", "2", "--learning_rate", "0.05", "--per_device_train_batch_size", "2",
                          "--lora_r", "2", cwd=work)
    assert proc.returncode == 0, proc.stderr
    out["train sft (LoRA)"] = work / "sft"

    import os

    before = os.getcwd()
    os.chdir(work)  # the inputs of the merges name their base as typed: "base"
    try:
        lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        for name, seed in (("a", 1), ("b", 2), ("c", 3)):
            _seeded_peft("base", lora, seed, work / f"lora_{name}")
        ia3 = IA3Config(task_type="CAUSAL_LM")
        for name, seed in (("a", 4), ("b", 5), ("c", 6)):
            _seeded_peft("base", ia3, seed, work / f"ia3_{name}", offset=1.0)
    finally:
        os.chdir(before)
    assert json.loads((work / "lora_a" / "adapter_config.json").read_text())["base_model_name_or_path"] == "base"
    for label, args in {
        "merge linear (LoRA)": ["merge", "linear", "--adapters", "lora_a", "lora_b", "--out", "linear"],
        "merge task-arithmetic (LoRA)": ["merge", "task-arithmetic", "--adapters", "lora_a", "lora_b",
                                         "--out", "ta"],
        "merge adamergex (LoRA)": ["merge", "adamergex", "--task", "lora_a", "--ref-target", "lora_b",
                                   "--ref-source", "lora_c", "--t", "0.5", "--out", "amx"],
        "merge adamergex ((IA)^3)": ["merge", "adamergex", "--task", "ia3_a", "--ref-target", "ia3_b",
                                     "--ref-source", "ia3_c", "--t", "0.5", "--out", "amx_ia3"],
    }.items():
        proc = xlt_cli_module(*args, cwd=work)
        assert proc.returncode == 0, proc.stderr
        out[label] = work / args[args.index("--out") + 1]
    return out


@pytest.fixture(scope="module")
def xlt_cli_module():
    from conftest import run_xlt

    return run_xlt


KINDS = ["train sft (LoRA)", "merge linear (LoRA)", "merge task-arithmetic (LoRA)",
         "merge adamergex (LoRA)", "merge adamergex ((IA)^3)"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_peft_loads_every_adapter_kind_from_another_directory(kind, written, tmp_path, monkeypatch):
    """``AutoPeftModelForCausalLM`` (offline) finds the base from anywhere and gives the same
    logits as xlt loading base + adapter explicitly."""
    from peft import AutoPeftModelForCausalLM

    adapter = written[kind]
    recorded = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(recorded).is_absolute() and Path(recorded) == (written["work"] / "base").resolve()
    monkeypatch.chdir(tmp_path)  # another working directory, where "base" does not exist
    theirs = AutoPeftModelForCausalLM.from_pretrained(str(adapter))
    ours = load_model(written["work"] / "base", dtype="float32", adapter=adapter)
    base = load_model(written["work"] / "base", dtype="float32")
    assert torch.allclose(_logits(theirs), _logits(ours), atol=1e-6)
    assert not torch.allclose(_logits(base), _logits(ours), atol=1e-4)  # the adapter does something


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["train sft (LoRA)", "merge adamergex ((IA)^3)"])
def test_model_given_an_adapter_directory_loads_its_base(kind, written, tmp_path, monkeypatch):
    """``load_model(adapter_dir)`` == ``load_model(base, adapter=adapter_dir)``, and the tokenizer
    comes from the adapter when it has one, else from the base."""
    adapter = written[kind]
    monkeypatch.chdir(tmp_path)
    as_model = load_model(adapter, dtype="float32")
    explicit = load_model(written["work"] / "base", dtype="float32", adapter=adapter)
    assert torch.equal(_logits(as_model), _logits(explicit))
    tokenizer = load_tokenizer(adapter)
    assert tokenizer("the cat is good")["input_ids"] == load_tokenizer(written["work"] / "base")("the cat is good")["input_ids"]
    with pytest.raises(ModelError, match="is a PEFT adapter"):
        load_model(adapter, adapter=adapter)


@pytest.mark.slow
def test_eval_icl_scores_equal_with_adapter_as_model(written, tmp_path):
    """Through the CLI: ``--model ADAPTER`` gives every item the log-likelihoods that
    ``--model BASE --adapter ADAPTER`` gives (and the base alone does not)."""
    from conftest import run_xlt

    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"lang": "en", "context": f"the cat {i} is", "choices": [" good", " bad"],
                                         "label": i % 2}) + "\n" for i in range(6)), encoding="utf-8")
    adapter, base = written["train sft (LoRA)"], written["work"] / "base"
    samples = {}
    for name, model_args in (("as_model", ["--model", str(adapter)]),
                             ("explicit", ["--model", str(base), "--adapter", str(adapter)]),
                             ("base", ["--model", str(base)])):
        log = tmp_path / f"{name}.jsonl"
        proc = run_xlt("eval", "icl", *model_args, "--task", "choice", "--test", str(items), "--shots", "0",
                       "--device", "cpu", "--log-samples", str(log), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        samples[name] = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(samples["as_model"]) == 6
    assert samples["as_model"] == samples["explicit"]
    assert samples["as_model"] != samples["base"]


@pytest.mark.slow
def test_training_refuses_an_adapter_as_model(written, xlt_cli_module):
    """A new adapter trained on ``--model ADAPTER`` would silently drop the old one: refused."""
    work = written["work"]
    proc = xlt_cli_module("train", "sft", "--model", "sft", "--train_file", "train.jsonl",
                          "--output_dir", "sft-on-sft", "--max_steps", "1", cwd=work)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "is a PEFT adapter" in proc.stderr
    assert not (work / "sft-on-sft").exists()


def test_recorded_base_is_absolute_for_a_local_directory_only(tmp_path, monkeypatch):
    from xlt.models import recorded_base

    (tmp_path / "runs" / "base").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert recorded_base("runs/base") == str(tmp_path.resolve() / "runs" / "base")
    assert recorded_base("facebook/xglm-564m") == "facebook/xglm-564m"
