"""The ``coagents`` command line: train, resume, replay, eval, plot, table, configs, datasets,
bench, demo, diagnose, study.

Imports are made inside each command, so ``coagents --help`` is instant and numpy's BLAS is pinned
to one thread before numpy is loaded (``sweep_processes.one_blas_thread``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from async_coagents import __version__
from async_coagents.errors import CoagentsError, ConfigError, DivergedError
from async_coagents.experiment.sweep_processes import one_blas_thread

one_blas_thread()  # before numpy loads: a run's numbers must not depend on the core count

#: Where `coagents bench --only multiplexer20` keeps its runs unless --out says otherwise.
MULTIPLEXER20_OUT = "runs/bench-multiplexer20"


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a pipe closed early fails here, not at exit
        return code
    except BrokenPipeError:  # `coagents eval DIR | head`: the reader left; end quietly
        # the Python recipe: point stdout at devnull, so the flush at exit fails no more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the subcommand's parser, so its usage is shown
        command = parser.subcommands.get(getattr(args, "command", None), parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.handler(args) or 0
    except CoagentsError as exc:
        print(f"coagents {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("coagents: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coagents",
        description="Coagent networks: neural networks trained as teams of reinforcement-learning "
                    "agents, in process or as asynchronous Ray actors.")
    parser.add_argument("--version", action="version", version=f"async_coagents {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a config (default: quickstart) into a run directory",
                       description="Train a built-in config (by name) or a TOML file. A list where "
                                   "one value is expected is a sweep: every combination runs.")
    p.add_argument("config", nargs="?", default="quickstart",
                   help="built-in config name (see `coagents configs`) or path to a .toml file")
    p.add_argument("--out", help="run directory (a sweep puts one directory per run inside it); "
                                 "default runs/<name>-<time>")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set network.lr=0.001 --set run.seed=[0,1,2]")
    p.add_argument("--data-dir", help="where to look for dataset files first")
    p.add_argument("--backend", choices=("local", "ray"), help="shortcut for --set backend.kind=")
    p.add_argument("--address", help="join the Ray cluster at this host:port: with --executor ray "
                                     "(or sweep.executor = \"ray\") the cluster the sweep's "
                                     "members run on; otherwise the layer actors' (implies "
                                     "--backend ray; shortcut for --set backend.address=)")
    _sweep_options(p)
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.set_defaults(handler=_train)

    p = sub.add_parser("resume", help="continue a run from its last checkpoint, bit-exactly, or "
                                      "the unfinished runs of a sweep")
    p.add_argument("run_dir", help="the run directory, or a sweep directory (it holds sweep.json)")
    p.add_argument("--address", help="continue a Ray run on the cluster at this address instead of "
                                     "the one in its config (the maths is unchanged); with "
                                     "--executor ray, the cluster the sweep's members run on")
    p.add_argument("--data-dir", help="where to look for dataset files first")
    _sweep_options(p)
    p.add_argument("--no-progress", action="store_true",
                   help="log lines instead of a progress bar")
    p.set_defaults(handler=_resume)

    p = sub.add_parser("replay", help="rerun a free-running Ray run (backend.schedule = free) "
                                      "in its recorded message order, deterministically, and "
                                      "compare: the same final weights, bit for bit")
    p.add_argument("run_dir", help="the free run's directory (a completed run)")
    p.add_argument("--out", help="the replay's run directory (default RUN_DIR-replay)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="where the replay runs (default local: in this process)")
    p.add_argument("--data-dir", help="where to look for dataset files first")
    p.add_argument("--no-progress", action="store_true",
                   help="log lines instead of a progress bar")
    p.set_defaults(handler=_replay)

    p = sub.add_parser("eval", help="evaluate the last checkpoint of a run (greedy)")
    p.add_argument("run_dir", help="the run directory")
    p.add_argument("--train", action="store_true", help="also evaluate on the training split")
    p.add_argument("--data-dir", help="where to look for dataset files first")
    p.set_defaults(handler=_eval)

    p = sub.add_parser("plot", help="learning curves, per-layer entropy and sparsity, "
                                     "staleness and gradient variance of runs as PNG files",
                       description="Runs that differ only in their seed are averaged (mean and "
                                   "standard error).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="directory for the PNG files (default: <first run>/plots)")
    p.add_argument("--metric", help="main metric, e.g. test_accuracy or test_mse")
    p.add_argument("--smooth", type=float, default=0.0, help="EMA smoothing factor in [0, 1)")
    p.add_argument("--x", default="step", choices=("step", "samples", "wall_s"))
    p.set_defaults(handler=_plot)

    p = sub.add_parser("table", help="results table of runs: a row per configuration, mean ± "
                                     "standard error over seeds of the final metrics and of the "
                                     "area under each curve",
                       description="Runs that differ only in run.seed are one configuration. "
                                   "Columns: the config keys that vary between configurations, "
                                   "the number of seeds, and for each metric its final value "
                                   "and its AUC: the trapezoid area under the curve against --x, "
                                   "divided by the x range (the curve's mean value). Only "
                                   "completed runs count. Markdown on stdout; --csv also writes "
                                   "CSV.")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="run directories, sweep directories, or directories holding them")
    p.add_argument("--csv", dest="csv_out", metavar="FILE", help="also write the table as CSV")
    p.add_argument("--metric", dest="metrics", action="append", default=[],
                   help="only this metric (repeatable); default every scalar metric the runs log")
    p.add_argument("--x", default="step", choices=("step", "samples", "wall_s"),
                   help="the x axis of the areas under the curves")
    p.set_defaults(handler=_table)

    p = sub.add_parser("configs", help="list the built-in configs, show one, or the schema")
    p.add_argument("name", nargs="?", help="show this built-in config")
    p.add_argument("--schema", action="store_true", help="print every key with type and default")
    p.set_defaults(handler=_configs)

    p = sub.add_parser("datasets", help="which datasets are available and where")
    p.add_argument("--data-dir", help="look here first (then $COAGENTS_DATA_DIR, then "
                                      "/usr/share/datasets)")
    p.set_defaults(handler=_datasets)

    p = sub.add_parser("bench", help="measure updates/s of the engine (and the Ray backend)",
                       description="Benchmarks, not tests: prints a table and JSON.")
    p.add_argument("--quick", action="store_true", help="shorter measurements")
    p.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    p.add_argument("--only", action="append", default=[],
                   help="run only benchmarks whose name contains this (repeatable); the learning "
                        "benchmark multiplexer20 and the whole even-longer sweep run only when "
                        "named")
    p.add_argument("--seeds", type=int, default=None,
                   help="multiplexer20: seeds per learner (default 5); even-longer: seeds per "
                        "config (default 200)")
    p.add_argument("--episodes", type=int, default=800_000,
                   help="multiplexer20: training episodes (updates at batch 1) per run")
    p.add_argument("--learners", default="",
                   help="multiplexer20: comma-separated learners (default: all)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="multiplexer20 and even-longer: runs (groups of replicas) at once in "
                        "local worker processes")
    p.add_argument("--updates", type=int, default=320_000,
                   help="even-longer: updates per run")
    p.add_argument("--out", default=MULTIPLEXER20_OUT,
                   help="multiplexer20 and even-longer (default runs/bench-even-longer): the "
                        "directory of its runs (an interrupted benchmark continues there)")
    p.add_argument("--paper-code", metavar="DIR",
                   help="paper-code: a checkout of the paper's repository "
                        "(Dhawgupta/gupta2021structural), to time against the engine")
    p.add_argument("--paper-python", default=sys.executable, metavar="PYTHON",
                   help="paper-code: a Python with torch and scikit-learn for the paper's code "
                        "(default: this one)")
    p.add_argument("--segments", type=int, default=160,
                   help="paper-code: updates per mean-block of the 200 (default 160: 32,000 "
                        "updates; the paper's even_longer runs 1,600)")
    p.add_argument("--rounds", type=int, default=2,
                   help="paper-code: how many times both codes run, alternately")
    p.set_defaults(handler=_bench)

    p = sub.add_parser("demo", help="the asynchronous-learning demo: one network under several "
                                    "windows, reward delays and clock rates, firing probabilities "
                                    "and the staleness correction, local and on Ray",
                       description="Trains the 6-bit multiplexer under each setting of each "
                                   "section and prints a table per section. windows (into OUT): "
                                   "windows, reward delays and clock rates; final accuracy and "
                                   "staleness per agent, Ray == local, learning_curves.png and "
                                   "staleness.png. asynchrony (into OUT/asynchrony): firing "
                                   "probabilities 1, 0.5, 0.1, per-layer reward delays, the "
                                   "staleness correction at window 32; final and prequential "
                                   "accuracy, firing fraction, importance ratio, staleness, a "
                                   "run of --ray-updates updates of each setting on Ray == local, "
                                   "and its figures.")
    p.add_argument("--out", help="where the runs and plots go (default runs/async-demo-<time>)")
    p.add_argument("--section", choices=["all", "windows", "asynchrony"], default="all",
                   help="the section to run (default: all)")
    p.add_argument("--updates", type=int, help="updates per setting (default 4000; 300 with "
                                               "--quick)")
    p.add_argument("--ray-updates", type=int, metavar="N",
                   help="asynchrony: updates of each setting on Ray, checked against a local run "
                        "of as many (default 500; 100 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="a short run of every setting (as the tests run it)")
    p.add_argument("--no-ray", action="store_true", help="only the in-process backend")
    p.set_defaults(handler=_demo)
    p = sub.add_parser("diagnose", help="measure every rule's gradient estimate against the exact "
                                        "gradient on a network small enough to enumerate",
                       description="Draws many independent gradient estimates from each rule at "
                                   "fixed parameters of a tiny network (4 binary inputs, Bernoulli "
                                   "hidden units, a categorical output) whose expected reward is "
                                   "computed exactly, and prints per layer the cosine with the "
                                   "exact gradient, the relative bias, the variance and a test of "
                                   "unbiasedness.")
    p.add_argument("--rules", default="all",
                   help="comma-separated rule names, or all (default: every registered rule)")
    p.add_argument("--hidden", default="3,3",
                   help="hidden layer widths (default 3,3; at most 16 binary units in all)")
    p.add_argument("--depths", help="also the variance per layer with this many hidden layers of "
                                    "the first --hidden width, e.g. 1,2,3,4")
    p.add_argument("--samples", type=int, help="draws per rule (default 10,000)")
    p.add_argument("--warmup", type=int, help="batches the rules' baselines and critics learn "
                                              "before the draws (default 1,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the task, the network and the draws")
    p.add_argument("--labels", default="random", choices=("random", "xor"),
                   help="a balanced random labelling of the inputs, or the parity of two bits")
    p.add_argument("--csv", help="also write every row to this CSV file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_diagnose)
    p = sub.add_parser("study", help="the reproduction study: run (or resume) a named study "
                                     "and write its report; --page gathers the reports into "
                                     "docs/results.md",
                       description="Runs every run of a named study that its compact results "
                                   "lack (a seed already recorded is never run again), records "
                                   "each in the compact results, and writes the study's report "
                                   "(tables, figures, Welch tests, verdicts) from them.")
    p.add_argument("name", nargs="?", help="the study (coagents study --list)")
    p.add_argument("--list", action="store_true", help="list the studies and their budgets")
    p.add_argument("--budget", help="the study's budget: paper (its own), or a smaller one "
                                    "(--list shows them); default paper")
    p.add_argument("--seeds", type=int, help="seeds per arm (default: the budget's)")
    p.add_argument("--arms", default="", help="run only the arms matching these comma-separated "
                                              "shell patterns (e.g. 'short-*'); the report "
                                              "covers every recorded arm")
    p.add_argument("--out", help="the study directory of its runs (default runs/study-NAME)")
    p.add_argument("--results", help="where the compact results and the report go (default "
                                     "OUT/results; e.g. docs/results/NAME)")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from the compact results alone; run nothing")
    p.add_argument("--page", action="store_true",
                   help="write docs/results.md from every study's compact results under "
                        "--results-root")
    p.add_argument("--results-root", default="docs/results",
                   help="--page: the directory holding one results directory per study")
    p.add_argument("--address", help="run the study's runs as Ray tasks on this cluster")
    p.add_argument("--data-dir", help="where to look for dataset files first")
    p.add_argument("--dataset", help="train the image arms on this IDX dataset instead of "
                                     "Fashion-MNIST, e.g. mnist, the paper's (`coagents "
                                     "datasets` says how to get it); give it its own --results")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    _sweep_options(p)
    p.set_defaults(handler=_study)
    parser.subcommands = sub.choices  # name -> parser, for errors in the subcommand's usage
    return parser


def _sweep_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=int, metavar="N",
                   help="run N members of a sweep at once: in local worker processes when N > 1 "
                        "(unless --executor ray), one after another in this process when N = 1; "
                        "default sweep.jobs")
    p.add_argument("--executor", choices=("local", "processes", "ray"),
                   help="where a sweep's members run: local (in this process), processes (local "
                        "worker processes, one per CPU unless --jobs), ray (Ray tasks, as many as "
                        "the cluster's CPUs hold unless --jobs; the sweep directory must be on "
                        "storage every node sees); default sweep.executor")


# ---- commands ----------------------------------------------------------------------------------
def train_overrides(args: argparse.Namespace, *, address_to_backend: bool | None = None) -> list[str]:
    """The ``--set`` overrides of a ``coagents train`` command line, its shortcuts included.
    ``--address`` names the layer actors' cluster (``backend.address``, implying the Ray backend)
    unless the sweep runs on the Ray executor (``address_to_backend``; default: unless
    ``--executor ray``), whose cluster it then is."""
    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"backend.kind={args.backend}")
    if address_to_backend is None:
        address_to_backend = getattr(args, "executor", None) != "ray"
    if args.address and address_to_backend:
        overrides.append(f'backend.address="{args.address}"')
        if not args.backend:  # a cluster address means the Ray backend
            overrides.append("backend.kind=ray")
    return overrides


def _train(args) -> int:
    from async_coagents.experiment import config as cfg

    runs = cfg.load(args.config, train_overrides(args))
    if args.address and args.executor is None and runs[0][0]["sweep"]["executor"] == "ray":
        runs = cfg.load(args.config, train_overrides(args, address_to_backend=False))
    name = runs[0][0]["name"]
    out = Path(args.out or _new_run_dir(name))
    progress = False if args.no_progress else None
    if len(runs) == 1:
        from async_coagents.experiment.run import train

        if args.jobs not in (None, 1) or args.executor not in (None, "local"):
            logging.getLogger(__name__).info("--jobs and --executor apply to sweeps: this one run "
                                             "trains in this process")
        return _one_run(out, lambda: train(runs[0][0], out, progress=progress,
                                           data_dir=args.data_dir))
    from async_coagents.experiment.sweep import Sweep, execution

    plan = execution(runs[0][0]["sweep"], executor=args.executor, jobs=args.jobs,
                     address=args.address)
    return _sweep(Sweep.plan(out, runs), plan, progress=progress, data_dir=args.data_dir)


def _resume(args) -> int:
    from async_coagents.experiment.run import resume
    from async_coagents.experiment.sweep import Sweep, execution, is_sweep

    progress = False if args.no_progress else None
    if is_sweep(args.run_dir):
        sweep = Sweep.open(args.run_dir)
        section = sweep.members[0].config["sweep"] if sweep.members else None
        if section is None:
            from async_coagents.experiment.config import defaults

            section = defaults()["sweep"]
        plan = execution(section, executor=args.executor, jobs=args.jobs, address=args.address)
        # with the Ray executor --address is the sweep's cluster; otherwise the members' own move
        return _sweep(sweep, plan, progress=progress, data_dir=args.data_dir,
                      address=None if plan.executor == "ray" else args.address)
    return _one_run(Path(args.run_dir), lambda: resume(args.run_dir, progress=progress,
                                                       address=args.address,
                                                       data_dir=args.data_dir))


def _replay(args) -> int:
    from async_coagents.experiment.replay import replay

    result = replay(args.run_dir, args.out, backend=args.backend,
                    progress=False if args.no_progress else None, data_dir=args.data_dir)
    print(_summary_line(result["out"], result["summary"]))
    same = result["same_weights"] and result["same_metrics"]
    print(f"the replay ends {'with' if result['same_weights'] else 'WITHOUT'} the free run's final "
          f"weights, bit for bit, and {'the same' if result['same_metrics'] else 'DIFFERENT'} "
          "metrics rows (timings aside)")
    return 0 if same else 1


def _one_run(path: Path, run) -> int:
    """Train or resume one run; print its summary line, and how to continue an interrupted run."""
    try:
        summary = run()
    except DivergedError:  # the summary line says where the run is; main prints the error
        from async_coagents.experiment.run import RunDirectory

        diverged = RunDirectory(path).summary()
        if diverged is not None:
            print(_summary_line(path, diverged))
        raise
    except KeyboardInterrupt:  # a second Ctrl-C stops at once: the last checkpoint stays
        print("coagents: interrupted", file=sys.stderr)
        if (path / "config.json").exists():
            print(f"continue it with: coagents resume {path}")
        return 130
    print(_summary_line(path, summary))
    if summary["status"] == "interrupted":
        print(f"continue it with: coagents resume {path}")
        return 130
    return 0


def _sweep(sweep, plan, *, progress: bool | None, data_dir: str | None,
           address: str | None = None) -> int:
    """Run a sweep's unfinished members as ``plan`` (an ``Execution``) says, a line per member,
    then the closing summary."""
    def line(member) -> str:
        target = sweep.directory(member)
        if member.summary is not None and member.status in ("completed", "interrupted"):
            return _summary_line(target, member.summary)
        error = member.error or ""
        said = error if error.startswith(member.status) else f"{member.status}: {error}"
        return f"{target.name}: {said}  -> {target}"

    if not plan.parallel or not sweep.unfinished():  # nothing to run: start no executor
        sweep.run(report=lambda member: print(line(member)), progress=progress,
                  data_dir=data_dir, address=address)
    else:
        from async_coagents.experiment.progress import SweepProgress
        from async_coagents.experiment.sweep import open_executor

        executor = open_executor(plan, sweep, data_dir=data_dir, address=address)
        display = SweepProgress(enabled=progress)
        logging.getLogger(__name__).info("sweep %s: %d runs, %s", sweep.path, len(sweep.members),
                                         _where(plan, executor))
        try:
            sweep.run_parallel(executor, max_retries=plan.max_retries, display=display,
                               report=lambda member: display.write(line(member)))
        finally:
            executor.close()
    print("\n".join(sweep.summary_lines()))
    return sweep.exit_code()


def _where(plan, executor) -> str:
    """Where a parallel sweep's members run, in words."""
    if plan.executor == "ray":
        cluster = f"the Ray cluster at {plan.address}" if plan.address else (
            "a private local Ray instance" if executor.started_ray else "the Ray instance joined")
        at_once = f"at most {plan.jobs}" if plan.jobs else "as many as its CPUs hold"
        return (f"as Ray tasks of {plan.cpus_per_member:g} CPU each on {cluster}, {at_once} at "
                "once (Ray's own log lines go to its log files, not here)")
    return f"{executor.slots()} at a time in local worker processes"


