"""The GPU script's steady-state checks (perf/syncdebug.py, perf/kernels.py), as far as a CPU can
run them: the sync check's verdict and report with a stand-in for CUDA's sync debug mode, its
clean skip without CUDA, and the profiled steps on the CPU."""
import json
import warnings

import torch

from cifar_hw2.perf import kernels, syncdebug


class FakeSyncDebug:
    """Stands in for torch.cuda.set_sync_debug_mode: records the modes set, and `sync()` does what
    CUDA does on a synchronizing call in the current mode (warn, raise, or nothing)."""

    def __init__(self):
        self.mode, self.modes = "default", []

    def __call__(self, mode):
        self.mode = mode
        self.modes.append(mode)

    def sync(self):
        message = "called a synchronizing CUDA operation"
        if self.mode == "warn":
            warnings.warn(message)
        elif self.mode == "error":
            raise RuntimeError(message)


def test_a_sync_in_the_step_is_listed_with_where_it_is_and_fails_the_check():
    debug = FakeSyncDebug()

    def step_with_a_sync():
        debug.sync()

    result = syncdebug.check_syncs(step_with_a_sync, set_mode=debug)
    assert not result["ok"]
    assert len(result["warnings"]) == 1 and "synchronizing CUDA operation" in result["warnings"][0]
    assert result["error"].startswith("test_steady_state.py:") and "in sync" in result["error"]
    assert debug.modes == ["warn", "default", "error", "default"]       # the default is restored


def test_a_step_without_syncs_passes_and_other_warnings_are_not_syncs():
    debug = FakeSyncDebug()

    def clean_step():
        warnings.warn("some deprecation, not a sync")

    result = syncdebug.check_syncs(clean_step, set_mode=debug)
    assert result == {"warnings": [], "error": None, "ok": True}
    assert debug.mode == "default"


def test_without_cuda_the_sync_check_says_so_in_one_line_and_passes(tmp_path):
    lines = []
    code = syncdebug.main(["--device", "cpu", "--model", "small_cnn", "--json", str(tmp_path / "sync.json")],
                          echo=lines.append)
    assert code == 0 and len(lines) == 1
    assert lines[0].startswith("sync check skipped: torch.cuda.set_sync_debug_mode needs a CUDA device")
    assert "needs a CUDA device" in json.loads((tmp_path / "sync.json").read_text())["skipped"]


def test_profiled_steady_state_steps_on_the_cpu_cross_epochs_and_write_the_table(tiny_data, tmp_path, monkeypatch):
    trainer = syncdebug.steady_trainer("small_cnn", 16, device="cpu", data=str(tiny_data), out=str(tmp_path / "run"))
    per_epoch = len(trainer.loader)
    warmup = syncdebug.window_steps(trainer, 1)
    assert warmup == trainer.loader.batches_per_chunk + 1 > 2 * per_epoch   # a new chunk, and epochs, crossed
    steps = []
    step = trainer.step
    trainer.step = lambda x, labels: steps.append(x.shape) or step(x, labels)
    # torch 2.11 warns once per process on any profile; forget that it did, so that this test sees it
    monkeypatch.setattr(torch.profiler.profiler, "_WARNINGS_SHOWN", set(), raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, summary = kernels.profile_steps(trainer, warmup_steps=1, steps=3)
    assert not [w for w in caught if "Profiler" in str(w.message)]     # the GPU log stays readable
    assert len(steps) == warmup + 3 and set(steps) == {(16, 3, 32, 32)}
    assert trainer.sampler.epoch == -(-(warmup + 3) // per_epoch)           # the stream went on, epoch by epoch
    assert "aten::convolution_backward" in table
    assert summary["steps"] == 3 and summary["step_ms"] > 0 and "busy" not in summary     # busy: CUDA only
    assert summary["top"][0]["self_us"] >= summary["top"][-1]["self_us"] > 0


def test_the_kernels_command_writes_its_files(tiny_data, tmp_path, monkeypatch):
    lines = []
    code = kernels.main(["--model", "small_cnn", "--batch-size", "16", "--device", "cpu", "--data", str(tiny_data),
                         "--warmup-steps", "1", "--steps", "2", "--out", str(tmp_path / "k"),
                         "--sync-json", str(tmp_path / "sync.json")], echo=lines.append)
    assert code == 0 and len(lines) == 2 and lines[0].startswith("sync check skipped") and "ms a step" in lines[1]
    assert json.loads((tmp_path / "sync.json").read_text())["model"] == "small_cnn"
    summary = json.loads((tmp_path / "k" / "kernels.json").read_text())
    assert summary["model"] == "small_cnn" and summary["precision"] == "fp32" and summary["steps"] == 2
    assert "Self CPU" in (tmp_path / "k" / "kernels.txt").read_text()
