"""Every engine trains like one process: mid-align, AFP, `xlt train sft`, LSLo and pretrain under
DDP, DeepSpeed ZeRO-2, ZeRO-2 with CPU offload and ZeRO-3 (through the Trainer) and FSDP2
(``fully_shard``, through a plain loop: accelerate builds FSDP only on GPUs, see _fsdp2_run.py),
2 gloo processes on the CPU, gradient accumulation 1 and 2, against a one-process run on the same
global batch: losses of every step within 1e-5 (relative), final trainable weights within 1e-5,
and the engine each run recorded; for LSLo also the same pruning masks, pruning report and base
fingerprint in the saved adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
METHODS = ("mid-align", "afp")
GAS = (1, 2)
#: methods with the standard forward (SFT, pretrain) or direct weight reads (LSLo)
EXTRA = ("sft", "lslo", "pretrain")
CELLS = [(m, ga) for m in METHODS + EXTRA for ga in GAS]
RUNS = [f"{m}-{ga}:{m}:{ga}" for m, ga in CELLS]
DEEPSPEED = {"zero2.json": "deepspeed-zero2", "zero2-offload.json": "deepspeed-zero2-offload",
             "zero3.json": "deepspeed-zero3"}


def _env(lslo_world: Path | None = None):
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               WANDB_DISABLED="true", DS_ACCELERATOR="cpu")
    if lslo_world is not None:
        env["XLT_TEST_LSLO_WORLD"] = str(lslo_world)
    return env


def _launch(out: Path, engine: str, runs: list[str], nproc: int, script: str = "_engine_run.py", *,
            lslo_world: Path):
    out.mkdir(parents=True, exist_ok=True)
    script = [str(HERE / script), str(out), engine, *runs]
    cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
                             if nproc > 1 else []), *script]
    done = subprocess.run(cmd, env=_env(lslo_world), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def lslo_world(tmp_path_factory):
    """The tiny M2M-100 and translation pairs the LSLo runs of every launch read."""
    from _lslo_helpers import write_engine_world

    root = tmp_path_factory.mktemp("lslo-world")
    write_engine_world(root)
    return root


@pytest.fixture(scope="module")
def single(tmp_path_factory, lslo_world):
    out = tmp_path_factory.mktemp("single")
    _launch(out, "single", RUNS, 1, lslo_world=lslo_world)
    return out


@pytest.fixture(scope="module")
def deepspeed_runs(tmp_path_factory, lslo_world):
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("deepspeed")
    runs = [f"{cfg[:-5]}-{m}-{ga}:{m}:{ga}:{cfg}" for cfg in DEEPSPEED for m, ga in CELLS]
    done = _launch(out, "deepspeed", runs, 2, lslo_world=lslo_world)
    return out, done.stderr


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, lslo_world):
    out = tmp_path_factory.mktemp("ddp")
    _launch(out, "ddp", RUNS, 2, lslo_world=lslo_world)
    return out


@pytest.fixture(scope="module")
def fsdp2_runs(tmp_path_factory, lslo_world):
    single, sharded = tmp_path_factory.mktemp("fsdp2-single"), tmp_path_factory.mktemp("fsdp2")
    _launch(single, "single", RUNS, 1, "_fsdp2_run.py", lslo_world=lslo_world)
    _launch(sharded, "fsdp2", RUNS, 2, "_fsdp2_run.py", lslo_world=lslo_world)
    return single, sharded


def _compare(run: Path, reference: Path):
    import torch

    got, want = json.loads(run.with_suffix(".json").read_text()), json.loads(reference.with_suffix(".json").read_text())
    assert [h["step"] for h in got["logs"]] == [h["step"] for h in want["logs"]] == [1, 2, 3, 4]
    worst = 0.0
    for a, b in zip(got["logs"], want["logs"]):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(b["loss"]), (run.name, a["step"], a["loss"], b["loss"])
        worst = max(worst, abs(a["loss"] - b["loss"]) / abs(b["loss"]))
    # the run is long enough to mean something: the loss moved
    assert got["logs"][0]["loss"] != got["logs"][-1]["loss"]
    w_got, w_want = torch.load(run.with_suffix(".pt")), torch.load(reference.with_suffix(".pt"))
    assert w_got.keys() == w_want.keys()
    for name in w_want:
        assert w_got[name].shape == w_want[name].shape, name
        assert torch.allclose(w_got[name], w_want[name], rtol=0, atol=1e-5), \
            (run.name, name, float((w_got[name] - w_want[name]).abs().max()))
    weights = max(float((w_got[k] - w_want[k]).abs().max()) for k in w_want)
    print(f"{run.name}: {got['engine']} x {got['world_size']}: loss {worst:.1e}, weights {weights:.1e}")  # -s shows it
    if run.name.startswith("lslo") or "-lslo-" in run.name:
        _compare_lslo_adapter(run, reference)
    return got


def _compare_lslo_adapter(run: Path, reference: Path):
    """The saved adapters (written by rank 0 after every process gathered the weights): the same
    pruning masks (zeros of B), half of every language's B pruned, the same base fingerprint."""
    from safetensors.torch import load_file

    got, want = load_file(str(run / "lslo_model.safetensors")), load_file(str(reference / "lslo_model.safetensors"))
    assert got.keys() == want.keys()
    pools: dict[str, list[int]] = {}
    for name in want:
        if ".lora_b." in name:
            assert torch_equal(got[name] == 0, want[name] == 0), (run.name, name)
            pool = pools.setdefault(name.rsplit(".", 1)[1], [0, 0])
            pool[0] += int((want[name] == 0).sum())
            pool[1] += want[name].numel()
    # t1 = 1, t2 = 2, target 0.5: epoch 2 prunes 0.5 - 0.5 (1 - 1/2)^3 = 0.4375 of each pool (the
    # last epoch of GA 1), epochs 3 and 4 prune half (GA 2: 8 rows per step, one epoch per step)
    ratio = 0.5 if run.name.endswith("-2") else 0.4375
    assert sorted(pools) == ["qaa", "qab"] and all(zeros == round(ratio * n) for zeros, n in pools.values()), pools
    meta_got, meta_want = (json.loads((d / "lslo_config.json").read_text()) for d in (run, reference))
    assert meta_got["base"] == meta_want["base"] and meta_want["base"]["weight_checksum"] > 0
    if (reference / "pruning_report.json").exists():  # the Trainer runs (xlt.lslo.run.train)
        report_got, report_want = (json.loads((d / "pruning_report.json").read_text()) for d in (run, reference))
        assert report_got["surviving"] == report_want["surviving"]
        # the Trainer's checkpoint of step 3 (saved by every process, written by rank 0) holds the
        # same adapter
        got, want = (load_file(str(d / "checkpoint-3" / "lslo_model.safetensors")) for d in (run, reference))
        assert got.keys() == want.keys()
        for name in want:
            assert float((got[name] - want[name]).abs().max()) <= 1e-5, (run.name, name)
            assert torch_equal(got[name] == 0, want[name] == 0), (run.name, name)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("method,ga", CELLS)
