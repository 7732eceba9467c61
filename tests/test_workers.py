"""scripts/train_workers.sh: two CPU workers through fairseq's own distributed path (issue K.10),
and the adaptive-schedule statistics they record against one process (issue K.9)."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import train_args

REPO = Path(__file__).resolve().parents[1]


def env():
    return dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


def recorded_tokens(save_dir: Path) -> float:
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] > 0
    return float(state["model"]["schedule.loss_count"].sum())


def one_epoch(data_bin: Path, save_dir: Path):
    # 300 pairs in 7 batches: split 4 + 3, the second worker replays a dummy batch at update 4
    return train_args(data_bin, save_dir, "--max-epoch", "1", "--batch-size", "43", "--required-batch-size-multiple", "1",
                      "--adaptive-schedule", "--adaptive-update-interval", "1000")


def test_two_cpu_workers_train_and_count_every_token_once(data_bin, tmp_path):
    one = tmp_path / "one"
    single = subprocess.run(["fairseq-train", *one_epoch(data_bin, one)], env=env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    two = tmp_path / "two"
    result = subprocess.run(["bash", str(REPO / "scripts" / "train_workers.sh"), "2", "--port", "29731",
                             "--threads", "1", "--", *one_epoch(data_bin, two)],
                            env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:] + (two / "worker.1.log").read_text()[-2000:]
    # every train target token once, whichever worker saw it, and no replayed dummy batch
    assert recorded_tokens(two) == recorded_tokens(one) > 0


def test_workers_refuse_bad_calls():
    for args, message in ((["0", "--", "x"], "N must be a positive number of workers, got '0'"),
                          (["2", "x"], "unknown option x"),
                          (["2"], "give fairseq-train's arguments after --"),
                          (["2", "--", "d", "--distributed-rank", "1"], "--distributed-rank is set by this launcher")):
        result = subprocess.run(["bash", str(REPO / "scripts" / "train_workers.sh"), *args],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
