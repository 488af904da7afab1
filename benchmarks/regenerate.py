"""Regenerate the results files with their recorded commands, then re-render the tables.

    python benchmarks/regenerate.py --dry-run                  # ordered steps, commands, estimates
    python benchmarks/regenerate.py --list                     # groups and step names
    python benchmarks/regenerate.py                            # every default step, then render_tables.py
    python benchmarks/regenerate.py --only pkd-headline snn-digits benchmarks-speed
    python benchmarks/regenerate.py --skip neurons --include-long

Steps run one after the other as subprocesses from the repository root (``python`` is this interpreter,
with the checkout on ``PYTHONPATH``), in dependency order: the runs, then the plots drawn from their files,
then ``python benchmarks/render_tables.py`` and ``python benchmarks/verify_results.py``. The first step
that fails stops the sequence with a message naming it, its exit status and the steps not run; the tables
are then still re-rendered from whatever the finished steps wrote (every results file is written
atomically), and the exit status is 1.

Which steps run:

- **default groups**: ``pkd-headline`` (the 5-shot PKD cells of the six datasets x {paper, strict}; the Cora
  paper cell is the README's main command plus ``--output``), ``snn-digits`` (the digits tables with the
  ``small3`` / ``synergy`` models), ``benchmarks-speed`` (losses, neurons at T 4 16 64, rate-BP memory
  and speed with both neuron backends and the step breakdown, annotator client throughput),
  ``snn-dvs`` and ``distill-digits``; the plots of the PKD grid follow when a PKD cell runs;
- **optional groups**, run when named in ``--only`` or with ``--include-optional``: ``pkd-shots`` (the
  1- and 3-shot cells), ``pkd-selection`` (teacher pool, referee check, Washington strict 3-shot),
  ``ratebp-repeats``;
- **long groups** (hours on a 2-core CPU), run when named in ``--only`` or with ``--include-long``:
  ``snn-resnet18``, ``adaspec``, ``federated``, ``kd-detection``, ``pkd-scale`` (up to 169,343 nodes).

``--only`` and ``--skip`` take group or step names. Every PKD cell runs the exact command line
``benchmarks/pkd_grid.py`` runs (so the cells of one table stay comparable), and every other step the
command its results file records, with outputs under ``benchmarks/results/``.

The estimate of a step is the wall time its results file records (``wall_time_s``, at the top level or in
its provenance record); where a file records none, the estimate written in the step below (marked
``est.``) is used. Files kept as recorded, not regenerated here: the annotator accuracy runs (a
downloaded LLM), the llama.cpp valid-answer rate (a llama.cpp server build), and the ``pkd_scale_*``
before/after comparisons (earlier code).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "benchmarks/results"
DATASETS = ("cora", "citeseer", "cornell", "texas", "washington", "wisconsin")
PROTOCOLS = ("paper", "strict")
#: The README's main command (the Cora 5-shot paper cell adds ``--output``).
README_PKD = "python -m graphspike_kd.benchmarks.pkd --dataset cora"

DEFAULT, OPTIONAL, LONG = "default", "optional", "long"
RUN, PLOT, RENDER = 0, 1, 2


class Step(NamedTuple):
    """One command. ``output``: the results file whose recorded wall time estimates the step (relative
    to the repository root); ``estimate_s``: the estimate when that file records none."""

    name: str
    group: str
    command: str
    output: str | None = None
    estimate_s: float | None = None
    tier: str = DEFAULT
    phase: int = RUN


def pkd_cell_command(dataset: str, protocol: str, shots: int) -> str:
    """The command of one PKD cell, exactly as ``benchmarks/pkd_grid.py`` runs it; the Cora 5-shot paper
    cell is the README's main command plus ``--output``."""
    out = f"{RESULTS}/pkd_{dataset}_{protocol}_{shots}.json"
    if (dataset, protocol, shots) == ("cora", "paper", 5):
        return f"{README_PKD} --output {out}"
    return (
        f"python -m graphspike_kd.benchmarks.pkd --dataset {dataset} --shots {shots} --protocol {protocol} "
        f"--quiet --output {out}"
    )


