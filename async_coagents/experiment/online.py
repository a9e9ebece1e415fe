"""Online (continual-learning) metrics of a run, with ``run.online_metrics``.

* **Prequential** (test-then-train, Dawid 1984; river's ``progressive_val_score``): every training
  batch is scored as the network predicted it, before it learnt from it. Each metrics row gets
  ``prequential_loss`` / ``prequential_accuracy``, the whole run's figures so far (the summary's
  ``train`` figures, :func:`~async_coagents.experiment.run.prequential`, written as they stand at
  the row), and ``online_accuracy``, the fraction right over the batches completed since the
  previous row (``train_loss`` is already that interval's prequential loss).
* **Class blocks** (``data.stream = "class-blocked"``): after every block of ``data.run_length``
  batches the greedy network is evaluated on the test examples of every class (a row of the
  accuracy matrix ``R[block][class]``) and ``blocks.jsonl`` gets one line: the block, its class,
  the per-class accuracies, and, over the classes trained in an earlier block,

      forgetting = mean_j ( a_j(after the last block of class j) - a_j(now) )
      backward_transfer = mean_j ( a_j(now) - a_j(after the last block of class j) )

  — Avalanche's ``StreamForgetting`` (Lomonaco et al. 2021, "Avalanche: an End-to-End Library
  for Continual Learning": the accuracy on an experience when it was last trained minus its
  current accuracy, averaged over the experiences seen before the current one) and GEM's
  backward transfer (Lopez-Paz & Ranzato 2017, ``BWT = 1/(T-1) sum_{i<T} R_{T,i} - R_{i,i}``),
  which is its negative. A class the stream visits again (blocks cycle through the classes)
  restarts from its latest block, as Avalanche's metric does.

* **Mean-blocks** (the correlated stream, §5.3): its evaluation sets mix every block's inputs,
  so each mean-block k gets its own test set (``tasks.correlated_block_test_set``: 256 points
  from N(m_k, (1 − d)V), what the block's batches are drawn from). After every block of
  ``data.segments`` batches the greedy network's MSE on the test set of every block so far goes
  to ``blocks.jsonl``, with the same two definitions and accuracy replaced by −MSE:

      forgetting = mean_j ( mse_j(now) - mse_j(after block j) )   over the blocks j before now
      backward_transfer = - forgetting

  (each block is visited once: the means are a random walk, so a neighbouring block's mean is
  close and "forgetting" measures how far the network moved away from where the stream was).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

BLOCKS = "blocks.jsonl"


def forgetting(initial: dict[int, float], now: dict[int, float], current: int
               ) -> tuple[float | None, float | None]:
    """``(forgetting, backward_transfer)`` over the classes of ``initial`` (accuracy after each
    class's last block) other than ``current`` (the block just trained); ``None, None`` before
    a second class was trained.

    >>> forgetting({0: 0.9, 1: 0.8}, {0: 0.6, 1: 0.8}, current=1)
    (0.30000000000000004, -0.30000000000000004)
    """
    earlier = [c for c in initial if c != current]
    if not earlier:
        return None, None
    drop = float(np.mean([initial[c] - now[c] for c in earlier]))
    return drop, -drop


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray, classes: list[int]
                       ) -> dict[int, float]:
    """The fraction of each class's examples predicted as their class."""
    return {int(c): float(np.mean(predicted[labels == c] == c)) for c in classes
            if np.any(labels == c)}


def block_row(step: int, block: int, block_class: int, accuracy: dict[int, float],
              initial: dict[int, float]) -> dict:
    """One line of ``blocks.jsonl``; updates ``initial`` (the block's class was just trained)."""
    initial[block_class] = accuracy[block_class]
    lost, bwt = forgetting(initial, accuracy, block_class)
    return {"step": step, "block": block, "class": block_class,
            "accuracy": {str(c): a for c, a in sorted(accuracy.items())},
            "block_accuracy": accuracy[block_class], "forgetting": lost,
            "backward_transfer": bwt}


def block_mse_row(step: int, block: int, mse: dict[int, float], initial: dict[int, float]
                  ) -> dict:
    """One line of ``blocks.jsonl`` on the correlated stream; updates ``initial`` (each block's
    MSE just after it was trained). Forgetting is the rise of the earlier blocks' MSE.

    >>> block_mse_row(20, 1, {0: 0.3, 1: 0.1}, {0: 0.2})["forgetting"]
    0.09999999999999998
    """
    initial[block] = mse[block]
    fell, rose = forgetting(initial, mse, block)  # mean(initial - now), its negative
    return {"step": step, "block": block, "mse": {str(j): v for j, v in sorted(mse.items())},
            "block_mse": mse[block], "forgetting": rose, "backward_transfer": fell}


def block_mse(predict, sets: list) -> dict[int, float]:
    """The greedy MSE on each block's test set (``sets[j]`` of block j), one call to
    ``predict`` for them all."""
    x = np.concatenate([split.x for split in sets])
    predicted = np.asarray(predict(x))[..., 0]
    out, start = {}, 0
    for j, split in enumerate(sets):
        d = predicted[start:start + len(split.y)] - split.y
        out[j] = float(np.mean(d * d))
        start += len(split.y)
    return out


def append_block(run_dir: Path, row: dict) -> None:
    with open(Path(run_dir) / BLOCKS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def keep_blocks_until(run_dir: Path, step: int) -> None:
    """Drop the block lines after ``step`` (a resumed run writes them again) and a partial one."""
    path = Path(run_dir) / BLOCKS
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if row["step"] <= step:
            kept.append(line)
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