def _eval(args) -> int:
    from async_coagents.experiment.run import evaluate_run

    splits = ("train", "valid", "test") if args.train else ("valid", "test")
    print(json.dumps(evaluate_run(args.run_dir, splits=splits, data_dir=args.data_dir), indent=2))
    return 0


def _plot(args) -> int:
    from async_coagents.experiment.plots import plot_runs

    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "plots"
    for path in plot_runs(args.run_dirs, out, metric=args.metric, smooth=args.smooth, x=args.x):
        print(path)
    return 0


def _table(args) -> int:
    from async_coagents.experiment.tables import results_table, to_csv, to_markdown

    table = results_table(args.dirs, metrics=args.metrics or None, x=args.x)
    for note in table.notes:
        print(f"coagents table: {note}", file=sys.stderr)
    print(to_markdown(table))
    if args.csv_out:
        to_csv(table, Path(args.csv_out))
    return 0


def _configs(args) -> int:
    from async_coagents.experiment import config as cfg

    if args.schema:
        print(cfg.schema_text())
        return 0
    if args.name:
        raw, origin = cfg.read_config(args.name)
        from importlib import resources

        folder = resources.files("async_coagents.experiment") / "configs"
        print((folder / f"{args.name}.toml").read_text(encoding="utf-8") if origin.startswith(
            "built-in") else Path(args.name).read_text(encoding="utf-8"), end="")
        return 0
    names = cfg.builtin_names()
    width = max(len(n) for n in names)
    for name in names:
        raw, _ = cfg.read_config(name)
        print(f"{name:<{width}}  {raw.get('description', '')}")
    return 0


