"""Library noise stays out of a user's terminal unless ``xlt --verbose``; xlt's own warnings
always show."""

from __future__ import annotations

import json
import warnings

import pytest

#: what a short `xlt train sft` and `xlt eval icl` printed on stderr before it was filtered or fixed
NOISE = (
    "is_gradient_checkpointing",                             # PEFT calling a deprecated transformers property
    "`loss_type=None`",                                      # GPT-2's class name names no loss
    "fan_in_fan_out",                                        # LoRA on GPT-2's Conv1D without the flag
    "super().__init__(loader)",                              # torch's pin_memory notice, its source line
    "We strongly recommend passing in an `attention_mask`",  # a padded batch in eval icl (no sharing)
)


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory, tiny_model_dir):
    work = tmp_path_factory.mktemp("quiet")
    (work / "train.jsonl").write_text(
        "".join(json.dumps({"lang": "en", "prompt": f"the cat {i} is", "completion": " good"}) + "\n"
                for i in range(8)), encoding="utf-8")
    (work / "items.jsonl").write_text(
        "".join(json.dumps({"lang": "en", "context": "the cat" + " sat" * (i % 3), "choices": [" good", " very bad"],
                            "label": i % 2}) + "\n" for i in range(6)), encoding="utf-8")
    return work, tiny_model_dir("gpt2")


def _sft(xlt_cli, work, model, out, *flags):
    return xlt_cli(*flags, "train", "sft", "--model", model, "--train_file", "train.jsonl", "--output_dir", out,
                   "--max_steps", "1", "--per_device_train_batch_size", "4", "--lora_r", "2", cwd=work)


@pytest.mark.slow
def test_sft_and_icl_stderr_hold_no_library_noise(xlt_cli, gpt2_run):
    work, model = gpt2_run
    proc = _sft(xlt_cli, work, model, "sft")
    assert proc.returncode == 0, proc.stderr
    # whole sequences without a mask (the one-pass rows carry one), where GPT-2 logs its advice
    icl = xlt_cli("eval", "icl", "--model", "sft", "--task", "choice", "--test", "items.jsonl",
                  "--device", "cpu", "--no-prefix-sharing", cwd=work)
    assert icl.returncode == 0, icl.stderr
    for stderr in (proc.stderr, icl.stderr):
        found = [noise for noise in NOISE if noise in stderr]
        assert not found, f"library noise on stderr: {found}\n{stderr[-2000:]}"


@pytest.mark.slow
def test_verbose_lets_library_warnings_through(xlt_cli, gpt2_run):
    work, model = gpt2_run
    proc = _sft(xlt_cli, work, model, "sft-verbose", "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert "is_gradient_checkpointing" in proc.stderr  # a transformers FutureWarning, not filtered
    icl = xlt_cli("--verbose", "eval", "icl", "--model", "sft-verbose", "--task", "choice", "--test", "items.jsonl",
                  "--device", "cpu", "--no-prefix-sharing", cwd=work)
    assert icl.returncode == 0, icl.stderr
    assert NOISE[-1] in icl.stderr  # a transformers log record, not filtered


def test_filters_spare_xlt_warnings(monkeypatch):
    """Only library warnings are dropped: the same category from an xlt module still shows."""
    from xlt import quiet

    monkeypatch.setattr(quiet, "_active", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.quiet_libraries()
        warnings.warn_explicit("deprecated in the library", FutureWarning, "modeling_utils.py", 1,
                               module="transformers.modeling_utils")
        warnings.warn_explicit("deprecated in peft", DeprecationWarning, "peft_model.py", 1,
                               module="peft.peft_model")
        warnings.warn_explicit("fast path refused", UserWarning, "layers.py", 1, module="xlt.align.layers")
        warnings.warn_explicit("our own deprecation", FutureWarning, "config.py", 1, module="xlt.config")
        warnings.warn_explicit("a torch user warning", UserWarning, "module.py", 1, module="torch.nn.modules.module")
    messages = [str(w.message) for w in caught]
    assert messages == ["fast path refused", "our own deprecation", "a torch user warning"]


def test_transformers_log_filter_drops_only_the_listed_records():
    from xlt.quiet import TRANSFORMERS_NOISE, _DropNoise
    import logging

    keep = logging.LogRecord("transformers.modeling_utils", logging.WARNING, "f", 1,
                             "Some weights of the model were not initialized", None, None)
    drop = logging.LogRecord("transformers.modeling_utils", logging.WARNING, "f", 1,
                             TRANSFORMERS_NOISE[0] + " since your input_ids may be padded.", None, None)
    assert _DropNoise().filter(keep) and not _DropNoise().filter(drop)


@pytest.mark.parametrize("quiet", [False, True])
def test_deepspeed_cpu_accelerator_notice_is_dropped_when_quiet(quiet):
    """DeepSpeed prints "Setting accelerator to CPU" on stdout in every process that imports it on
    a machine without a GPU (the demo's workers did, 17 times); quiet drops it, other DeepSpeed
    warnings stay."""
    import os
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    code = ("import logging\n"
            + ("from xlt.quiet import quiet_libraries; quiet_libraries()\n" if quiet else "")
            + "import deepspeed\n"
            + "logging.getLogger('DeepSpeed').warning('another DeepSpeed warning')\n")
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("DS_ACCELERATOR", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "src")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    assert ("Setting accelerator to CPU" in printed) is not quiet, printed
    assert "another DeepSpeed warning" in printed
