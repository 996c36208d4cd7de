import csv
import json
from pathlib import Path

import pytest
import torch

from cifar_hw2.schedule import build_scheduler, lr_factor

REFERENCE_RUN = Path(__file__).resolve().parents[1] / "results" / "cpu-reference" / "ce-seed0"


def test_step_schedule_drops_by_08_every_3_epochs():
    assert [lr_factor("step", e) for e in range(7)] == pytest.approx([1, 1, 1, .8, .8, .8, .64])


def test_exponential_schedule_is_continuous_and_meets_step_every_third_epoch():
    assert lr_factor("exponential", 1) == pytest.approx(0.8 ** (1 / 3))
    for e in (0, 3, 6, 99):
        assert lr_factor("exponential", e) == pytest.approx(lr_factor("step", e))


def test_scheduler_drives_the_optimizer_and_resumes_from_its_state():
    def fresh():
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        return opt, build_scheduler("step", opt)

    def lrs(opt, sched, epochs):
        out = []
        for _ in range(epochs):
            out.append(opt.param_groups[0]["lr"])
            opt.step(); sched.step()
        return out

    opt, sched = fresh()
    assert lrs(opt, sched, 4) == pytest.approx([1e-3] * 3 + [8e-4])
    # What a resume does: new optimizer and scheduler, states loaded from the checkpoint, then on.
    opt2, sched2 = fresh()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert lrs(opt2, sched2, 6) == pytest.approx([8e-4] * 2 + [6.4e-4] * 3 + [5.12e-4])


def test_unknown_schedule():
    with pytest.raises(ValueError, match="valid schedules: step, exponential, constant"):
        lr_factor("cosine", 0)


def test_the_step_schedule_gives_the_reference_runs_lr_column_bit_for_bit():
    """lr0·0.8^k as history.csv writes it; StepLR's chained lr·0.8 differs in the last bit at epoch 7."""
    cfg = json.loads((REFERENCE_RUN / "config.json").read_text())["config"]
    with open(REFERENCE_RUN / "history.csv", newline="") as f:
        written = [row["lr"] for row in csv.DictReader(f)]
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg["lr"])
    sched = build_scheduler(cfg["schedule"], opt, cfg["lr_decay"], cfg["lr_period"])
    lrs = []
    for _ in written:
        lrs.append(str(opt.param_groups[0]["lr"]))
        opt.step(); sched.step()
    assert len(written) == 7 and lrs == written