def _datasets(args) -> int:
    from async_coagents.data import describe_datasets

    for record in describe_datasets(args.data_dir):
        where = record["path"] or record["status"]
        print(f"{record['name']:<14} {record['kind']:<15} {where}")
        if not record["found"]:
            for place in record["looked"]:
                print(f"{'':<15} looked in {place}")
            print(f"{'':<15} to get it: {record['how_to_get']}")
    return 0


def _even_longer(args, run_sweep) -> dict:
    """``coagents bench --only even-longer``: the whole even_longer sweep (learning_bench.py)."""
    from async_coagents.experiment.learning_bench import even_longer

    seeds = 200 if args.seeds is None else args.seeds
    if seeds < 1 or args.updates < 1:
        raise ConfigError("--seeds and --updates must be >= 1")
    out = args.out if args.out != MULTIPLEXER20_OUT else "runs/bench-even-longer"
    return even_longer(out, seeds=seeds, updates=args.updates, jobs=args.jobs,
                       run_sweep=run_sweep)


def _multiplexer20(args, run_sweep) -> dict:
    """``coagents bench --only multiplexer20``: the learning benchmark (learning_bench.py)."""
    from async_coagents.experiment.learning_bench import multiplexer20

    seeds = 5 if args.seeds is None else args.seeds
    if seeds < 1 or args.episodes < 1:
        raise ConfigError("--seeds and --episodes must be >= 1")
    return multiplexer20(args.out, seeds=seeds, episodes=args.episodes,
                         learners=[name for name in args.learners.split(",") if name] or None,
                         run_sweep=run_sweep)


