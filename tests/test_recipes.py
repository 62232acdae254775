"""The paper recipes (examples/recipes/*.yaml) against their tables in docs/recipes.md.

The tables are the single source of truth: every option a recipe sets is in its table with the
same value, and a 2-step run of every recipe through the real command line (tiny models and data;
model, data and output paths, the step count, the options that need a GPU and the few that depend
on the model's size overridden) writes exactly the table's values for every other option.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "examples" / "recipes"
DOC = ROOT / "docs" / "recipes.md"

#: options that need a GPU (or DeepSpeed): left out of the tiny runs
GPU_ONLY = {"bf16", "fp16", "tf32", "deepspeed", "attn_implementation"}
FLORES12 = ["eng_Latn", "fra_Latn", "ita_Latn", "deu_Latn", "nld_Latn", "zho_Hans", "jpn_Jpan", "kor_Hang",
            "oci_Latn", "ory_Orya", "snd_Arab", "wol_Latn"]


def doc_tables() -> dict[str, dict]:
    """``{recipe file name: {option: value}}`` from the "ours" column of each recipe's table."""
    tables: dict[str, dict] = {}
    current = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^### `examples/recipes/([^`]+)`", line)
        if heading:
            current = tables.setdefault(heading.group(1), {})
            continue
        row = re.match(r"^\| `([a-z0-9_]+)` \|[^|]*\| `([^`]*)` \|", line)
        if row and current is not None:
            assert row.group(1) not in current, f"{row.group(1)} twice in the table of a recipe"
            current[row.group(1)] = yaml.safe_load(row.group(2))
    return tables


def test_every_recipe_has_a_table_that_lists_each_of_its_options():
    tables = doc_tables()
    files = sorted(p.name for p in RECIPES.glob("*.yaml"))
    assert sorted(tables) == files and len(files) == 6
    for name in files:
        recipe = yaml.safe_load((RECIPES / name).read_text(encoding="utf-8"))
        assert recipe == tables[name], name
        for line in (RECIPES / name).read_text(encoding="utf-8").splitlines():  # commands it shows
            for path in re.findall(r"--config (\S+)", line):
                assert (ROOT / path).is_file(), (name, path)


def _run(*argv) -> None:
    from xlt.cli import main

    status = main([str(a) for a in argv])
    assert status == 0, argv


def _recipe_without_gpu_options(name: str, tmp: Path) -> Path:
    values = yaml.safe_load((RECIPES / name).read_text(encoding="utf-8"))
    path = tmp / name
    path.write_text(yaml.safe_dump({k: v for k, v in values.items() if k not in GPU_ONLY}))
    return path