@pytest.mark.parametrize("config", list(DEEPSPEED))
def test_deepspeed_matches_one_process(deepspeed_runs, single, config, method, ga):
    out, stderr = deepspeed_runs
    got = _compare(out / f"{config[:-5]}-{method}-{ga}", single / f"{method}-{ga}")
    assert (got["engine"], got["world_size"]) == (DEEPSPEED[config], 2)
    # parameter counts see through ZeRO-3's empty placeholders (xlt pretrain reports this count):
    # the one-process run's plain count
    want = json.loads((single / f"{method}-{ga}.json").read_text())["n_numel"]
    assert got["n_parameters"] == want > 0
    if config == "zero3.json" and method == "pretrain":
        assert got["n_numel"] < want  # the placeholders: a plain count would be wrong
    # DeepSpeed's fp32 copy of the weights (what it steps and resumes from) is the model's: LSLo's
    # pruning, made permanent in the model, is made permanent there too
    assert got["fp32_copy"] == 0.0


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("method,ga", CELLS)
def test_ddp_matches_one_process(ddp_runs, single, method, ga):
    got = _compare(ddp_runs / f"{method}-{ga}", single / f"{method}-{ga}")
    assert (got["engine"], got["world_size"]) == ("ddp", 2)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("method,ga", CELLS)
