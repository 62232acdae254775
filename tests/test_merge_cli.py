"""xlt merge / xlt data reference-lm: real adapters on a tiny saved Llama, the real CLI in a
subprocess (main paths and the important error paths), the remaining error paths in-process."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from _versions_helpers import assert_records_versions
import torch

import _merge_helpers as H

pytestmark = pytest.mark.usefixtures("one_thread")


def _make_lora(base_dir, out, seed, *, r=4, targets=("q_proj", "v_proj"), alpha=8):
    """A PEFT LoRA adapter on the saved tiny model with seeded non-zero factors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                                                  task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters(), key=lambda kv: kv[0]):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    peft_model.save_pretrained(out)
    return Path(out)


def _make_ia3(base_dir, out, seed):
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), IA3Config(task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters(), key=lambda kv: kv[0]):
            if "ia3_l" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(out)
    return Path(out)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_llama_dir):
    root = tmp_path_factory.mktemp("adapters")
    made = {name: _make_lora(tiny_llama_dir, root / name, seed)
            for name, seed in (("task", 1), ("ref_tgt", 2), ("ref_src", 3))}
    made["qk"] = _make_lora(tiny_llama_dir, root / "qk", 4, targets=("q_proj", "k_proj"))
    made["ia3"] = _make_ia3(tiny_llama_dir, root / "ia3", 5)
    made["root"] = root
    return made


def _dense_updates(adapter_dir) -> dict[str, torch.Tensor]:
    """module -> scaling * B @ A in float64, computed here from the files."""
    from safetensors.torch import load_file

    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    sd = load_file(Path(adapter_dir) / "adapter_model.safetensors")
    out = {}
    for key, A in sd.items():
        if key.endswith("lora_A.weight"):
            name = key[: -len(".lora_A.weight")]
            r = cfg["rank_pattern"].get(name[len(H.PREFIX):], cfg["r"]) if cfg.get("rank_pattern") else cfg["r"]
            assert A.shape[0] == r
            out[name] = (cfg["lora_alpha"] / cfg["r"]) * (sd[key.replace("lora_A", "lora_B")].double() @ A.double())
    return out


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits


def _assert_failed(proc, out: Path, pattern: str):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xlt: error:"), proc.stderr
    assert pattern in lines[0], lines[0]
    assert not out.exists()
    assert not any(p.name.startswith(f".{out.name}.tmp") for p in out.parent.iterdir())


@pytest.mark.slow
def test_cli_adamergex_delta_loads_in_peft(xlt_cli, adapters, tmp_path, tiny_llama_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    proc = xlt_cli("merge", "adamergex", "--task", adapters["task"], "--ref-target", adapters["ref_tgt"],
                   "--ref-source", adapters["ref_src"], "--t", "0.7", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "rank 12" in proc.stdout
    expected = {k: _dense_updates(adapters["task"])[k] + 0.7 * (_dense_updates(adapters["ref_tgt"])[k]
                                                                 - _dense_updates(adapters["ref_src"])[k])
                for k in _dense_updates(adapters["task"])}
    got = _dense_updates(out)
    assert set(got) == set(expected)
    for k in expected:
        assert torch.allclose(got[k], expected[k], atol=1e-6)
    report = json.loads((out / "merge_report.json").read_text())
    assert report["t"] == 0.7 and report["mode"] == "delta"
    assert_records_versions(report)
    # loads as is, and its forward equals the base with the exact update added
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    with torch.no_grad():
        for k, dw in expected.items():
            base.get_submodule(k[len(H.PREFIX):]).weight += dw.float()
    ids = [[1, 5, 9, 22, 40, 7]]
    assert torch.allclose(_logits(model, ids), _logits(base, ids), atol=1e-5)


@pytest.mark.slow
def test_cli_rank_and_merge_into_base(xlt_cli, adapters, tmp_path, tiny_llama_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    proc = xlt_cli("merge", "adamergex", "--task", adapters["task"], "--ref-target", adapters["ref_tgt"],
                   "--ref-source", adapters["ref_src"], "--t", "1", "--rank", "4", "--out", out,
                   "--merge-into-base")
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("  model.layers.")]
    assert len(lines) == 8  # 4 layers x (q, v)
    assert all(0 < float(l.split()[-1]) < 1 for l in lines)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    report = json.loads((out / "merge_report.json").read_text())
    assert report["merged_into_base"] == str(tiny_llama_dir)
    from xlt.merge import adamergex, write_adapter

    adapter_dir = write_adapter(adamergex(adapters["task"], adapters["ref_tgt"], adapters["ref_src"], 1.0,
                                          rank=4).adapter, tmp_path / "lowrank")
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), adapter_dir).eval()
    ids = [[1, 5, 9, 22, 40, 7]]
    assert torch.allclose(_logits(merged, ids), _logits(reference, ids), atol=1e-5)
    assert (out / "tokenizer.json").is_file()