def _check(name: str, written: dict, overridden: set[str]) -> None:
    table = doc_tables()[name]
    checked = [k for k in table if k not in overridden | GPU_ONLY]
    assert len(checked) >= 15, name
    for key in checked:
        assert written[key] == table[key], (name, key, written[key], table[key])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny models and data in the formats each recipe reads."""
    from _align_helpers import tiny_texts

    from xlt.testing import save_tiny_model, train_bpe_tokenizer

    root = tmp_path_factory.mktemp("recipes")
    tokenizer = train_bpe_tokenizer()
    for arch in ("llama", "qwen2", "xglm"):
        save_tiny_model(arch, root / arch, tokenizer=tokenizer, num_layers=4)
    save_tiny_model("m2m100", root / "m2m100", languages=FLORES12, num_layers=4)
    tasks, pairs = tiny_texts(8)
    with open(root / "mid.jsonl", "w") as f:
        for t, p in zip(tasks, pairs):
            f.write(json.dumps({"text_parallel_0": p.candidate, "text_parallel_1": p.anchor,
                                "prefix": t.prompt, "text": t.completion + "</s>"}) + "\n")
    with open(root / "task.jsonl", "w") as f:
        for t in tasks:
            f.write(json.dumps({"lang": "en", "prompt": t.prompt, "completion": t.completion}) + "\n")
    with open(root / "dev.jsonl", "w") as f:
        for t in tasks[:4]:
            f.write(json.dumps({"lang": "fr", "prompt": t.prompt, "completion": t.completion}) + "\n")
    words = " ".join(p.anchor for p in pairs)
    (root / "wiki.en.txt").write_text((words + "\n") * 4)
    (root / "wiki.fr.txt").write_text((words.upper() + "\n") * 4)
    bactrian = root / "bactrian"
    bactrian.mkdir()
    for lang in ("en", "zh"):
        items = [{"id": f"id-{i}", "instruction": f"[{lang}] {t.prompt}", "input": "", "output": t.completion}
                 for i, t in enumerate(tasks)]
        (bactrian / f"{lang}.json").write_text(json.dumps(items))
    with open(root / "flores.jsonl", "w") as f:
        for k, p in enumerate(pairs):
            src, tgt = FLORES12[k % 12], FLORES12[(k + 1) % 12]
            f.write(json.dumps({"src_lang": src, "tgt_lang": tgt, "src": p.anchor, "tgt": p.candidate}) + "\n")
    (root / "books.txt").write_text("\n".join(t.prompt.replace("\n", " ") + t.completion for t in tasks * 8) + "\n")
    return root


STEPS = ["--max_steps", "2", "--disable_tqdm", "true", "--use_cpu", "true", "--report_to", "none"]


@pytest.mark.slow
@pytest.mark.parametrize("name,model", [("mid-align-llama3-8b.yaml", "llama"), ("mid-align-qwen2.5-7b.yaml", "qwen2")])
def test_mid_align_recipes(tiny, tmp_path, name, model):
    out = tmp_path / "out"
    _run("train", "mid-align", "--config", _recipe_without_gpu_options(name, tmp_path), "--model", tiny / model,
         "--train_file", tiny / "mid.jsonl", "--eval_file", tiny / "mid.jsonl", "--output_dir", out,
         "--dtype", "float32", "--alignment_layer", "2", *STEPS)
    written = json.loads((out / "train_config.json").read_text())
    _check(name, written, {"model", "train_file", "eval_file", "output_dir", "dtype", "alignment_layer"})


@pytest.mark.slow
def test_afp_recipe_with_its_data_step(tiny, tmp_path):
    data = tmp_path / "afp"
    _run("data", "afp", "-m", "bilingual", "-l", "en", "zh", "-x", "0.5", "-r", "3.0", "-s", "0",
         "-b", tiny / "bactrian", "-o", data)
    out = tmp_path / "out"
    _run("train", "afp", "--config", _recipe_without_gpu_options("afp-xglm-564m.yaml", tmp_path),
         "--model", tiny / "xglm", "--train_file", data / "AFP.en_zh.X0.5.R3.0.json", "--output_dir", out, *STEPS)
    written = json.loads((out / "train_config.json").read_text())
    _check("afp-xglm-564m.yaml", written, {"model", "train_file", "output_dir", "max_steps"})


@pytest.mark.slow
def test_adamergex_recipe_task_two_reference_adapters_merge_and_t_on_dev(tiny, tmp_path):
    recipe = _recipe_without_gpu_options("adamergex-llama2-7b-lora.yaml", tmp_path)
    for lang in ("en", "fr"):  # the paper's 511 + 1 words; fewer for the tiny text
        _run("data", "reference-lm", "--input", tiny / f"wiki.{lang}.txt", "--lang", lang,
             "--out", tmp_path / f"wiki.{lang}.jsonl", "--prompt-units", "15", "--completion-units", "1")
    runs = {"task-en": tiny / "task.jsonl", "ref-en": tmp_path / "wiki.en.jsonl", "ref-fr": tmp_path / "wiki.fr.jsonl"}
    for out, train in runs.items():
        _run("train", "sft", "--config", recipe, "--model", tiny / "llama", "--train_file", train,
             "--output_dir", tmp_path / out, *STEPS)
        written = json.loads((tmp_path / out / "train_config.json").read_text())
        _check("adamergex-llama2-7b-lora.yaml", written, {"model", "train_file", "output_dir"})
    _run("merge", "adamergex", "--task", tmp_path / "task-en", "--ref-target", tmp_path / "ref-fr",
         "--ref-source", tmp_path / "ref-en", "--t", "auto", "--dev", tiny / "dev.jsonl", "--dev-lang", "fr",
         "--grid", "0,1", "--curve", tmp_path / "curve.json", "--out", tmp_path / "task-fr")
    assert (tmp_path / "task-fr" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "curve.json").is_file()


@pytest.mark.slow
def test_lslo_recipe(tiny, tmp_path):
    out = tmp_path / "out"
    _run("train", "lslo", "--config", _recipe_without_gpu_options("lslo-m2m100-615m.yaml", tmp_path),
         "--model", tiny / "m2m100", "--train_file", tiny / "flores.jsonl", "--output_dir", out,
         "--encoder_directions", "src,tgt", "--decoder_directions", "tgt,tgt", *STEPS)
    written = json.loads((out / "train_config.json").read_text())
    _check("lslo-m2m100-615m.yaml", written,
           {"model", "train_file", "output_dir", "encoder_directions", "decoder_directions"})


@pytest.mark.slow
def test_cloned_languages_recipe(tiny, tmp_path):
    out = tmp_path / "out"
    _run("pretrain", "--config", _recipe_without_gpu_options("cloned-languages-gpt-small.yaml", tmp_path),
         "--corpus", tiny / "books.txt", "--tokenizer", tiny / "llama", "--output_dir", out,
         "--preset", "pico", "--seq_len", "32", "--per_device_train_batch_size", "2", *STEPS)
    saved = json.loads((out / "pretrain_config.json").read_text())
    _check("cloned-languages-gpt-small.yaml", {**saved["trainer"], **saved["method"]},
           {"corpus", "tokenizer", "output_dir", "preset", "seq_len", "per_device_train_batch_size", "max_steps"})