def _snn(name: str, args: str, plot: bool = False) -> tuple[str, str]:
    """The command of an SNN benchmark run writing ``benchmarks/results/<name>.json`` (and its PNG), and
    that file."""
    out = f"{RESULTS}/{name}.json"
    cmd = f"python -m graphspike_kd.benchmarks.snn {args} --output {out}"
    if plot:
        cmd += f" --plot {RESULTS}/{name}.png"
    return cmd, out


def build_steps() -> list[Step]:
    """Every step, in the order they run."""
    steps: list[Step] = []
    for shots, group, tier in (
        (5, "pkd-headline", DEFAULT),
        (1, "pkd-shots", OPTIONAL),
        (3, "pkd-shots", OPTIONAL),
    ):
        for dataset in DATASETS:
            for protocol in PROTOCOLS:
                steps.append(
                    Step(
                        f"pkd-{dataset}-{protocol}-{shots}",
                        group,
                        pkd_cell_command(dataset, protocol, shots),
                        f"{RESULTS}/pkd_{dataset}_{protocol}_{shots}.json",
                        300.0,
                        tier,
                    )
                )

    small3 = "--T 4 --model small3 --neuron ratebp --seeds 0 1 2 3 4 5 6 7 8 9"
    official = f"{small3} --grad-scale 1/T"  # the papers' scale, which the tables compare against
    synergy = "--neuron synergy --threads 1 --quiet"
    for name, args, plot in (
        (
            "snn_digits_esd",
            f"--dataset digits --method vanilla ratebp esd {official} --epochs 20 --threads 1 --quiet",
            True,
        ),
        (
            "snn_digits_esd_5ep",
            f"--dataset digits --method vanilla ratebp esd {official} --epochs 5 --threads 1 --quiet",
            False,
        ),
        (
            "snn_digits_esd_beta0",
            f"--dataset digits --method esd --esd-beta 0 {small3} --epochs 20 --threads 1 --quiet",
            False,
        ),
        (
            "snn_digits_gradscale1",
            f"--dataset digits --method ratebp esd --grad-scale 1 {small3} --epochs 20 --threads 1 --quiet",
            False,
        ),
        (
            "snn_digits_gradscale1_5ep",
            f"--dataset digits --method ratebp esd --grad-scale 1 {small3} --epochs 5 --threads 1 --quiet",
            False,
        ),
        (
            "snn_digits_s2w",
            f"--dataset digits --method vanilla s2w w2s --T 1 2 4 --seeds 0 1 2 3 4 --epochs 20 {synergy}",
            True,
        ),
        (
            "snn_digits_s2w_5ep",
            f"--dataset digits --method vanilla s2w w2s --T 2 4 --seeds 0 1 2 3 4 --epochs 5 {synergy}",
            True,
        ),
        (
            "snn_digits_s2w_5ep_seeds5to9",
            f"--dataset digits --method vanilla s2w w2s --T 2 4 --seeds 5 6 7 8 9 --epochs 5 {synergy}",
            False,
        ),
    ):
        cmd, out = _snn(name, args, plot)
        steps.append(Step(name.replace("_", "-"), "snn-digits", cmd, out, 300.0))
    cmd, out = _snn(
        "snn_synthetic_dvs_cpu",
        "--dataset cifar10dvs --root /tmp/c10dvs_synth --write-synthetic 30 "
        "--split random_9to1 --method vanilla w2s --T 2 --model small --neuron synergy --epochs 12 "
        "--batch-size 16 --lr 0.1 --threads 1 --quiet",
    )
    steps.append(Step("snn-synthetic-dvs-cpu", "snn-dvs", cmd, out, 120.0))
    steps.append(
        Step(
            "distill-digits",
            "distill-digits",
            "python -m graphspike_kd.benchmarks.distill_digits --seeds 0 1 2 --student-hidden 8 "
            f"--steps 1000 --quiet --output {RESULTS}/distill_digits.json",
            f"{RESULTS}/distill_digits.json",
            150.0,
        )
    )

    # est.: losses 3 class counts x 21 rounds x 5 calls of 10 functions; neurons 5 runners x 3 T x 2 N x 11
    # reps plus torch.compile warm-up; ratebp one fresh process per method x T (x repeats); throughput
    # 3 rounds of 1600 annotations at concurrency 32, 4 and 32 without keep-alive, 100 ms per request
    for name, cmd, out, est in (
        ("losses", "python benchmarks/losses.py", "losses.json", 180.0),
        (
            "neurons",
            "python benchmarks/neurons.py --T 4 16 64 --N 65536 262144 --reps 9 --warmup 2 --skip-gpu",
            "neurons.json",
            900.0,
        ),
        ("ratebp", "python benchmarks/ratebp.py --T 4 16 --steps 3 --quiet", "ratebp.json", 300.0),
        (
            "ratebp-cpp",
            "python benchmarks/ratebp.py --T 4 16 --steps 3 --backend cpp --repeats 5 --quiet "
            f"--output {RESULTS}/ratebp_cpp.json",
            "ratebp_cpp.json",
            1200.0,
        ),
        (
            "ratebp-cpp-breakdown",
            "python benchmarks/ratebp.py --T 16 --steps 5 --backend cpp --breakdown "
            f"{RESULTS}/ratebp_cpp_breakdown.json",
            "ratebp_cpp_breakdown.json",
            120.0,
        ),
        (
            "annotator-throughput",
            "python benchmarks/annotator_throughput.py",
            "annotator_throughput.json",
            180.0,
        ),
    ):
        steps.append(Step(name, "benchmarks-speed", cmd, f"{RESULTS}/{out}", est))

    for i in (1, 2):
        steps.append(
            Step(
                f"ratebp-cpp-repeat{i}",
                "ratebp-repeats",
                "python benchmarks/ratebp.py --T 4 16 --steps 5 --backend cpp --methods bptt "
                f"ratebp_chunked --output {RESULTS}/ratebp_cpp_repeat{i}.json --quiet",
                f"{RESULTS}/ratebp_cpp_repeat{i}.json",
                600.0,
                OPTIONAL,
            )
        )
    steps += [
        Step(
            "pkdsel-teacher-pool",
            "pkd-selection",
            "python benchmarks/pkd_teacher_pool.py --dataset cora --shots 5 --seeds 0 1 2 3 4 "
            "--sizes 2 3 4 5 --distill --selectors ngs random majority confident --state-ablation "
            f"--output {RESULTS}/pkdsel_teacher_pool_cora_paper_5.json",
            f"{RESULTS}/pkdsel_teacher_pool_cora_paper_5.json",
            1200.0,
            OPTIONAL,
        ),
        Step(
            "pkdsel-referee-check",
            "pkd-selection",
            "python benchmarks/pkd_referee_check.py --dataset citeseer --shots 3 --seeds 0 1 2 3 4 "
            f"--output {RESULTS}/pkdsel_referee_check_citeseer_strict_3.json",
            f"{RESULTS}/pkdsel_referee_check_citeseer_strict_3.json",
            700.0,
            OPTIONAL,
        ),
    ]

    resnet = "--T 4 --model resnet18 --neuron ratebp"
    for method in ("ratebp", "esd"):
        for suffix, extra, seeds in (
            ("", "", "0 1 2 3 4"),
            ("_seeds5to9", "", "5 6 7 8 9"),
            ("_seeds10to19", "", "10 11 12 13 14 15 16 17 18 19"),
            ("_gradscale1", " --grad-scale 1", "0 1 2 3 4"),
            ("_gradscale1_seeds5to9", " --grad-scale 1", "5 6 7 8 9"),
        ):
            name = f"snn_digits_resnet18_{method}{suffix}"
            quiet = " --quiet" if suffix else ""  # as recorded: the first two runs print progress
            cmd, out = _snn(
                name,
                f"--dataset digits --method {method}{extra} {resnet} --seeds {seeds} --epochs 20 "
                f"--threads 1{quiet}",
            )
            steps.append(Step(name.replace("_", "-"), "snn-resnet18", cmd, out, 1800.0, LONG))
    steps += [
        Step(
            "adaspec",
            "adaspec",
            "python -m graphspike_kd.benchmarks.adaspec --seeds 0 1 2 --quiet",
            f"{RESULTS}/adaspec.json",
            2500.0,
            LONG,
        ),
        Step(
            "federated",
            "federated",
            "python -m graphspike_kd.benchmarks.federated --seeds 0 1 2 --quiet",
            f"{RESULTS}/federated.json",
            1500.0,
            LONG,
        ),
        Step(
            "kd-detection",
            "kd-detection",
            "python -m graphspike_kd.benchmarks.kd_detection --seeds 0 1 2 --quiet",
            f"{RESULTS}/kd_detection.json",
            750.0,
            LONG,
        ),
        Step(
            "kd-detection-mixed",
            "kd-detection",
            "python -m graphspike_kd.benchmarks.kd_detection --teachers mixed --seeds 0 1 2 "
            f"--output {RESULTS}/kd_detection_mixed.json --quiet",
            f"{RESULTS}/kd_detection_mixed.json",
            400.0,
            LONG,
        ),
        # est.: the sum of the recorded runs of PKDConfig.at_scale() (50 s + 265 s + 1,064 s, loaded)
        Step(
            "pkd-scale",
            "pkd-scale",
            "python benchmarks/pkd_scale.py --nodes 2708 30000 169343 --threads 2",
            None,
            1400.0,
            LONG,
        ),
        # est.: the recorded run (420 s, loaded)
        Step(
            "pkd-scale-degree14",
            "pkd-scale",
            "python benchmarks/pkd_scale.py --nodes 30000 --avg-degree 14 --threads 2 "
            f"--output {RESULTS}/pkd_scale_degree14.json --plot {RESULTS}/pkd_scale_degree14.png",
            None,
            420.0,
            LONG,
        ),
        # est.: the sum of the recorded runs (2.5 s + 37.5 s + 235.5 s) plus process start-up
        Step(
            "pkd-scale-short",
            "pkd-scale",
            "python benchmarks/pkd_scale.py --preset default --nodes 2708 30000 169343 --threads 2 "
            "--epochs 2 --ngs-rounds 1 "
            f"--round-epochs 2 --final-epochs 2 --output {RESULTS}/pkd_scale_short.json "
            f"--plot {RESULTS}/pkd_scale_short.png",
            None,
            330.0,
            LONG,
        ),
    ]

    cells = " ".join(
        f"{RESULTS}/pkd_{d}_{p}_{k}.json" for d in DATASETS for p in PROTOCOLS for k in (1, 3, 5)
    )
    steps.append(
        Step(
            "plot-pkd",
            "plots",
            f"python benchmarks/plot_pkd.py {cells} --output {RESULTS}/pkd_accuracy_vs_shots.png",
            None,
            15.0,
            phase=PLOT,
        )
    )
    steps.append(
        Step("render-tables", "render", "python benchmarks/render_tables.py", None, 15.0, phase=RENDER)
    )
    steps.append(
        Step("verify-results", "render", "python benchmarks/verify_results.py", None, 15.0, phase=RENDER)
    )
    return steps


