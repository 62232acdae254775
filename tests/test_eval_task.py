"""Exact-match task evaluation: batched left-padded generation, per-language table, CLI."""

from __future__ import annotations

import json

import pytest

from xlt.formats import MultipleChoiceItem, TaskExample, write_jsonl

PROMPTS = ["The cat sat on the", "Der Hund", "Le chat dort sur le lit et", "Question: what is two plus three?",
           "a b c", "Hello world. How are you? Good night. The quick brown fox"]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    from xlt.models import load_model, load_tokenizer

    return load_model(tiny_llama_dir, dtype="float32").eval(), load_tokenizer(tiny_llama_dir)


def _unbatched(model, tok, prompt, max_new_tokens):
    import torch

    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = out[0, ids.shape[1]:].tolist()
    if tok.eos_token_id in new:
        new = new[:new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True).split("\n")[0]


def test_evaluate_task_matches_unbatched_generation(llama):
    from xlt.eval import evaluate_task

    model, tok = llama
    reference = [_unbatched(model, tok, p, 4) for p in PROMPTS]
    # gold = the model's own unbatched answer for even items, something else for odd ones
    examples = [TaskExample(lang="en" if k < 3 else "de", prompt=p,
                            completion=(" " + ref + " ") if k % 2 == 0 else " zzz-not-this")
                for k, (p, ref) in enumerate(zip(PROMPTS, reference))]
    table, predictions = evaluate_task(model, tok, examples, max_new_tokens=4, batch_size=4)
    assert [p.prediction for p in predictions] == reference
    expected = {}
    for k, e in enumerate(examples):
        right, n = expected.get(e.lang, (0, 0))
        ok = " ".join(reference[k].split()) == " ".join(e.completion.split())
        expected[e.lang] = (right + ok, n + 1)
    assert table == {lang: {"accuracy": r / n, "n": n} for lang, (r, n) in expected.items()}
    assert table["en"]["accuracy"] > 0


def test_stop_strings_and_normalisation():
    from xlt.eval.task import cut_at_stops, normalize_answer

    assert cut_at_stops(" red car\nnext", ["\n"]) == " red car"
    assert cut_at_stops("a. b", [".", "\n"]) == "a"
    assert normalize_answer("  the   red\tcar ") == "the red car"


@pytest.mark.slow
def test_task_cli_with_adapter_and_choice_files(tiny_llama_dir, tmp_path, xlt_cli):
    import torch
    from peft import LoraConfig, get_peft_model

    from xlt.models import load_model

    base = load_model(tiny_llama_dir, dtype="float32")
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    tasks = tmp_path / "test.jsonl"
    write_jsonl(tasks, [TaskExample(lang=lang, prompt=p, completion=" x") for lang in ("qaa", "qab")
                        for p in PROMPTS[:3]])
    out = tmp_path / "r.json"
    proc = xlt_cli("eval", "task", "--model", tiny_llama_dir, "--adapter", adapter, "--data", tasks,
                   "--output", out, "--predictions", tmp_path / "p.jsonl", "--max-new-tokens", "3")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    table = doc["languages"]
    assert set(table) == {"qaa", "qab"} and all(row["n"] == 3 for row in table.values())
    import peft
    import torch
    import transformers

    assert doc["xlt_versions"]["transformers"] == transformers.__version__
    assert doc["xlt_versions"]["peft"] == peft.__version__
    assert doc["xlt_versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert doc["model"] == str(tiny_llama_dir) and doc["adapter"] == str(adapter)
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 6
    assert "qab" in proc.stdout
    # MultipleChoiceItem files are scored 0-shot
    choice = tmp_path / "test.choice.jsonl"
    write_jsonl(choice, [MultipleChoiceItem(lang="qaa", context="The cat", choices=("sat", "ran"), label=0),
                         MultipleChoiceItem(lang="qaa", context="A dog", choices=("eats", "x"), label=1)])
    proc = xlt_cli("eval", "task", "--model", tiny_llama_dir, "--data", choice, "--output", tmp_path / "c.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "c.json").read_text())["languages"]["qaa"]["n"] == 2
    # unknown language code: one line, no output written
    from xlt.errors import DataError
    from xlt.eval.cli import task_command

    with pytest.raises(DataError, match="unknown language code 'qzz'"):
        task_command(["--model", str(tiny_llama_dir), "--data", str(tasks), "--languages", "qzz",
                      "--output", str(tmp_path / "none.json")], "xlt eval task")
    assert not (tmp_path / "none.json").exists()
