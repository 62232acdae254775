"""AdaMergeX LoRA merge at Llama-2-7B scale: exact factor concatenation vs a dense dW merge.

Three LoRA adapters shaped like Llama-2-7B's (r = 8, alpha = 16 on q, k, v, o, gate, up, down in
all 32 layers; hidden 4096, intermediate 11008; random fp32 tensors, about 80 MB each) are
written as real PEFT adapter directories in a temporary directory. Variants, each run in a fresh
subprocess so that its memory is its own:

* ``delta``  — ``xlt.merge``: read the three directories, ``adamergex(..., mode="delta")``
  (concatenated factors, rank 24, no dense matrix), write the adapter directory;
* ``rank8``  — the same with ``rank=8`` (QR of the stacked factors + SVD of a 24 x 24 core);
* ``dense``  — read the three directories, then module by module form
  ``dW = s B1 A1 + t (s B2 A2 - s B3 A3)`` densely in fp32 into a buffer reused for every module
  of the same shape (``mm`` + two ``addmm_``; memory bounded by one buffer per shape). The full
  dense result would be ~25 GB, so it is neither kept nor written: the dense time is a lower
  bound for any dense merge (merge into the base, or SVD re-factorisation as PEFT's ``svd``).

Peak memory: after the imports the child resets the kernel's peak-RSS counter
(``/proc/self/clear_refs`` = 5) and records its RSS; peak = VmHWM at the end minus that
baseline. Where ``clear_refs`` is unavailable it falls back to ``ru_maxrss`` minus the RSS
after imports. Variants alternate over ``--repeats`` rounds; medians are reported.

    python benchmarks/bench_merge.py [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

LAYERS, HIDDEN, INTER, R, ALPHA = 32, 4096, 11008, 8, 16
MODULES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
           "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
           "mlp.gate_proj": (HIDDEN, INTER), "mlp.up_proj": (HIDDEN, INTER),
           "mlp.down_proj": (INTER, HIDDEN)}  # name: (in, out)
T = 0.5


def write_inputs(root: Path) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    dirs = []
    for k, name in enumerate(("task", "ref_tgt", "ref_src")):
        g = torch.Generator().manual_seed(k + 1)
        sd = {}
        for layer in range(LAYERS):
            for mod, (fan_in, fan_out) in MODULES.items():
                key = f"base_model.model.model.layers.{layer}.{mod}"
                sd[f"{key}.lora_A.weight"] = torch.randn(R, fan_in, generator=g) * 0.01
                sd[f"{key}.lora_B.weight"] = torch.randn(fan_out, R, generator=g) * 0.01
        d = root / name
        d.mkdir()
        save_file(sd, str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": R, "lora_alpha": ALPHA,
                  "target_modules": sorted(m.split(".")[-1] for m in MODULES), "lora_dropout": 0.05,
                  "bias": "none", "base_model_name_or_path": "NousResearch/Llama-2-7b-hf",
                  "fan_in_fan_out": False, "inference_mode": True, "rank_pattern": {},
                  "alpha_pattern": {}, "use_rslora": False, "use_dora": False}
        (d / "adapter_config.json").write_text(json.dumps(config))
        dirs.append(d)
    return dirs


# ------------------------------------------------------------------------------ child process


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def child(variant: str, inputs: list[str], out: str, device: str) -> dict:
    import resource

    import torch

    from xlt.merge import adamergex, read_adapter, write_adapter

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        pass
    base_kib = _rss_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    states = [read_adapter(p) for p in inputs]
    if device != "cpu":
        for s in states:
            s.tensors = {k: v.to(device) for k, v in s.tensors.items()}
    read_s = time.perf_counter() - start
    m0 = time.perf_counter()
    if variant in ("delta", "rank8"):
        result = adamergex(*states, T, mode="delta", rank=8 if variant == "rank8" else None)
        merge_s = time.perf_counter() - m0
        if device != "cpu":
            result.adapter.tensors = {k: v.cpu() for k, v in result.adapter.tensors.items()}
        w0 = time.perf_counter()
        write_adapter(result.adapter, out)
        write_s = time.perf_counter() - w0
        out_bytes = (Path(out) / "adapter_model.safetensors").stat().st_size
    else:
        s = ALPHA / R
        checksum = 0.0
        dense_bytes = 0
        sds = [st.tensors for st in states]
        buffers: dict = {}  # one (out, in) fp32 buffer per shape, reused module after module
        for key in [k for k in sds[0] if k.endswith("lora_A.weight")]:
            bkey = key.replace("lora_A", "lora_B")
            shape = (sds[0][bkey].shape[0], sds[0][key].shape[1])
            dw = buffers.get(shape)
            if dw is None:
                dw = buffers[shape] = torch.empty(shape, device=sds[0][key].device)
            torch.mm(sds[0][bkey], sds[0][key], out=dw).mul_(s)
            dw.addmm_(sds[1][bkey], sds[1][key], alpha=T * s)
            dw.addmm_(sds[2][bkey], sds[2][key], alpha=-T * s)
            checksum += float(dw[0, 0])
            dense_bytes += dw.numel() * dw.element_size()
        if device != "cpu":
            torch.cuda.synchronize()
        merge_s = time.perf_counter() - m0
        write_s = 0.0
        out_bytes = dense_bytes  # what a dense fp32 result would occupy
    total_s = time.perf_counter() - start
    if reset:
        peak_kib = (_rss_kib("VmHWM") or 0) - base_kib
        how = "VmHWM after clear_refs reset, minus VmRSS after imports"
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kib
        how = "ru_maxrss minus RSS after imports"
    return {"variant": variant, "total_s": total_s, "read_s": read_s, "merge_s": merge_s,
            "write_s": write_s, "peak_extra_bytes": peak_kib * 1024, "output_bytes": out_bytes,
            "memory_method": how}


# ------------------------------------------------------------------------------ driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default="delta,dense,rank8")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "merge.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", nargs="*", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda but CUDA is not available")
    if args.child:
        print(json.dumps(child(args.child, args.inputs, args.child_out, args.device)))
        return 0

    variants = args.variants.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        root = Path(tmp)
        inputs = write_inputs(root)
        input_bytes = sum((d / "adapter_model.safetensors").stat().st_size for d in inputs)
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for rep in range(args.repeats):
            for variant in variants:  # alternate the variants within each round
                out = root / f"out-{variant}-{rep}"
                cmd = [sys.executable, __file__, "--child", variant, "--device", args.device,
                       "--child-out", str(out), "--inputs", *map(str, inputs)]
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                runs[variant].append(result)
                print(f"round {rep + 1} {variant:6s} total {result['total_s']:.2f} s "
                      f"(read {result['read_s']:.2f}, merge {result['merge_s']:.2f}, write {result['write_s']:.2f}) "
                      f"peak +{result['peak_extra_bytes'] / 2**20:.0f} MiB", flush=True)
                import shutil

                shutil.rmtree(out, ignore_errors=True)
    summary = {}
    for variant, rs in runs.items():
        summary[variant] = {k: statistics.median(r[k] for r in rs)
                            for k in ("total_s", "read_s", "merge_s", "write_s", "peak_extra_bytes", "output_bytes")}
        summary[variant]["peak_over_inputs"] = summary[variant]["peak_extra_bytes"] / input_bytes
    print(f"\ninputs: 3 adapters, {input_bytes / 2**20:.0f} MiB in all; t = {T}; medians of {args.repeats}")
    for variant, s in summary.items():
        print(f"{variant:6s} total {s['total_s']:.2f} s, merge {s['merge_s']:.2f} s, "
              f"peak +{s['peak_extra_bytes'] / 2**20:.0f} MiB ({s['peak_over_inputs']:.2f}x inputs), "
              f"output {s['output_bytes'] / 2**20:.0f} MiB")
    if "delta" in summary and "dense" in summary:
        d, n = summary["delta"], summary["dense"]
        print(f"dense / delta: merge time x{n['merge_s'] / d['merge_s']:.1f}, total time "
              f"x{n['total_s'] / d['total_s']:.1f}, output size x{n['output_bytes'] / d['output_bytes']:.0f}")
    record = {"benchmark": "merge", "device": args.device, "repeats": args.repeats, "t": T,
              "shape": {"layers": LAYERS, "hidden": HIDDEN, "intermediate": INTER, "r": R, "modules": list(MODULES)},
              "input_bytes": input_bytes, "memory_method": runs[variants[0]][0]["memory_method"],
              "median": summary, "runs": runs, "cpu_count": os.cpu_count()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