def _paper_code(args, run_sweep) -> dict:
    """``coagents bench --only paper-code``: the engine against the paper's code
    (paper_bench.py)."""
    from async_coagents.experiment.paper_bench import paper_code

    if not args.paper_code:
        raise ConfigError("--only paper-code needs --paper-code DIR, a checkout of the paper's "
                          "repository (Dhawgupta/gupta2021structural)")
    return paper_code(args.paper_code, args.paper_python, segments=args.segments,
                      rounds=args.rounds)


def _bench(args) -> int:
    from async_coagents.experiment.config import defaults
    from async_coagents.experiment.sweep import execution

    plan = execution(defaults()["sweep"], jobs=args.jobs)

    def run_sweep(sweep):
        return _sweep(sweep, plan, progress=None, data_dir=None)

    for name, bench in (("even-longer", _even_longer), ("multiplexer20", _multiplexer20),
                        ("paper-code", _paper_code)):
        if name not in args.only:
            continue
        outcome = bench(args, run_sweep)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(outcome, indent=2) + "\n",
                                           encoding="utf-8")
        args.only = [part for part in args.only if part != name]
        if not args.only:
            return 0
    from async_coagents.bench import run_benchmarks

    results = run_benchmarks(quick=args.quick, only=args.only)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def _demo(args) -> int:
    from async_coagents.experiment.demo import SECTIONS, run_demo

    sections = SECTIONS if args.section == "all" else (args.section,)
    return 0 if run_demo(args.out or _new_run_dir("async-demo"), args.updates,
                         ray=not args.no_ray, sections=sections, quick=args.quick,
                         ray_updates=args.ray_updates) else 1


