"""``xlt demo``: the five methods side by side in a synthetic world, resumable, with a report.

The run is a list of steps; each finished step writes ``DIR/steps/<name>.json`` atomically
and is skipped when the demo runs again with the same settings. A step that fails is
recorded (``DIR/steps/<name>.error.json``), the rest of the demo goes on, and the report says
what is missing. With ``--jobs N`` (default on a CPU: 2 where there are 2 cores, but 1 with
``--quick``) up to N steps whose inputs are ready run at once, each in its own process
(``xlt demo --step NAME``) on ``--threads`` threads; every step is seeded and single-process,
so its result does not depend on what runs beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from xlt.errors import ConfigError, OutputExistsError


@dataclass
class Step:
    name: str
    title: str
    run: Callable[[], dict]
    needs: tuple[str, ...] = ()


def demo_command(argv: list[str], prog: str) -> int:
    from xlt.config import ArgumentParser

    parser = ArgumentParser(prog=prog, description=(
        "Run the toolkit's methods side by side in a synthetic world: pre-train a tiny base model, "
        "SFT / mid-align / AFP task transfer, AdaMergeX, LSLo against a shared LoRA, cloned-language "
        "pre-training; write DIR/report.md, DIR/results.json and PNG plots. A rerun skips finished steps."))
    parser.add_argument("--out", default="demo-out", help="output directory")
    parser.add_argument("--quick", action="store_true", help="a small run (about 2 minutes; the test suite's)")
    parser.add_argument("--full", action="store_true",
                        help="add the reproduction experiments (docs/demo.md): several worlds, base models and "
                             "seeds, paired arms with controls, a verdict per claim")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of every fine-tuning experiment")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto = cuda if available")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for these tiny models on a busy machine)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over: remove DIR first (otherwise finished steps are kept)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="steps run at once, each in its own process (default: up to 2, one per "
                             "CPU core; 1 on a GPU and with --quick, whose steps are shorter than a "
                             "worker's start-up)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)  # a worker's one step
    args = parser.parse_args(argv)
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    from xlt.demo.settings import default_settings

    settings = default_settings(args.quick)
    settings["seeds"] = list(range(args.seeds))
    settings["quick"] = bool(args.quick)
    if args.full:
        from xlt.demo.settings import full_settings

        settings["full"] = full_settings(args.quick)
    out = Path(args.out)
    stamp = out / "settings.json"
    if out.exists() and args.overwrite:
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()):
        if not stamp.is_file():
            raise OutputExistsError(out)
        previous = json.loads(stamp.read_text(encoding="utf-8"))
        if previous != json.loads(json.dumps(settings)):
            raise ConfigError(f"{out}: holds a demo run with other settings (see {stamp}); "
                              "pass --overwrite to start over or choose another --out")
    if args.step is not None:  # one step, in a worker process of a parallel run
        return run_demo(out, settings, device=args.device, threads=args.threads, progress=False, only=args.step)
    out.mkdir(parents=True, exist_ok=True)
    from xlt.io import write_json

    write_json(stamp, settings)
    jobs = args.jobs
    if jobs is None:
        jobs = 1 if args.quick or _device(args.device) == "cuda" else max(1, min(2, os.cpu_count() or 1))
    worker = [sys.executable, "-m", "xlt", "demo", "--out", str(out), "--seeds", str(args.seeds),
              "--device", args.device, "--threads", str(args.threads), "--no-progress"]
    if args.quick:
        worker.append("--quick")
    if args.full:
        worker.append("--full")
    return run_demo(out, settings, device=args.device, threads=args.threads, progress=not args.no_progress,
                    jobs=jobs, worker=worker)


def _schedule(steps_dir: Path, pending: list, running: dict, failed: dict, jobs: int, worker, bar,
              tr, write_json, tqdm) -> None:
    """Run the ``pending`` steps in order as their inputs become ready: here one by one, or with
    ``jobs > 1`` as up to ``jobs`` worker processes (``running``); errors go into ``failed``."""
    while pending or running:
        for step in list(pending):  # a step whose inputs failed cannot run
            missing = [n for n in step.needs if n in failed]
            if missing:
                failed[step.name] = f"skipped: needs {', '.join(missing)}"
                pending.remove(step)
                bar.update(1)
        ready = [s for s in pending if all((steps_dir / f"{n}.json").is_file() for n in s.needs)]
        if not ready and not running:  # nothing can run: needs neither done nor failed
            for step in pending:
                failed[step.name] = "skipped: needs " + ", ".join(
                    n for n in step.needs if not (steps_dir / f"{n}.json").is_file())
            break
        if jobs <= 1 or worker is None:
            step = ready[0]
            pending.remove(step)
            bar.set_postfix_str(step.title)
            error = _run_step(step, steps_dir, tr, write_json, tqdm)
            if error is not None:
                failed[step.name] = error
            bar.update(1)
            continue
        while ready and len(running) < jobs:
            step = ready.pop(0)
            pending.remove(step)
            running[step.name] = subprocess.Popen(worker + ["--step", step.name])
        bar.set_postfix_str(", ".join(running))
        time.sleep(0.2)
        for name, proc in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[name]
            bar.update(1)
            if code != 0 or not (steps_dir / f"{name}.json").is_file():
                error_file = steps_dir / f"{name}.error.json"
                failed[name] = (json.loads(error_file.read_text(encoding="utf-8"))["error"]
                                if error_file.is_file() else f"worker exited with code {code}")


def _run_step(step: Step, steps_dir: Path, tr, write_json, tqdm) -> str | None:
    """Run one step and write its result (or its error) under ``steps_dir``; the error or None."""
    t0 = time.time()
    try:
        result = step.run()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one experiment failing must not lose the others
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        write_json(steps_dir / f"{step.name}.error.json", {"error": error, "traceback": traceback.format_exc()})
        tqdm.write(f"xlt demo: step {step.name} failed: {error}", file=sys.stderr)
        return error
    result = tr.jsonable(result)
    result["seconds"] = round(time.time() - t0, 1)
    write_json(steps_dir / f"{step.name}.json", result)
    (steps_dir / f"{step.name}.error.json").unlink(missing_ok=True)
    tqdm.write(f"xlt demo: {step.name} done in {result['seconds']:.0f} s", file=sys.stderr)
    return None


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return name


def run_demo(out: Path, settings: dict, *, device: str = "auto", threads: int = 1, progress: bool = True,
             jobs: int = 1, worker: list[str] | None = None, only: str | None = None) -> int:
    """Run the demo's steps (``jobs`` at a time, each as ``worker + ["--step", name]``, when
    ``jobs > 1``) and write the report; ``only``: run that one step here, no report."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch
    import transformers
    from tqdm.auto import tqdm

    from xlt.demo import experiments as ex
    from xlt.demo import transfer as tr
    from xlt.demo.report import write_report
    from xlt.io import write_json

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import huggingface_hub

        huggingface_hub.utils.disable_progress_bars()
    except Exception:  # an older hub without the switch: bars stay
        pass
    import warnings

    warnings.filterwarnings("ignore")
    device = _device(device)
    if device == "cpu":
        torch.set_num_threads(max(1, threads))
    steps_dir = out / "steps"
    steps_dir.mkdir(exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    world = out / "world"
    base = out / "models" / "base"
    adapters = out / "models" / "adapters"
    seeds = settings["seeds"]
    s_tr = settings["transfer"]

    def codes() -> list[str]:
        return [l["code"] for l in tr.world_info(world)["languages"]]

    steps: list[Step] = [
        Step("world", "generate the world", lambda: tr.make_world(world, settings["world"])),
        Step("base", "pre-train the base model",
             lambda: tr.pretrain_lm([world / "corpus" / f"{c}.txt" for c in codes()], world / "tokenizer", base,
                                    settings["base"], seed=0, device=device, progress=False),
             needs=("world",)),
        Step("base-eval", "evaluate the base model (no fine-tuning)",
             lambda: tr.evaluate_transfer(base, None, world, split="test", limit=s_tr["test_limit"],
                                          device=device, tasks=s_tr["tasks"]), needs=("base",)),
    ]

    def transfer_step(method: str, seed: int, s: dict, tag: str = "") -> Callable[[], dict]:
        def run() -> dict:
            adapter = adapters / f"{tag}{method}-s{seed}"
            t0 = time.time()
            train = tr.train_method(method, base, world, adapter, s, seed=seed, device=device, progress=False)
            t1 = time.time()
            scores = {}
            for split in ("dev", "test"):
                scores[split] = tr.evaluate_transfer(base, adapter, world, split=split, limit=s["test_limit"],
                                                     device=device, tasks=s["tasks"])
            return {"train": train, "scores": scores, "train_seconds": round(t1 - t0, 1),
                    "eval_seconds": round(time.time() - t1, 1)}
        return run

    for seed in seeds:
        for method in s_tr["methods"]:
            steps.append(Step(f"transfer-{method}-s{seed}", f"{method}, seed {seed}",
                              transfer_step(method, seed, s_tr), needs=("base",)))
    s_roles = {**s_tr, **settings["transfer_roles"]}
    for seed in [x for x in seeds if x in s_roles["seeds"]]:
        for method in s_tr["methods"]:
            steps.append(Step(f"transfer-roles-{method}-s{seed}", f"{method} on roles, seed {seed}",
                              transfer_step(method, seed, s_roles, "roles-"), needs=("base",)))
    for seed in seeds[:settings["adamergex"].get("seeds", len(seeds))]:
        steps.append(Step(f"adamergex-s{seed}", f"AdaMergeX, seed {seed}",
                          lambda seed=seed: ex.adamergex_experiment(
                              base, world, out / "models" / f"adamergex-s{seed}",
                              settings["adamergex"], seed=seed, device=device, progress=False),
                          needs=("base",)))
    for seed in seeds[:settings["lslo"]["seeds"]]:
        steps.append(Step(f"lslo-s{seed}", f"LSLo vs shared LoRA, seed {seed}",
                          lambda seed=seed: ex.lslo_experiment(world, out / "models" / f"lslo-s{seed}",
                                                               settings["lslo"], seed=seed, device=device),
                          needs=("world",)))
    for seed in seeds[:settings["cloned"]["seeds"]]:
        for share in settings["cloned"]["shares"]:
            tag = f"{round(share * 100)}-{round((1 - share) * 100)}"
            steps.append(Step(f"cloned-{tag}-s{seed}", f"cloned language {tag}, seed {seed}",
                              lambda share=share, seed=seed, tag=tag: ex.cloned_experiment(
                                  world, out / "models" / f"cloned-{tag}-s{seed}", settings["cloned"],
                                  share=share, seed=seed, device=device, progress=False),
                              needs=("world",)))

    if settings.get("full"):
        from xlt.demo.full import full_steps

        steps += full_steps(out, settings["full"], device=device, step_class=Step)

    if only is not None:
        by_name = {step.name: step for step in steps}
        if only not in by_name:
            raise ConfigError(f"--step {only!r}: no such step (steps: {', '.join(by_name)})")
        return 0 if _run_step(by_name[only], steps_dir, tr, write_json, tqdm) is None else 1

    start = time.time()
    failed: dict[str, str] = {}
    bar = tqdm(steps, desc="xlt demo", unit="step", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    pending = [step for step in steps if not (steps_dir / f"{step.name}.json").is_file()]
    bar.update(len(steps) - len(pending))
    running: dict[str, subprocess.Popen] = {}
    try:
        _schedule(steps_dir, pending, running, failed, jobs, worker, bar, tr, write_json, tqdm)
    finally:  # an interrupted demo leaves no worker behind
        for proc in running.values():
            proc.kill()
            proc.wait()
    bar.close()
    wall = time.time() - start
    results = {name: json.loads((steps_dir / f"{name}.json").read_text(encoding="utf-8"))
               for name in (s.name for s in steps) if (steps_dir / f"{name}.json").is_file()}
    done = len(results)
    if settings.get("full"):
        from xlt.demo.full import mid_align_table, reproductions

        results["reproduction"] = reproductions(settings, results)
        results["full_mid_align"] = mid_align_table(settings["full"], results)
    write_report(out, settings, results, failed, wall_seconds=wall, device=device)
    print(f"xlt demo: report {out / 'report.md'}, results {out / 'results.json'} "
          f"({done}/{len(steps)} steps done, {wall:.0f} s this run)")
    return 0 if not failed else 1