def recorded_wall_time(path: Path) -> float | None:
    """The wall time a results file records (top level, else its provenance record), in seconds."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    for value in (data.get("wall_time_s"), (data.get("provenance") or {}).get("wall_time_s")):
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def estimate(step: Step, root: Path = ROOT) -> tuple[float, str]:
    """``(seconds, source)``: ``"recorded"`` from the step's results file, else ``"est."``."""
    if step.output is not None:
        wall = recorded_wall_time(root / step.output)
        if wall is not None:
            return wall, "recorded"
    return float(step.estimate_s or 0.0), "est."


def select(
    steps: list[Step],
    only: list[str] | None = None,
    skip: list[str] | None = None,
    include_optional: bool = False,
    include_long: bool = False,
) -> list[Step]:
    """The steps to run, in order. ``only`` and ``skip`` name groups or steps; an unknown name is an error.
    The PKD plot runs when a PKD cell does; rendering and verifying always run last."""
    known = {s.name for s in steps} | {s.group for s in steps}
    for name in (*(only or ()), *(skip or ())):
        if name not in known:
            raise ValueError(
                f"unknown step or group {name!r}; python benchmarks/regenerate.py --list names them"
            )
    only_set, skip_set = set(only or ()), set(skip or ())

    def wanted(s: Step) -> bool:
        if s.name in skip_set or s.group in skip_set:
            return False
        if only_set:
            return s.name in only_set or s.group in only_set
        return (
            s.tier == DEFAULT
            or (s.tier == OPTIONAL and include_optional)
            or (s.tier == LONG and include_long)
        )

    runs = [s for s in steps if s.phase == RUN and wanted(s)]
    pkd_ran = any(s.group in ("pkd-headline", "pkd-shots") for s in runs)
    plots = [
        s
        for s in steps
        if s.phase == PLOT
        and s.name not in skip_set
        and s.group not in skip_set
        and (s.name in only_set or s.group in only_set or pkd_ran)
    ]
    finals = [s for s in steps if s.phase == RENDER]
    return runs + plots + finals


