"""Times the paper's own correlated-stream training loop for ``coagents bench --only paper-code``.

A standalone script: ``coagents bench`` runs it with the Python that has torch (``--paper-python``)
on a checkout of the paper's repository (``--paper-code``, ``Dhawgupta/gupta2021structural``); it
imports nothing of this package and edits none of the paper's files. It runs the paper's
``regression/src/train.py`` unchanged (``runpy``, its own ``argv``) on one thread, in a fresh
working directory (the script writes its results file under the working directory and stops if
that file exists), with ``means``/``segments`` set in a copy of the experiment JSON, and prints
one JSON object: ``total_s`` from the entry of the paper's experiment set-up (seeding, the
stream, the validation and test sets, the network) to the end of its results pickle, ``eval_s``
the time inside ``agent.evaluate`` and in the full-set data loaders that feed it, the number of
updates and of evaluations, and the final test MSE.

``--no-eval`` replaces the evaluations by a no-op and hands the full sets over without their
per-example collation (the loaders' one draw each from torch's global generator is still made,
so the run's random numbers are the same): the update-only run. Its final test MSE is computed
once after the timed span.

The released regression code imports modules it does not ship or that no longer exist; these are
put in place here, none of them used by the correlated problem: ``src.utils.json_handling`` (the
classification folder's copy), ``src.problems.mnist_flat`` (a stub), ``torchvision`` (an empty
module where it is not installed) and ``sklearn.datasets.load_boston`` (removed from
scikit-learn 1.2). The set-up sleeps 2 s when its results folder is missing, so the folder is
made first; torch's one-off lazy import in the first optimizer is done before the timed span.
"""

import os
import sys

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"  # one thread, before torch is imported
sys.dont_write_bytecode = True  # leave the paper's checkout as it was

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import runpy  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="time the paper's correlated-stream run")
    p.add_argument("--paper-code", required=True, help="the paper repository's checkout")
    p.add_argument("--config", required=True, help="its experiment JSON (e.g. regression/"
                   "experiments/longer_correlation/even_longer/d95/correlated_pg.json)")
    p.add_argument("--seed", type=int, default=1, help="the sweep entry with this seed")
    p.add_argument("--means", type=int, help="M (default: the JSON's)")
    p.add_argument("--segments", type=int, help="S (default: the JSON's)")
    p.add_argument("--no-eval", action="store_true", help="no evaluations: update-only")
    p.add_argument("--work-dir", required=True, help="where the run's working directory goes")
    return p.parse_args(argv)


def install_missing_modules(root: str) -> None:
    """The imports of the released regression code that it does not ship (module docstring)."""
    path = os.path.join(root, "classification", "src", "utils", "json_handling.py")
    spec = importlib.util.spec_from_file_location("src.utils.json_handling", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["src.utils.json_handling"] = module
    spec.loader.exec_module(module)
    mnist = types.ModuleType("src.problems.mnist_flat")
    mnist.MnistFlat = type("MnistFlat", (), {})
    sys.modules["src.problems.mnist_flat"] = mnist
    try:
        import torchvision  # noqa: F401
    except ImportError:
        sys.modules["torchvision"] = types.ModuleType("torchvision")
    import sklearn.datasets
    try:
        sklearn.datasets.load_boston  # noqa: B018
    except ImportError:
        sklearn.datasets.load_boston = lambda *a, **k: None


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    root = os.path.abspath(args.paper_code)
    regression = os.path.join(root, "regression")
    with open(os.path.join(root, args.config) if not os.path.isabs(args.config)
              else args.config) as f:
        experiment_file = json.load(f)
    for key in ("means", "segments"):
        if getattr(args, key) is not None:
            experiment_file[key] = getattr(args, key)
    work = tempfile.mkdtemp(prefix="paper-run-", dir=args.work_dir)
    config_path = os.path.join(work, "experiment.json")
    with open(config_path, "w") as f:
        json.dump(experiment_file, f)

    sys.path.insert(0, regression)
    install_missing_modules(root)
    warnings.filterwarnings("ignore")
    import analysis.utils as analysis_utils
    import src.problems.correlated as correlated
    import src.train_utils as train_utils
    from src.agents.registry import get_agent
    from src.utils.formatting import create_file_name
    from src.utils.json_handling import get_param_iterable, get_sorted_dict

    sweep = get_param_iterable(get_sorted_dict(config_path))
    index = next(i for i, e in enumerate(sweep) if e["seed"] == args.seed)
    experiment = sweep[index]
    agent_class = get_agent(experiment["agent"])
    os.chdir(work)
    os.makedirs(create_file_name(experiment)[0], exist_ok=True)

    clock = time.perf_counter
    marks = {"start": None, "end": None}
    spent = {"eval_s": 0.0, "evaluations": 0, "updates": 0}

    set_up = train_utils.ExperimentUtils.__init__

    def timed_set_up(self, e):
        marks["start"] = clock()
        set_up(self, e)
    train_utils.ExperimentUtils.__init__ = timed_set_up

    save = analysis_utils.pkl_saver

    def timed_save(obj, filename):
        save(obj, filename)
        marks["end"] = clock()
    analysis_utils.pkl_saver = timed_save

    class TimedFullLoader:
        """A full-set loader whose batches count as evaluation time."""

        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def __getattr__(self, name):
            return getattr(self.loader, name)

        def __iter__(self):
            t = clock()
            if args.no_eval:  # the loader iterator's one draw, then the set as it is
                torch.empty((), dtype=torch.int64).random_(generator=self.loader.generator)
                batches = [list(self.loader.dataset.tensors)]
            else:
                batches = list(self.loader)
            spent["eval_s"] += clock() - t
            yield from batches

    full_loader = correlated.Correlated.getFullLoader
    correlated.Correlated.getFullLoader = lambda self, ds: TimedFullLoader(full_loader(self, ds))

    evaluate, learn = agent_class.evaluate, agent_class.train

    def timed_evaluate(self, x, y):
        t = clock()
        result = float("nan") if args.no_eval else evaluate(self, x, y)
        spent["eval_s"] += clock() - t
        spent["evaluations"] += 1
        return result

    def counted_train(self, x, y):
        spent["updates"] += 1
        return learn(self, x, y)
    agent_class.evaluate, agent_class.train = timed_evaluate, counted_train

    probe = torch.zeros(1, requires_grad=True)  # torch's lazy import, outside the timed span
    torch.optim.RMSprop([probe], lr=1e-3)
    torch.optim.Adam([probe], lr=1e-3)

    sys.argv = [os.path.join(regression, "src", "train.py"), config_path, str(index)]
    logging.disable(logging.INFO)
    run = runpy.run_path(sys.argv[0], run_name="__main__")

    final = run["test_losses"][-1]
    if args.no_eval:
        for x, y in run["testloader"]:
            final = evaluate(run["agent"], x, y)
    print(json.dumps({
        "agent": experiment["agent"], "seed": experiment["seed"],
        "difficulty": experiment["difficulty"], "means": experiment["means"],
        "segments": experiment["segments"], "torch": torch.__version__,
        "updates": spent["updates"], "evaluate_calls": spent["evaluations"],
        "total_s": marks["end"] - marks["start"], "eval_s": spent["eval_s"],
        "final_test_mse": None if isinstance(final, float) and math.isnan(final)
        else float(final),
    }))


if __name__ == "__main__":
    main()