def _diagnose(args) -> int:
    import csv

    from async_coagents import diagnose as dg
    from async_coagents.core.rules import RULES, get_rule
    from async_coagents.errors import ConfigError
    from async_coagents.experiment.progress import Progress

    hidden = _positive_ints(args.hidden, "--hidden")
    depths = _positive_ints(args.depths, "--depths") if args.depths else []
    samples = dg.SAMPLES if args.samples is None else args.samples
    warmup = dg.WARMUP if args.warmup is None else args.warmup
    if samples < 2:
        raise ConfigError(f"--samples must be at least 2, got {samples}")
    if warmup < 0:
        raise ConfigError(f"--warmup must be at least 0, got {warmup}")
    shapes = [hidden] + [(hidden[0],) * d for d in depths if (hidden[0],) * d != hidden]
    for shape in shapes:  # the network (and its fixed point) first: the same for every rule
        dg.fixed_point(dg.tiny_spec("reinforce", hidden=shape), args.seed, args.labels)
    names = list(RULES) if args.rules == "all" else [r.strip() for r in args.rules.split(",")]
    rules = []
    for name in names:
        get_rule(name)  # an unknown name is an error, even among "all"
        try:
            for shape in shapes:
                dg.tiny_spec(name, hidden=shape)
        except ConfigError as exc:
            if args.rules != "all":
                raise
            print(f"skipped {name}: {exc}", file=sys.stderr)
            continue
        rules.append(name)
    spec = dg.tiny_spec("reinforce", hidden=hidden)
    bar = Progress("diagnose", len(rules) * len(shapes) * samples,
                   enabled=False if args.no_progress else None)
    started = time.perf_counter()
    rows: dict[tuple[int, ...], list] = {shape: [] for shape in shapes}
    try:
        for shape in shapes:
            for rule in rules:
                rows[shape] += dg.diagnose(rule, shape, samples, args.seed, warmup=warmup,
                                           labels=args.labels, progress=lambda _: bar.advance())
    finally:
        bar.close()
    point = dg.fixed_point(spec, args.seed, args.labels)
    lines = dg.describe(spec, point, n=samples, warmup=warmup, labels=args.labels, seed=args.seed)
    lines += ["", *dg.format_table(rows[hidden]), "", *dg.legend()]
    if depths:
        by_depth = [row for d in depths for row in rows[(hidden[0],) * d]]
        by_depth.sort(key=lambda row: (rules.index(row.rule), len(row.hidden)))
        shape = f"{'/'.join(map(str, depths))} hidden layers of {hidden[0]} units"
        lines += ["", f"variance tr S per layer, {shape}:", *dg.format_depths(by_depth),
                  "", f"relative variance tr S / |g|^2 per layer, {shape}:",
                  *dg.format_depths(by_depth, "relative_variance")]
    lines += ["", f"{len(rules) * len(shapes)} measurements of {samples} draws in "
                  f"{time.perf_counter() - started:.0f} s"]
    print("\n".join(lines))
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=dg.CSV_FIELDS)
            writer.writeheader()
            writer.writerows(dg.csv_rows([row for shape in shapes for row in rows[shape]]))
    return 0


