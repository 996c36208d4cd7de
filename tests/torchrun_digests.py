"""Each rank's final weights under torchrun, for tests/test_distributed.py: a sha256 of every rank's
state dict, gathered, so that the test can check that DDP kept the ranks' weights identical.

    torchrun --standalone --nproc_per_node=2 tests/torchrun_digests.py DIGESTS.json train --preset quick ...

runs `python -m cifar_hw2 train ...` in every process; when Trainer.run returns, every rank takes
its digest (fit has not yet left the process group) and rank 0 writes the list to DIGESTS.json.
Only a test asks this, so the package neither computes nor records it.
"""
import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

# As `python -m cifar_hw2` run from the repository root: this checkout's package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cifar_hw2.cli import main  # noqa: E402
from cifar_hw2.training.trainer import Trainer  # noqa: E402


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict: equal on all ranks iff the weights are."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def record_digests(path: Path) -> None:
    """From now on Trainer.run ends by gathering every rank's digest; rank 0 writes them to `path`."""
    run = Trainer.run

    def run_and_digest(self):
        history = run(self)
        digests = [weights_digest(self.model)]
        if self.procs.world > 1:
            digests = [None] * self.procs.world
            dist.all_gather_object(digests, weights_digest(self.model))
        if self.procs.main:
            path.write_text(json.dumps(digests))
        return history

    Trainer.run = run_and_digest


if __name__ == "__main__":
    record_digests(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