def _fmt(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def dry_run(selected: list[Step], root: Path = ROOT) -> str:
    """The numbered plan: step, group, estimate and source, command; then the total."""
    lines, total = [], 0.0
    for i, s in enumerate(selected, 1):
        seconds, source = estimate(s, root)
        total += seconds
        lines.append(f"{i:3d}. {s.name} [{s.group}] ~{_fmt(seconds)} ({source})\n     {s.command}")
    lines.append(f"total: {len(selected)} steps, ~{_fmt(total)} (sequential)")
    return "\n".join(lines)


def argv_of(step: Step) -> list[str]:
    """The step's command as an argument list, ``python`` replaced by this interpreter."""
    argv = shlex.split(step.command)
    if argv[0] == "python":
        argv[0] = sys.executable
    return argv


def run(selected: list[Step], root: Path = ROOT) -> int:
    """Run the runs and plots in order; stop at the first failure; then render and verify."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    )
    body = [s for s in selected if s.phase != RENDER]
    finals = [s for s in selected if s.phase == RENDER]
    failed: Step | None = None
    for i, s in enumerate(body, 1):
        print(f"[{i}/{len(body)}] {s.name}: {s.command}", flush=True)
        start = time.time()
        code = subprocess.run(argv_of(s), cwd=root, env=env, check=False).returncode
        if code:
            failed = s
            rest = ", ".join(t.name for t in body[i:]) or "none"
            print(
                f"regenerate: step {s.name} failed (exit {code}) after {_fmt(time.time() - start)}: "
                f"{s.command}\nregenerate: not run: {rest}; re-rendering the tables from the files written "
                "so far",
                file=sys.stderr,
                flush=True,
            )
            break
        print(f"[{i}/{len(body)}] {s.name} done in {_fmt(time.time() - start)}", flush=True)
    for s in finals:
        print(f"{s.name}: {s.command}", flush=True)
        code = subprocess.run(argv_of(s), cwd=root, env=env, check=False).returncode
        if code and failed is None:
            print(f"regenerate: {s.name} failed (exit {code})", file=sys.stderr)
            return 1
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the ordered steps and estimates; run nothing"
    )
    p.add_argument("--list", action="store_true", help="print the groups and their steps")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these groups or steps")
    p.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="leave out these groups or steps")
    p.add_argument("--include-optional", action="store_true", help="add the optional groups")
    p.add_argument("--include-long", action="store_true", help="add the long groups (hours)")
    args = p.parse_args(argv)
    steps = build_steps()
    if args.list:
        groups: dict[str, list[Step]] = {}
        for s in steps:
            groups.setdefault(s.group, []).append(s)
        for group, members in groups.items():
            print(f"{group} ({members[0].tier}): {' '.join(s.name for s in members)}")
        return 0
    try:
        selected = select(steps, args.only, args.skip, args.include_optional, args.include_long)
    except ValueError as exc:
        p.error(str(exc))
    if args.dry_run:
        print(dry_run(selected))
        return 0
    return run(selected)


if __name__ == "__main__":
    sys.exit(main())