def _study(args) -> int:
    from async_coagents.study import STUDIES, get
    from async_coagents.study.runner import StudyPlan, run_study

    if args.list:
        for name, kind in STUDIES.items():
            print(f"{name}: {kind.title}")
            for budget in kind.budgets.values():
                print(f"    --budget {budget.name}: {budget.seeds} seed(s) per arm, "
                      f"{budget.description}")
        return 0
    if args.page:
        from async_coagents.study.page import write_page

        print(f"results page: {write_page(Path(args.results_root))}")
        return 0
    if not args.name:
        raise ConfigError("name a study (coagents study --list shows them), or --page")
    study = get(args.name)
    budget_name = args.budget or study.default_budget
    if budget_name not in study.budgets:
        raise ConfigError(f"study {study.name} has no budget {budget_name!r}; its budgets: "
                          + ", ".join(study.budgets))
    out = Path(args.out or f"runs/study-{study.name}")
    plan = StudyPlan(study, study.budgets[budget_name], out, results=args.results,
                     seeds=args.seeds, only=[a for a in args.arms.split(",") if a],
                     dataset=args.dataset)
    if args.report_only:
        from async_coagents.study.report import write_report

        print(f"report: {write_report(plan)}")
        return 0
    from async_coagents.experiment.config import defaults
    from async_coagents.experiment.sweep import execution

    section = defaults()["sweep"]
    execution_plan = execution(section, executor=args.executor, jobs=args.jobs,
                               address=args.address)
    progress = False if args.no_progress else None

    def run_sweep(sweep) -> int:
        return _sweep(sweep, execution_plan, progress=progress, data_dir=args.data_dir)

    where = execution_plan.executor + (f" x{execution_plan.jobs}" if execution_plan.jobs else "")
    return run_study(plan, run_sweep, executor=where)


def _positive_ints(text: str, flag: str) -> tuple[int, ...]:
    """``"3,3"`` -> ``(3, 3)``; anything but comma-separated positive integers is an error."""
    from async_coagents.errors import ConfigError

    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} must be comma-separated positive integers, got {text!r}")
    return values


# ---- helpers -------------------------------------------------------------------------------------
def _new_run_dir(name: str) -> str:
    """The default output directory of a command, ``runs/<name>-<time>``, created here, so that
    two commands started in the same second get two directories (the second ``...-2``)."""
    from async_coagents.experiment.rundir import new_directory

    return str(new_directory("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"))


def _summary_line(path: Path, summary: dict) -> str:
    final = summary.get("final", {})
    shown = [f"{k} {final[k]:.4g}" for k in ("test_accuracy", "test_mse", "valid_accuracy",
                                             "valid_mse") if final.get(k) is not None]
    speed = summary.get("samples_per_s")
    speed_text = f"  {speed:,.0f} samples/s" if speed else ""
    return (f"{summary['name']}: {summary['status']} after {summary['updates']} updates  "
            f"{'  '.join(shown)}{speed_text}  -> {path}")


if __name__ == "__main__":
    sys.exit(main())
