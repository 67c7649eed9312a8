"""DDP on the CPU: two gloo processes started by torchrun train one tiny model.

The run must finish, write one model file and one metrics.csv (rank 0 only), leave both ranks with
identical weights, and match a single-process run with the same global batch. That last check fails
if the ranks did not split the batch into distinct halves: two ranks computing the same half would
train on half the data. The check is up to float summation order, since DDP averages two
half-batch gradients where the single process takes one mean.
"""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from support import run_two_ranks
from PIL import Image

from superres.config import config_from_dict, save_config
from superres.training import train

_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    from superres.config import load_config
    from superres.training import train

    config = load_config(sys.argv[1])
    out = sys.argv[3]

    def keep_weights(iteration, model):
        if iteration == config.train.iterations:
            torch.save(model.state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))

    path = train(config, run_dir=sys.argv[2], callback=keep_weights)
    # one file per rank: the two ranks' stdout lines can interleave mid-line
    with open(os.path.join(out, f"rank{os.environ['RANK']}.path"), "w") as fh:
        fh.write(str(path))
    """
)


def _images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(3):
        y, x = np.mgrid[0:24, 0:26]
        base = np.stack([np.sin(rng.uniform(0.1, 0.4) * y + rng.uniform(0.1, 0.4) * x + c) for c in range(3)], axis=2)
        image = np.round((0.8 * (base + 1) / 2 + 0.2 * rng.random((24, 26, 3))) * 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"t{i}.png")


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    _images(tmp_path / "train")
    (tmp_path / "val" / "HR").mkdir(parents=True)
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(tmp_path / "val" / "HR" / "flat.png")
    config = config_from_dict(
        {
            "model": {"name": "baseline", "scale": 2, "options": {"channels": 4, "num_blocks": 1}},
            "data": {"train": [str(tmp_path / "train")], "patch_size": 8, "batch_size": 4, "val": str(tmp_path / "val")},
            "train": {"iterations": 6, "val_every": 3, "save_every": 3, "log_every": 2, "ema": 0.9, "device": "cpu"},
        },
        source="test",
    )
    config_file = tmp_path / "ddp.yaml"
    save_config(config, config_file)
    run_two_ranks(_SCRIPT, config_file, tmp_path)
    run = tmp_path / "run"
    for rank in (0, 1):  # both ranks returned, and were told the same model file
        assert (tmp_path / f"rank{rank}.path").read_text() == str(run / "model.safetensors")

    assert sorted(p.name for p in run.glob("*.safetensors")) == ["best.safetensors", "model.safetensors"]
    with open(run / "metrics.csv", newline="") as fh:
        assert [int(r["iteration"]) for r in csv.DictReader(fh)] == [2, 3, 4, 6]  # rank 0 alone wrote it
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 6

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k

    torch.set_num_threads(1)
    single: dict[str, torch.Tensor] = {}
    train(config, run_dir=tmp_path / "single",
          callback=lambda i, m: single.update(m.state_dict()) if i == 6 else None)
    for k in rank0:
        torch.testing.assert_close(rank0[k], single[k], rtol=1e-4, atol=1e-5)


def test_batch_must_split_evenly_across_ranks():
    from superres.errors import SuperresError
    from superres.training.distributed import DistContext, shard

    ctx = DistContext(rank=1, world_size=3, local_rank=1, device=torch.device("cpu"), enabled=False)
    assert shard(12, ctx) == range(4, 8)
    with pytest.raises(SuperresError, match="data.batch_size=10 must be divisible by the number of processes"):
        shard(10, ctx)