@pytest.mark.slow
def test_cli_linear_and_task_arithmetic_are_exact(xlt_cli, adapters, tmp_path):
    out = tmp_path / "lin"
    proc = xlt_cli("merge", "linear", "--adapters", adapters["task"], adapters["ref_tgt"], adapters["ref_src"],
                   "--weights", "1", "2", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    ups = [_dense_updates(adapters[n]) for n in ("task", "ref_tgt", "ref_src")]
    got = _dense_updates(out)
    for k in got:
        assert torch.allclose(got[k], (ups[0][k] + 2 * ups[1][k] + ups[2][k]) / 4, atol=1e-6)
    from xlt.merge import task_arithmetic

    result = task_arithmetic([adapters["task"], adapters["ref_src"]], [1.0, -1.0], scale=0.5)
    for key, A in result.adapter.tensors.items():
        if key.endswith("lora_A.weight"):
            name = key[: -len(".lora_A.weight")]
            dw = result.adapter.tensors[key.replace("lora_A", "lora_B")].double() @ A.double()
            assert torch.allclose(dw, 0.5 * (ups[0][name] - ups[2][name]), atol=1e-6)


@pytest.mark.slow
def test_cli_t_auto_reports_curve(xlt_cli, adapters, tmp_path):
    dev = tmp_path / "dev.jsonl"
    rows = [{"lang": "qab", "prompt": f"a b c {i}", "completion": " d"} for i in range(4)]
    rows.append({"lang": "qaa", "prompt": "x", "completion": " y"})
    dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, curve = tmp_path / "auto", tmp_path / "curve.json"
    proc = xlt_cli("merge", "adamergex", "--task", adapters["task"], "--ref-target", adapters["ref_tgt"],
                   "--ref-source", adapters["ref_src"], "--t", "auto", "--dev", dev, "--dev-lang", "qab",
                   "--grid", "0,0.5,1", "--out", out, "--curve", curve)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(curve.read_text())
    assert [p["t"] for p in data["curve"]] == [0.0, 0.5, 1.0]
    assert all(p["n"] == 4 and 0 <= p["accuracy"] <= 1 and p["loss"] > 0 for p in data["curve"])
    best = max(data["curve"], key=lambda p: (p["accuracy"], -p["loss"]))
    assert data["best_t"] == best["t"]
    assert f"best t = {best['t']:g}" in proc.stdout
    assert json.loads((out / "merge_report.json").read_text())["t"] == best["t"]
    # losses differ across t: the adapter really changes between grid points
    assert len({round(p["loss"], 6) for p in data["curve"]}) == 3


def test_t_auto_scores_match_independent_loss(adapters, tiny_llama_dir, tmp_path):
    """The completion loss of the scorer equals a hand-computed NLL."""
    from transformers import AutoModelForCausalLM

    from xlt.formats import TaskExample
    from xlt.merge.selection import completion_loss
    from xlt.models import load_tokenizer

    tok = load_tokenizer(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ex = TaskExample(lang="qab", prompt="the cat", completion=" sat")
    p = tok(ex.prompt)["input_ids"]
    c = tok(ex.completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    logp = torch.log_softmax(_logits(model, [p + c])[0], -1)
    nll = -sum(float(logp[len(p) - 1 + i, c[i]]) for i in range(len(c))) / len(c)
    assert completion_loss(model, tok, [ex, ex]) == pytest.approx(nll, rel=1e-5)


class _Payload:
    """Unpickling this creates a marker file: what a malicious adapter_model.bin could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow
def test_cli_refuses_pickle_adapter(xlt_cli, adapters, tmp_path):
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "adapter_config.json").write_text((adapters["task"] / "adapter_config.json").read_text())
    marker = tmp_path / "PWNED"
    with open(evil / "adapter_model.bin", "wb") as f:
        pickle.dump({"x": _Payload(str(marker))}, f)
    out = tmp_path / "out"
    args = ("merge", "adamergex", "--task", evil, "--ref-target", adapters["ref_tgt"],
            "--ref-source", adapters["ref_src"], "--t", "1", "--out", out)
    proc = xlt_cli(*args)
    _assert_failed(proc, out, "pickle")
    assert not marker.exists()
    # even with --allow-pickle only plain tensors are unpickled (torch weights_only)
    proc = xlt_cli(*args, "--allow-pickle")
    _assert_failed(proc, out, "cannot load as plain tensors")
    assert not marker.exists()


@pytest.mark.slow
def test_cli_refuses_existing_output_and_other_base(xlt_cli, adapters, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = xlt_cli("merge", "adamergex", "--task", adapters["task"], "--ref-target", adapters["ref_tgt"],
                   "--ref-source", adapters["ref_src"], "--t", "1", "--out", out)
    assert proc.returncode == 2 and "already exists" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    other = tmp_path / "other_base"
    other.mkdir()
    cfg = json.loads((adapters["ref_src"] / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "someone/another-model"
    (other / "adapter_config.json").write_text(json.dumps(cfg))
    (other / "adapter_model.safetensors").write_bytes((adapters["ref_src"] / "adapter_model.safetensors").read_bytes())
    out2 = tmp_path / "out2"
    proc = xlt_cli("merge", "adamergex", "--task", adapters["task"], "--ref-target", adapters["ref_tgt"],
                   "--ref-source", other, "--t", "1", "--out", out2)
    _assert_failed(proc, out2, "base models differ")


def _copy_adapter(src: Path, dst: Path, *, config=None, tensors=None):
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg.update(config or {})
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    sd = load_file(src / "adapter_model.safetensors")
    if tensors is not None:
        sd = tensors(sd)
    save_file(sd, dst / "adapter_model.safetensors")
    return dst


def _run_inprocess(capsys, *args) -> tuple[int, str]:
    from xlt.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case,pattern", [
    ("modules", "target modules differ"),
    ("shapes", "shapes differ"),
    ("types", "adapter types differ"),
    ("missing", "no adapter weights"),
    ("no_dir", "no such adapter directory"),
    ("factorwise_rank", "equal ranks"),
])
def test_bad_adapters_one_line_error_nothing_written(capsys, adapters, tmp_path, case, pattern):
    task, tgt, src = adapters["task"], adapters["ref_tgt"], adapters["ref_src"]
    extra = []
    if case == "modules":
        src = adapters["qk"]
    elif case == "shapes":
        def widen(sd):
            return {k: (torch.cat([v, v], 1) if k.endswith("lora_A.weight") else v) for k, v in sd.items()}
        src = _copy_adapter(src, tmp_path / "wide", tensors=widen)
    elif case == "types":
        src = adapters["ia3"]
    elif case == "missing":
        src = tmp_path / "empty"
        src.mkdir()
        (src / "adapter_config.json").write_text((adapters["ref_src"] / "adapter_config.json").read_text())
    elif case == "no_dir":
        src = tmp_path / "nowhere"
    elif case == "factorwise_rank":
        def rank8(sd):
            return {k: (torch.cat([v, v], 0) if k.endswith("lora_A.weight") else torch.cat([v, v], 1))
                    for k, v in sd.items()}
        src = _copy_adapter(src, tmp_path / "r8", config={"r": 8}, tensors=rank8)
        extra = ["--mode", "factorwise"]
    out = tmp_path / "out"
    code, err = _run_inprocess(capsys, "merge", "adamergex", "--task", task, "--ref-target", tgt,
                               "--ref-source", src, "--t", "0.5", "--out", out, *extra)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("xlt: error:") and pattern in err, err
    assert not out.exists()


def test_delta_accepts_different_ranks(adapters, tmp_path):
    """Exact update arithmetic does not need equal ranks (the factor-wise rule does)."""
    from xlt.merge import adamergex

    def rank8(sd):
        return {k: (torch.cat([v, v], 0) if k.endswith("lora_A.weight") else torch.cat([v, v], 1))
                for k, v in sd.items()}
    src8 = _copy_adapter(adapters["ref_src"], tmp_path / "r8", config={"r": 8, "lora_alpha": 16}, tensors=rank8)
    result = adamergex(adapters["task"], adapters["ref_tgt"], src8, 1.0)
    assert result.adapter.config["r"] == 16
    ups = [_dense_updates(adapters["task"]), _dense_updates(adapters["ref_tgt"]), _dense_updates(src8)]
    sd = result.adapter.tensors
    for key, A in sd.items():
        if key.endswith("lora_A.weight"):
            name = key[: -len(".lora_A.weight")]
            dw = sd[key.replace("lora_A", "lora_B")].double() @ A.double()
            assert torch.allclose(dw, ups[0][name] + ups[1][name] - ups[2][name], atol=1e-6)
    # the duplicated rank-8 adapter has twice the update of the rank-4 one with the same alpha/r
    assert torch.allclose(ups[2][name], 2 * _dense_updates(adapters["ref_src"])[name], atol=1e-6)


def test_ia3_cli_report_and_state_dict_api(capsys, adapters, tmp_path, tiny_llama_dir):
    """(IA)^3 via the CLI on directories; a zero in ref_source is clamped and counted."""
    src = _copy_adapter(adapters["ia3"], tmp_path / "ia3_zero",
                        tensors=lambda sd: {k: (v * 0 if i == 0 else v) for i, (k, v) in enumerate(sorted(sd.items()))})
    tgt = _copy_adapter(adapters["ia3"], tmp_path / "ia3_tgt")
    out = tmp_path / "ia3_out"
    from xlt.cli import main

    code = main(["merge", "adamergex", "--task", str(adapters["ia3"]), "--ref-target", str(tgt),
                 "--ref-source", str(src), "--t", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "merge_report.json").read_text())
    from safetensors.torch import load_file

    zeroed = load_file(src / "adapter_model.safetensors")
    n_zero = sum(int((v == 0).sum()) for v in zeroed.values())
    assert n_zero > 0
    assert report["clamped_entries"] == n_zero
    assert f"{n_zero} entries of ref_source clamped" in captured.out


@pytest.mark.slow
def test_cli_reference_lm(xlt_cli, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"s{i}a s{i}b s{i}c\n" for i in range(10)))  # 30 words
    out = tmp_path / "ref.jsonl"
    proc = xlt_cli("data", "reference-lm", "--input", text, "--lang", "qab", "--out", out,
                   "--prompt-units", "6", "--completion-units", "1")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 4  # 30 // 7, 2 words dropped
    assert rows[0] == {"lang": "qab", "prompt": "s0a s0b s0c s1a s1b s1c", "completion": " s2a"}
    assert rows[1]["prompt"].startswith("s2b s2c s3a")
    assert "2 trailing words dropped" in proc.stdout
    proc = xlt_cli("data", "reference-lm", "--input", text, "--lang", "qab", "--out", out,
                   "--prompt-units", "6")
    assert proc.returncode == 2 and "already exists" in proc.stderr


def test_reference_lm_jsonl_parquet_and_errors(capsys, tmp_path):
    from xlt.cli import main

    src = tmp_path / "wiki.json"
    src.write_text(json.dumps([{"prompt": "Alpha", "completion": " beta gamma\ndelta"},
                               {"prompt": "Eps", "completion": " zeta"}]))
    out = tmp_path / "chars.jsonl"
    code = main(["data", "reference-lm", "--input", str(src), "--lang", "qaa", "--out", str(out),
                 "--unit", "char", "--prompt-units", "4", "--completion-units", "1", "--boundary", "glue"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    # glue: "Alpha beta gammadelta" + carry glued to "Eps zeta"; 5-char chunks, whitespace completions skipped
    text = "Alpha beta gammadelta"
    full = len(text) // 5
    carry = text[full * 5:]
    text2 = carry + "Eps zeta"
    expected = [text[j * 5:j * 5 + 5] for j in range(full)] + [text2[j * 5:j * 5 + 5] for j in range(len(text2) // 5)]
    expected = [(c[:4], c[4]) for c in expected if c[4].strip()]
    assert [(r["prompt"], r["completion"]) for r in rows] == expected
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["one two three four five six"]}), tmp_path / "t.parquet")
    out2 = tmp_path / "pq.jsonl"
    assert main(["data", "reference-lm", "--input", str(tmp_path / "t.parquet"), "--text-field", "body",
                 "--lang", "qaa", "--out", str(out2), "--prompt-units", "2"]) == 0
    assert [json.loads(l)["completion"] for l in out2.read_text().splitlines()] == [" three", " six"]
    capsys.readouterr()
    short = tmp_path / "short.txt"
    short.write_text("too short\n")
    out3 = tmp_path / "none.jsonl"
    assert main(["data", "reference-lm", "--input", str(short), "--lang", "qaa", "--out", str(out3)]) == 2
    err = capsys.readouterr().err
    assert "too short" in err and not out3.exists()


def test_allow_pickle_reads_plain_tensor_bin(adapters, tmp_path):
    """A trusted adapter_model.bin of plain tensors loads with allow_pickle and merges the same."""
    from safetensors.torch import load_file

    from xlt.errors import ModelError
    from xlt.merge import adamergex, read_adapter

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "adapter_config.json").write_text((adapters["ref_src"] / "adapter_config.json").read_text())
    torch.save(load_file(adapters["ref_src"] / "adapter_model.safetensors"), legacy / "adapter_model.bin")
    with pytest.raises(ModelError, match="pickle"):
        read_adapter(legacy)
    a = adamergex(adapters["task"], adapters["ref_tgt"], read_adapter(legacy, allow_pickle=True), 0.3)
    b = adamergex(adapters["task"], adapters["ref_tgt"], adapters["ref_src"], 0.3)
    assert a.adapter.tensors.keys() == b.adapter.tensors.keys()
    assert all(torch.equal(a.adapter.tensors[k], b.adapter.tensors[k]) for k in a.adapter.tensors)


def test_registry_and_dtype(adapters):
    from xlt.errors import ConfigError
    from xlt.merge import adamergex, get_merge_method, linear, task_arithmetic

    assert get_merge_method("task-arithmetic") is task_arithmetic
    assert get_merge_method("linear") is linear and get_merge_method("adamergex") is adamergex
    with pytest.raises(ConfigError, match="unknown merge method"):
        get_merge_method("slerp")
    half = adamergex(adapters["task"], adapters["ref_tgt"], adapters["ref_src"], 1.0, dtype="bfloat16")
    full = adamergex(adapters["task"], adapters["ref_tgt"], adapters["ref_src"], 1.0)
    assert {v.dtype for v in half.adapter.tensors.values()} == {torch.bfloat16}
    for k, v in full.adapter.tensors.items():
        assert torch.allclose(half.adapter.tensors[k].float(), v, rtol=1e-2, atol=1e-3)
    with pytest.raises(ConfigError, match="weights"):
        linear([adapters["task"], adapters["ref_tgt"]], [1.0, -1.0])  # sums to 0: cannot normalise
