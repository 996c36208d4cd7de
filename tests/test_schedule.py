import pytest
import torch

from cifar_hw2.schedule import build_scheduler, lr_factor


def test_step_schedule_is_steplr_3_08():
    assert [lr_factor("step", e) for e in range(7)] == pytest.approx([1, 1, 1, .8, .8, .8, .64])


def test_exponential_schedule_is_continuous_and_meets_step_every_third_epoch():
    assert lr_factor("exponential", 1) == pytest.approx(0.8 ** (1 / 3))
    for e in (0, 3, 6, 99):
        assert lr_factor("exponential", e) == pytest.approx(lr_factor("step", e))


def test_scheduler_drives_the_optimizer_and_round_trips():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = build_scheduler("step", opt)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step(); sched.step()
    assert lrs == pytest.approx([1e-3] * 3 + [8e-4] * 3 + [6.4e-4])
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched2 = build_scheduler("step", opt2)
    sched2.load_state_dict(sched.state_dict())
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_unknown_schedule():
    with pytest.raises(ValueError, match="valid schedules: step, exponential, constant"):
        lr_factor("cosine", 0)