def test_fsdp2_matches_one_process_and_keeps_early_exit(fsdp2_runs, method, ga):
    single, sharded = fsdp2_runs
    got = _compare(sharded / f"{method}-{ga}", single / f"{method}-{ga}")
    assert (got["engine"], got["world_size"]) == ("fsdp2", 2)
    if method in METHODS:  # FSDP2 allows the early exit: every alignment forward took it
        assert got["early_exit"] == (4 if method == "afp" else 2) * ga
    if method == "lslo":
        # the tied embeddings and head stay one tensor when sharded, and the pruning went the same way
        assert got["tied"] is True and got["sharded"] is True
        want = json.loads((single / f"{method}-{ga}.json").read_text())
        assert got["pruned"] == want["pruned"] and got["pruned"][-1] > 0
        assert got["surviving"] == want["surviving"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_deepspeed_refuses_early_exit_once_per_process(deepspeed_runs):
    _, stderr = deepspeed_runs
    lines = [line for line in stderr.splitlines() if "early exit is off" in line]
    assert len(lines) == 2, lines  # one warning per process, for all twelve runs
    assert "DeepSpeed engine" in lines[0]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_fsdp_that_accelerate_ignores_on_a_cpu_is_refused_not_run_as_ddp(tiny_llama_dir, tmp_path):
    from _align_helpers import tiny_texts

    tasks, _ = tiny_texts(8)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"lang": "qaa", "prompt": t.prompt, "completion": t.completion}) + "\n"
                             for t in tasks))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "xlt",
           "train", "sft", "--model", str(tiny_llama_dir), "--train_file", str(train), "--use_cpu", "true",
           "--fsdp", "full_shard", "--max_steps", "1", "--output_dir", str(tmp_path / "never")]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    refusal = ("xlt: error: --fsdp: accelerate set up ddp x 2 processes instead of FSDP2 (it runs FSDP only "
               "on GPUs or other accelerators, not on a CPU); refusing to train unsharded")
    assert done.stderr.count(refusal) == 2, done.stderr[-3000:]  # one line from each process
    assert not (tmp_path / "never" / "train_config.json").exists()


def test_fsdp_example_config_is_version_2_and_version_1_is_refused(monkeypatch):
    from types import SimpleNamespace

    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    from xlt.engines import check_fsdp_version
    from xlt.errors import ConfigError

    config = load_config_from_file(str(HERE.parent / "examples" / "fsdp" / "fsdp2.yaml"))
    assert config.distributed_type == DistributedType.FSDP and config.fsdp_config["fsdp_version"] == 2
    # `accelerate launch --config_file` exports the version; xlt accepts 2 and refuses 1
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", str(config.fsdp_config["fsdp_version"]))
    check_fsdp_version(SimpleNamespace(fsdp=None))
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="use FSDP version 2"):
        check_fsdp_version(SimpleNamespace(fsdp=None))
    # --fsdp through the Trainer is version 2 unless its fsdp_config says 1
    check_fsdp_version(SimpleNamespace(fsdp=True, fsdp_config={}))
    with pytest.raises(ConfigError, match="use FSDP version 2"):
        check_fsdp_version(SimpleNamespace(fsdp=True, fsdp_config={"version": 1}))
