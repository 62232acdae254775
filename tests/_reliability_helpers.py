"""Workspace of valid and broken inputs shared by the reliability tests, and the process
handling of the kill tests."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

TASK = [{"lang": lang, "prompt": f"{lang} question {i} ?", "completion": f" answer{i % 2}"}
        for lang in ("qaa", "qab") for i in range(8)]
PAIRS = [{"src_lang": "qaa", "tgt_lang": "qab", "src": f"word{i} thing{i}", "tgt": f"wort{i} ding{i}"}
         for i in range(8)]
CHOICE = [{"lang": lang, "context": f"{lang} story {i}", "choices": ["yes", "no"], "label": i % 2}
          for lang in ("qaa", "qab") for i in range(6)]


def _jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


class _Evil:
    """Unpickling this runs code: the marker file appears if a loader trusts pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_pickle(path: Path, marker: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump({"weight": _Evil(str(marker))}, handle)
    return path


def build_workspace(root: Path, model_dir: Path, m2m_dir: Path | None = None) -> dict[str, str]:
    """Write every input the bad-input table refers to; return name -> path."""
    from _merge_helpers import ia3_config, ia3_state_dict, ia3_vectors, lora_config, \
        lora_factors, lora_state_dict, write_adapter_dir

    root.mkdir(parents=True, exist_ok=True)
    ws: dict[str, str] = {"model": str(model_dir), "root": str(root), "m2m": str(m2m_dir)}

    def put(name: str, path: Path) -> None:
        ws[name] = str(path)

    put("task", _jsonl(root / "task.jsonl", TASK))
    put("pairs", _jsonl(root / "pairs.jsonl", PAIRS))
    put("nllb_pairs", _jsonl(root / "nllb_pairs.jsonl", [{**p, "src_lang": "eng_Latn", "tgt_lang": "deu_Latn"}
                                                         for p in PAIRS]))
    put("choice", _jsonl(root / "choice.jsonl", CHOICE))
    (root / "corpus.txt").write_text("".join(f"a b c d {i}\n" for i in range(50)), encoding="utf-8")
    put("corpus", root / "corpus.txt")

    # broken data files
    (root / "malformed.jsonl").write_text(json.dumps(TASK[0]) + "\n" + '{"lang": "qaa", "prompt": "x"\n',
                                          encoding="utf-8")
    put("malformed", root / "malformed.jsonl")
    put("wrong_type", _jsonl(root / "wrong_type.jsonl", [TASK[0], {**TASK[1], "prompt": 5}]))
    put("empty_prompt", _jsonl(root / "empty_prompt.jsonl", [TASK[0], {**TASK[1], "prompt": ""}]))
    put("unknown_lang", _jsonl(root / "unknown_lang.jsonl", [TASK[0], {**TASK[1], "lang": "english!"}]))
    put("pairs_malformed", root / "pairs_malformed.jsonl")
    (root / "pairs_malformed.jsonl").write_text('[{"src_lang": "qaa",\n', encoding="utf-8")
    put("pairs_wrong_type", _jsonl(root / "pairs_wrong_type.jsonl", [PAIRS[0], {**PAIRS[1], "tgt": ["a"]}]))
    put("pairs_empty", _jsonl(root / "pairs_empty.jsonl", [PAIRS[0], {**PAIRS[1], "src": ""}]))
    put("choice_bad_label", _jsonl(root / "choice_bad_label.jsonl", [CHOICE[0], {**CHOICE[1], "label": 7}]))
    (root / "latin1.jsonl").write_bytes(json.dumps(TASK[0]).encode() + b"\n" +
                                        '{"lang": "qaa", "prompt": "caf\u00e9", "completion": "x"}\n'.encode("latin-1"))
    put("latin1", root / "latin1.jsonl")
    (root / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me\n".encode("latin-1") * 20)
    put("latin1_txt", root / "latin1.txt")
    (root / "empty.jsonl").write_text("", encoding="utf-8")
    put("empty", root / "empty.jsonl")
    (root / "a_directory").mkdir(exist_ok=True)
    put("dir", root / "a_directory")
    put("missing", root / "does_not_exist.jsonl")
    (root / "bad.yaml").write_text("learning_rate: [1, 2\nmax_steps: 3\n", encoding="utf-8")
    put("bad_yaml", root / "bad.yaml")
    (root / "bad.json").write_text('{"qaa": "Source",', encoding="utf-8")
    put("bad_json", root / "bad.json")
    script_dataset = root / "hub" / "mgsm"  # a hub repository that holds only its loading script
    script_dataset.mkdir(parents=True, exist_ok=True)
    (script_dataset / "mgsm.py").write_text("import datasets\n", encoding="utf-8")
    (script_dataset / "mgsm_en.tsv").write_text("Two plus two?\t4\n", encoding="utf-8")
    put("script_dataset", script_dataset)

    # adapters (LoRA, IA3, mismatched, pickle-only, broken config)
    base = str(model_dir)
    put("lora_a", Path(write_adapter_dir(root / "lora_a", lora_config(base=base), lora_state_dict(lora_factors(1)))))
    put("lora_b", Path(write_adapter_dir(root / "lora_b", lora_config(base=base), lora_state_dict(lora_factors(2)))))
    factors = {k: v for k, v in lora_factors(3).items() if k.endswith(("q_proj", "v_proj"))}
    put("lora_other", Path(write_adapter_dir(root / "lora_other", lora_config(base=base, targets=["q_proj", "v_proj"]),
                                             lora_state_dict(factors))))
    bad_shape = {k: (a[:, :-1], b) for k, (a, b) in lora_factors(4).items()}
    put("lora_bad_shape", Path(write_adapter_dir(root / "lora_bad_shape", lora_config(base=base),
                                                 lora_state_dict(bad_shape))))
    put("ia3", Path(write_adapter_dir(root / "ia3", ia3_config(base=base), ia3_state_dict(ia3_vectors(5)))))
    pickled = root / "lora_pickle"
    pickled.mkdir(exist_ok=True)
    (pickled / "adapter_config.json").write_text(json.dumps(lora_config(base=base)), encoding="utf-8")
    crafted_pickle(pickled / "adapter_model.bin", root / "PWNED")
    put("lora_pickle", pickled)
    put("pwned_marker", root / "PWNED")
    broken = root / "lora_broken_config"
    write_adapter_dir(broken, lora_config(base=base), lora_state_dict(lora_factors(6)))
    (broken / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ', encoding="utf-8")
    put("lora_broken_config", broken)
    nan = root / "lora_nan"
    sd = lora_state_dict(lora_factors(7))
    first = sorted(sd)[0]
    sd[first][0, 0] = float("nan")
    write_adapter_dir(nan, lora_config(base=base), sd)
    put("lora_nan", nan)

    # lens probes and tuned lenses sized to the model (one broken thing each)
    put("lens_prompts", _jsonl(root / "lens_prompts.jsonl", [{"prompt": "a b c", "target": "d", "pivot": "e"}]))
    model_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    width, layers = model_config["hidden_size"], model_config["num_hidden_layers"]
    put("tuned_missing", _tuned_lens(root / "tuned_missing", width, layers, drop="1.bias"))
    put("tuned_narrow", _tuned_lens(root / "tuned_narrow", width, layers, width_override=width // 2))
    put("tuned_short", _tuned_lens(root / "tuned_short", width, layers - 1))
    pickled_lens = root / "tuned_pickle"
    pickled_lens.mkdir(exist_ok=True)
    crafted_pickle(pickled_lens / "params.pt", root / "PWNED")
    put("tuned_pickle", pickled_lens)
    return ws


def _tuned_lens(directory: Path, width: int, layers: int, *, drop: str | None = None,
                width_override: int | None = None) -> Path:
    """A tuned lens directory (config.json + params.safetensors) of zero translators."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"lens_type": "linear_tuned_lens"}), encoding="utf-8")
    dim = width_override or width
    tensors = {}
    for i in range(layers):
        tensors[f"{i}.weight"] = torch.zeros(dim, dim)
        tensors[f"{i}.bias"] = torch.zeros(dim)
    tensors.pop(drop, None)
    save_file(tensors, str(directory / "params.safetensors"))
    return directory


def listing(path: str | Path) -> list[str]:
    """Every entry under ``path`` (relative), sorted; [] when it does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def wait_for_file(proc: subprocess.Popen, path: Path, what: str, timeout: float = 300) -> None:
    """Wait until ``path`` exists while ``proc`` runs; fail, with the end of its stderr, if it
    ends first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            if isinstance(err, bytes):
                err = err.decode(errors="replace")
            raise AssertionError(f"the process ended before {what}: {err[-2000:]}")
        assert time.monotonic() < deadline, f"never reached {what}"
        time.sleep(0.05)


def sigkill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and check that the signal is what ended it."""
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


@contextlib.contextmanager
def reaped(proc: subprocess.Popen):
    """``proc`` never outlives the block, whatever happens in it."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
