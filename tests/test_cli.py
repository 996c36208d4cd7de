"""The command line as a user meets it: exit codes and one-line errors."""
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None):
    import os
    return subprocess.run([sys.executable, "-m", "cifar_hw2", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def cli_here(capsys, *args) -> tuple[int, str]:
    """`cli`'s exit status and stderr, in this process: the same main(), without the ~5 s a new
    interpreter spends importing torch. For checks of input alone; test_a_real_process_exits_2...
    checks that a real process behaves the same."""
    from cifar_hw2.cli import main
    try:
        status = main(list(args))
    except SystemExit as e:          # argparse's errors
        status = e.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--preset", "fast"], "unknown preset 'fast'; valid presets: paper-b4, paper-swin, quick"),
    # the homework's and the README's labels, in any case, point to the registry's names
    (["--loss", "fl"], "unknown loss 'fl' (did you mean 'focal'?); valid choices: ce, focal, flsd53, mc"),
    (["--loss", "FLSD-53"], "unknown loss 'FLSD-53' (did you mean 'flsd53'?); valid choices: ce, focal, flsd53, mc"),
    (["--loss", "CE"], "unknown loss 'CE' (did you mean 'ce'?)"),
    (["--model", "B4"], "unknown model 'B4' (did you mean 'efficientnet_b4'?); valid choices: efficientnet_b4,"),
    (["--model", "Swin-B"], "unknown model 'Swin-B' (did you mean 'swin_b'?)"),
    (["--loss", "cross-entropy"], "unknown loss 'cross-entropy' (did you mean 'ce'?)"),
    (["--device", "gpu"], "unknown device 'gpu' (did you mean 'cuda'?)"),
    (["--loss", "flsd35"], "unknown loss 'flsd35' (did you mean 'flsd53'?); valid choices: ce, focal, flsd53, mc"),
    (["--preset", "paper_b4"], "unknown preset 'paper_b4' (did you mean 'paper-b4'?); valid presets: paper-b4,"),
    (["--model", "vgg"], "unknown model 'vgg'; valid choices: efficientnet_b4, swin_b, small_cnn"),
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--batch-size", "-8"], "--batch-size must be a positive integer, got -8"),
    (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--optimizer", "adam"], "unknown optimizer 'adam' (did you mean 'adamw'?); valid choices: adamw, ranger, sgd"),
    (["--noise-p", "2"], "--noise-p must be in [0, 1]"),
    (["--loss", "mc_homework"], "loss 'mc_homework' cannot train model 'small_cnn': group_sizes cover 1792 "
                                "channels, but the feature map has 300. Models whose feature map it fits: "
                                "efficientnet_b4 (1792 channels)"),
    (["--precision", "fp8"], "unknown precision 'fp8' (did you mean 'fp32' or 'fp16'?); valid choices: auto, bf16, fp16, fp32"),
    # a loss's own setting given to another loss would be ignored without a word
    (["--loss", "ce", "--gamma", "3"], "--gamma is a setting of loss 'focal' only, and this run's loss is 'ce': "
                                       "leave --gamma out, or choose that loss"),
    (["--loss", "focal", "--mc-mu", "2"], "--mc-mu is a setting of loss 'mc' only, and this run's loss is 'focal'"),
    (["--compile-mode", "fast"], "unknown --compile-mode 'fast'; valid choices: default, reduce-overhead"),
    # what is accepted, never an internal name (_optional_float) or torch's "Overflow when unpacking long long"
    (["--time-limit", "garbage"], "argument --time-limit: expected a number or 'none', got 'garbage'"),
    (["--train-per-class", "many"], "argument --train-per-class: expected an integer or 'all'/'auto'/'none', got 'many'"),
    (["--seed", str(2**70)], f"--seed must be an integer from 0 to 2**63 - 1 (9223372036854775807), got {2**70}"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 2**63 - 1"),
    # a config check's message in the command line's terms: the flag, and 'none' for None
    (["--time-limit", "-1"], "--time-limit must be > 0 or 'none', got -1.0"),
    (["--pretrained", ""], "--pretrained takes nothing (ImageNet weights from the hub) or a weight file's path; "
                           "--no-pretrained trains from scratch. Got ''"),
    (["--out", ""], "--out must name a folder, got '' (that would write the run into the current folder)"),
    # quick: 50 images per class; the loader drops a partial batch, so this would train no step
    (["--batch-size", "100000"], "--batch-size 100000 is more than the 5000 training images (50 per class), so no "
                                 "step could be taken; use a --batch-size of at most 5000"),
    # every config field that a message names is said as its flag, not only the first word
    (["--val-per-class", "500"], "--train-per-class + --val-per-class must be <= 500"),
    (["--resume", "--overwrite"], "--resume and --overwrite exclude each other: pick one"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)      # where a wrongly accepted --out "" would write
    argv = ["train", "--preset", "quick", "--out", str(tmp_path / "x"), *args] if args[0] != "--preset" \
        else ["train", *args, "--out", str(tmp_path / "x")]
    status, err = cli_here(capsys, *argv)
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args, message", [
    # a misspelt flag: the nearest flag of that command (argparse's list of them is private; this guards it)
    (["train", "--epcohs", "2"], "cifar-hw2 train: error: unrecognized arguments: --epcohs 2 "
                                 "(--epcohs: did you mean --epochs?)"),
    (["train", "--batchsize=8", "--modle", "x"], "unrecognized arguments: --batchsize=8 --modle x "
                                                 "(--batchsize: did you mean --batch-size?; --modle: did you mean --model?)"),
    (["bench", "--stpes", "3"], "cifar-hw2 bench: error: unrecognized arguments: --stpes 3 (--stpes: did you mean --steps?)"),
    (["train", "--zzzz"], "cifar-hw2 train: error: unrecognized arguments: --zzzz\n"),    # nothing near: no hint
    (["train", "-epochs", "2"], "unrecognized arguments: -epochs 2 (-epochs: did you mean --epochs?)"),
    (["train", "--lr", "-1", "--epcohs", "2"], "--epcohs 2 (--epcohs: did you mean --epochs?)\n"),   # -1 a value
    # a required flag misspelt: argparse stops at the missing one, and the hint names it
    (["evaluate", "--chekpoint", "runs/x/best.pt"], "the following arguments are required: --checkpoint "
                                                    "(--chekpoint: did you mean --checkpoint?)"),
    # a misspelt command or choice: argparse's list, and the nearest
    (["trian"], "(did you mean 'train'?)"),    # argparse's own words around it differ between Pythons
    (["train", "--launcher", "slrum"], "(did you mean 'slurm'?)"),
])
def test_a_misspelt_flag_or_command_is_refused_with_the_nearest(args, message, capsys):
    status, err = cli_here(capsys, *args)
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_second_ctrl_c_names_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    """Stopped at once (exit 130): train says its own resume command, grid that the same command
    resumes (it has no --resume), and other commands only that they were interrupted."""
    from cifar_hw2 import cli as cli_module

    def interrupted(args):
        raise KeyboardInterrupt
    for name in ("train", "grid", "report"):
        monkeypatch.setitem(cli_module.COMMANDS, name, interrupted)
    out = tmp_path / "run"
    status, err = cli_here(capsys, "train", "--preset", "quick", "--out", str(out), "--overwrite")
    assert status == 130 and err.strip().startswith("cifar-hw2: interrupted at once; it continues from its last "
                                                     "last.pt with: "), err
    assert err.strip().endswith(f"train --preset quick --out {out} --resume"), err
    status, err = cli_here(capsys, "grid", "--runs", str(tmp_path))
    assert status == 130 and "the same command again resumes" in err and "--resume" not in err
    status, err = cli_here(capsys, "report", "--runs", str(tmp_path))
    assert status == 130 and err.strip() == "cifar-hw2: interrupted at once"


def test_settings_are_named_as_flags_only_while_a_command_runs(tmp_path, capsys):
    # Python's API and the notebooks say field names; the command line says flags. A value the user
    # typed is never rewritten, even one spelt like a field (a path named batch_size).
    from cifar_hw2.training.config import ConfigError, make_config
    from cifar_hw2.training.naming import settings_said_as_flags
    with pytest.raises(ConfigError, match=r"^batch_size 100000 is more .* use a batch_size of at most 5000$"):
        make_config("quick", batch_size=100000)
    with settings_said_as_flags(), pytest.raises(ConfigError, match=r"^--batch-size 100000 .* --batch-size of"):
        make_config("quick", batch_size=100000)
    with pytest.raises(ConfigError, match=r"^workers must be an integer >= 0 or None"):
        make_config("quick", workers=-1)
    for path in ("batch_size", "runs\\lr_period\\best.pt"):
        status, err = cli_here(capsys, "evaluate", "--checkpoint", path)
        assert status == 2 and err.strip() == f"cifar-hw2: error: checkpoint {path} does not exist"


def test_grid_quick_is_a_flag_and_train_preset_there_points_to_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")      # restored after the test: --quick sets it for the rows
    runs = str(tmp_path / "runs")
    status, err = cli_here(capsys, "grid", "--runs", runs, "--preset", "quick")
    assert status == 2 and err.strip() == ("cifar-hw2: error: grid runs each row with its Table 1 preset (--preset "
                                           "quick is train's flag); --quick runs every row on the quick preset")
    from cifar_hw2.cli import main
    assert main(["grid", "--runs", runs, "--only", "key=b4-bs64-flsd53", "--dry-run"]) == 0
    assert "(full configuration)" in capsys.readouterr().out
    assert main(["grid", "--runs", runs, "--only", "key=b4-bs64-flsd53", "--dry-run", "--quick"]) == 0
    assert "(quick mode (--quick, or CIFAR_HW2_QUICK=1)" in capsys.readouterr().out


def test_notebooks_without_the_notebooks_extra_says_what_to_install(capsys, monkeypatch):
    """A plain `pip install -e .` has no nbformat (nor nbclient, nor a kernel): one line, not a
    ModuleNotFoundError traceback from nbtools' import."""
    import importlib.util
    from cifar_hw2.training.paths import this_python
    find_spec = importlib.util.find_spec
    gone = {"nbformat", "nbclient", "ipykernel"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in gone else find_spec(name, *a))
    install = f'install the notebooks extra: `{this_python()} -m pip install -e ".[notebooks]"` in the checkout'
    status, err = cli_here(capsys, "notebooks", "--check")
    assert status == 2 and err.strip() == f"cifar-hw2: error: notebooks: this Python has no nbformat: {install}"
    status, err = cli_here(capsys, "notebooks", "--execute")
    assert status == 2 and err.strip() == ("cifar-hw2: error: notebooks: this Python has no nbformat, nbclient or "
                                           f"ipykernel: {install}")


def test_a_quick_mode_value_that_is_neither_on_nor_off_is_refused(tmp_path, capsys, monkeypatch):
    """Read as off, `maybe` planned the full grid (GPU rows, days of epochs on a CPU) without a word."""
    monkeypatch.setenv("CIFAR_HW2_QUICK", "maybe")
    status, err = cli_here(capsys, "grid", "--runs", str(tmp_path / "runs"), "--dry-run")
    assert status == 2 and err.strip() == ("cifar-hw2: error: CIFAR_HW2_QUICK='maybe' is neither on nor off: set it "
                                           "to 1 (quick mode: the quick preset on the CPU) or 0, or unset it")
    for off in ("", "0", "Off", " no "):
        monkeypatch.setenv("CIFAR_HW2_QUICK", off)
        from cifar_hw2.training.config import quick_mode
        assert quick_mode() is False


def test_a_grid_runs_path_that_is_a_file_is_named_by_its_own_flag(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    for action in ("--dry-run", "--status"):
        status, err = cli_here(capsys, "grid", "--runs", str(tmp_path / "file"), action)
        assert status == 2 and err.strip() == f"cifar-hw2: error: --runs {tmp_path / 'file'} exists and is not a folder"


def test_no_command_lists_the_commands(capsys):
    from cifar_hw2.cli import COMMANDS
    status, err = cli_here(capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert f"give a command: {', '.join(COMMANDS)}" in err and "train, evaluate, grid, report, bench" in err


def test_the_largest_seed_gives_batch_seeds_and_small_seeds_keep_theirs():
    import torch
    from cifar_hw2.training.config import MAX_SEED
    from cifar_hw2.training.loader import batch_seed
    for index in (-2, -1, 0, 99):
        assert 0 <= batch_seed(MAX_SEED, 7, index) < 2**62
    # the seeds runs already use are unchanged (a negative product was torch's two's complement)
    legacy = lambda s, e, i: int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(
        (s * 1_000_003 + e) * 1_000_033 + i)))
    assert all(batch_seed(s, e, i) == legacy(s, e, i) for s in (0, 614) for e in (0, 3) for i in (-1, 0, 5))


def test_a_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    run = cli("train", "--preset", "quick", "--loss", "fl", "--out", str(tmp_path / "x"))
    assert run.returncode == 2 and run.stderr.startswith("cifar-hw2: error: unknown loss 'fl' (did you mean 'focal'?); valid choices: ce, ")
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr
    assert not (tmp_path / "x").exists()


def test_missing_data_offline_is_one_clear_line(tmp_path):
    # an unreachable proxy makes the download fail at once, as offline
    run = cli("train", "--preset", "quick", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "x"),
              env={"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"})
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "could not be downloaded" in run.stderr and "--data DIR" in run.stderr
    assert "CIFAR_HW2_DATA" not in run.stderr          # --data overrides it: not a way out here
    assert str(tmp_path / "nodata" / "cifar-100-python") in run.stderr
    assert not (tmp_path / "x").exists()


def fake_hub_cache(root: Path, hub_id: str, state: dict) -> None:
    """The hub cache's layout (huggingface_hub's), holding `state` as the repository's model.safetensors."""
    from safetensors.torch import save_file
    repo = root / ("models--" + hub_id.replace("/", "--"))
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(repo / "snapshots" / revision / "model.safetensors"))


def test_weights_offline_reports_a_filled_cache_and_training_reads_it(tmp_path):
    """`weights` offline: one line when the cache lacks them; when it holds them (as after `weights` on a
    machine with network), it says where, and a model built offline starts from exactly those weights."""
    import timm
    import torch
    hub = tmp_path / "hub"
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "HF_HOME": str(tmp_path)}
    run = cli("weights", "--model", "efficientnet_b4", env=env)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "could not get the pretrained weights of efficientnet_b4" in run.stderr
    assert "Run this where the hub can be reached" in run.stderr and "pretrained=" not in run.stderr
    run = cli("weights", "--model", "small_cnn", env=env)
    assert run.returncode == 2 and "invalid choice: 'small_cnn' (choose from" in run.stderr, run.stderr
    reference = timm.create_model("efficientnet_b4", pretrained=False)
    fake_hub_cache(hub, "timm/efficientnet_b4.ra2_in1k", reference.state_dict())
    run = cli("weights", "--model", "efficientnet_b4", env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"efficientnet_b4: timm/efficientnet_b4.ra2_in1k is in {hub}"
    check = ("from cifar_hw2.models import build_model; import sys, torch; "
             "m = build_model('efficientnet_b4', pretrained=True); torch.save(m.backbone.conv_stem.weight, sys.argv[1])")
    done = subprocess.run([sys.executable, "-c", check, str(tmp_path / "stem.pt")], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert torch.equal(torch.load(tmp_path / "stem.pt"), reference.conv_stem.weight)


@pytest.mark.slow
def test_train_then_out_folder_guard_then_evaluate(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--preset", "quick", "--data", str(tiny_data), "--train-per-class", "10",
            "--val-per-class", "2", "--test-per-class", "all", "--epochs", "1", "--workers", "0",
            "--out", str(out), "--loss", "flsd53"]
    assert cli(*args).returncode == 0
    # config.json's command can be pasted again from where it ran (not `.../cifar_hw2/__main__.py train`)
    record = json.loads((out / "config.json").read_text())
    assert record["loss_settings_used"] == {} and record["config"]["gamma"] == 2.0   # FLSD-53 reads no gamma
    recorded = shlex.split(record["command"])
    python = os.path.relpath(sys.executable, ROOT) if Path(sys.executable).is_relative_to(ROOT) else sys.executable
    assert recorded == [python, "-m", "cifar_hw2", *args]
    again = cli(*args)      # finished: --resume would have nothing to do, so it is not offered
    assert again.returncode == 2 and again.stderr.strip() == (
        f"cifar-hw2: error: out folder {out} already holds a run with nothing left to do (model=small_cnn, "
        f"loss=flsd53, lr=0.002, batch_size=32, 1 epoch done, 1 asked); pass --overwrite to train it again, or "
        f"choose another --out (`evaluate --checkpoint {out / 'best.pt'}` re-evaluates it)")
    longer = cli(*args[:-4], "--epochs", "2", "--out", str(out), "--loss", "flsd53")
    assert longer.returncode == 2 and "already holds a run (model=small_cnn, loss=flsd53" in longer.stderr
    assert "pass --resume to continue it or --overwrite to replace it" in longer.stderr
    other = cli(*args[:-1], "ce")       # --resume would be refused: not offered
    assert other.returncode == 2 and other.stderr.strip() == (
        f"cifar-hw2: error: out folder {out} already holds a run made with other settings (--loss 'flsd53' there, "
        f"'ce' here); pass --overwrite to replace it, or choose another --out")
    smaller = cli(*args, "--batch-size", "16", "--lr", "0.001")      # every setting is named as its flag
    assert smaller.returncode == 2 and "other settings (--lr 0.002 there, 0.001 here; --batch-size 32 there, 16 " \
        "here)" in smaller.stderr
    resumed = cli(*args, "--batch-size", "16", "--resume")
    assert resumed.returncode == 2 and "other settings (--batch-size: 32 in the checkpoint, 16 now)" in resumed.stderr
    assert cli(*args, "--overwrite").returncode == 0
    run = cli("evaluate", "--checkpoint", str(out / "best.pt"), "--split", "val")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["split"] == "val" and result["images"] == 200
    assert {"top1", "top5", "nll", "ece", "temperature", "temperature_ece"} <= set(result)
    assert not {"ece_ts", "ece_ts_ece"} & set(result)           # T was fitted on val: no in-sample ECE
    assert "cifar-hw2: note: on val, ece_ts and ece_ts_ece are left out" in run.stderr
    assert json.loads((out / "eval-best-val.json").read_text()) == result
    test = json.loads(cli("evaluate", "--checkpoint", str(out / "best.pt")).stdout)
    assert {"ece_ts", "ece_ts_ece"} <= set(test) and test["temperature"] == result["temperature"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert test["top1"] == pytest.approx(metrics["best"]["top1"])   # same model, same test split


@pytest.mark.parametrize("name", ["bad.pt", "README.md"])
def test_evaluate_refuses_a_file_that_is_not_a_checkpoint(tmp_path, name, capsys):
    path = tmp_path / "bad.pt" if name == "bad.pt" else ROOT / name
    if name == "bad.pt":
        path.write_bytes(b"nope")
    status, err = cli_here(capsys, "evaluate", "--checkpoint", str(path))
    assert status == 2 and f"{path} is not a cifar_hw2 checkpoint" in err, err
    assert len(err.strip().splitlines()) == 1
    assert "weights_only" not in err       # torch's advice to load unsafely is not passed on


def test_help_documents_every_flag_with_its_default():
    text = cli("train", "--help").stdout
    for flag in ("--loss", "--model", "--epochs", "--batch-size", "--lr", "--data", "--resume", "--device",
                 "--gamma", "--mc-mu", "--optimizer", "--schedule", "--overwrite"):
        assert flag in text
    assert "(default: 200)" in text and "(default: 'flsd53')" in text
    # the GPU options, and what is not measured
    for flag in ("--precision", "--deterministic", "--compile", "--compile-mode", "--tf32"):
        assert flag in text
    flat = " ".join(text.split())
    assert "reduce-overhead (adds CUDA graphs; opt-in, unmeasured on a GPU)" in flat
    assert "TF32 tensor cores for fp32 matmuls on CUDA" in flat and "unmeasured on a GPU" in flat
    assert "a short run may not pay it back" in flat
    # each default once, in words a user types (not Python's None/True or 16 digits)
    for noise in ("(default: None)", "for None", "333333333", "default) (default"):
        assert noise not in " ".join(text.split()), noise
    flat = " ".join(text.split())   # argparse wraps lines where it likes
    assert "--epochs N passes over the training split (default: 200)" in flat
    assert "(default: from the hub)" in flat and "(default: $CIFAR_HW2_DATA, else cifar_hw2/data under $XDG_CACHE_HOME or ~/.cache)" in flat


@pytest.mark.slow
def test_cpu_fp16_trains_and_says_what_it_picked(tiny_data, tmp_path):
    # fp16 on the CPU is many times slower than fp32: 2 steps of 50 images, 100 val and 100 test images
    run = cli("train", "--preset", "quick", "--data", str(tiny_data), "--train-per-class", "1", "--val-per-class", "1",
              "--test-per-class", "1", "--epochs", "1", "--batch-size", "50", "--precision", "fp16",
              "--progress", "epoch", "--out", str(tmp_path / "fp16"))
    assert run.returncode == 0, run.stderr
    first = run.stdout.splitlines()[0]
    assert "cpu, precision fp16 (asked for; half precision on cpu is slow, meant for testing the path)" in first
    assert "fp16 steps skipped so far" in run.stdout


@pytest.mark.slow
def test_bench_prints_every_measurement_and_one_table_for_several_batch_sizes(tiny_data, tmp_path):
    from cifar_hw2.perf.bench import run_bench
    lines = []
    records = run_bench("small_cnn", batch_size=[16, 20], device="cpu", steps=3, repeats=1, data=str(tiny_data),
                        out=str(tmp_path / "bench"), echo=lines.append)
    names = [r["measurement"] for r in records]
    per_batch = ["train_step_synthetic", "end_to_end", "end_to_end_over_synthetic", "bare_loop",
                 "trainer_over_bare_loop", "logging_cost", "warmup", "gflop_per_image", "achieved_tflops", "hours_per_row"]
    # augmentation once; no peak GPU memory on the CPU
    assert names == ["augmentation_per_core"] * 3 + ["augmentation_ratio"] * 2 + per_batch * 2
    assert all(r["value"] > 0 for r in records if r["measurement"] != "logging_cost")
    # logging_cost is 1 - logged/unlogged rate: below 1. How far timing noise moves it is not a test's
    # business (on 2 busy cores one window ran twice as fast as the other: -1).
    logging = [r for r in records if r["measurement"] == "logging_cost"]
    assert len(logging) == 2 and all(math.isfinite(r["value"]) and r["value"] < 1 and "points" in r for r in logging)
    for size in (16, 20):
        value = {(r["measurement"], r.get("path", "")): r["value"] for r in records if r["batch_size"] == size}
        v = {k[0]: x for k, x in value.items()}
        assert v["end_to_end_over_synthetic"] == pytest.approx(v["end_to_end"] / v["train_step_synthetic"], rel=1e-2)
        # the CPU reference's row: 7 epochs of 45,000 images at the end-to-end rate
        assert v["hours_per_row"] == pytest.approx(7 * 45_000 / v["end_to_end"] / 3600, rel=1e-2)
        assert v["achieved_tflops"] == pytest.approx(v["gflop_per_image"] * v["end_to_end"] / 1e3, rel=1e-2)
    gflop = next(r["value"] for r in records if r["measurement"] == "gflop_per_image")
    assert gflop == pytest.approx(0.1426, rel=1e-2)   # small_cnn: 47.5 MFLOP forward at 32 px, x3
    assert records[0]["augment_on"] == "device" and records[0]["loader_workers"] == 0   # the CPU default
    assert records[0]["precision"] == "fp32"
    # 3 steps rounded up to a whole chunk (512 images = 32 batches of 16), here the whole epoch (12)
    assert records[0]["steps"] == 12
    assert [json.loads(line) for line in lines[:-1]] == records
    table = lines[-1].splitlines()
    rows = [line.split() for line in table if line.split() and line.split()[0] in ("16", "20")]
    assert [r[0] for r in rows] == ["16", "20"] and all(len(r) == 13 and r[7:10] == ["-"] * 3 for r in rows)   # eager, CPU: no compile, warm start, peak GiB
    assert "h/row: cpu-reference: 7 epochs x 45000 images" in table[-1]


@pytest.mark.slow
def test_bench_cli_takes_several_batch_sizes_and_checks_them(tiny_data):
    run = cli("bench", "--device", "cpu", "--batch-size", "16", "0", "--data", str(tiny_data))
    assert run.returncode == 2 and "batch sizes must be positive integers" in run.stderr, run.stderr


@pytest.mark.slow
def test_bench_refuses_more_steps_than_an_epoch(tiny_data, tmp_path):
    run = cli("bench", "--device", "cpu", "--batch-size", "100", "--steps", "50", "--data", str(tiny_data))
    assert run.returncode == 2 and "--steps 50 is more than the 2 batches" in run.stderr, run.stderr


# ---- one clear line, and nothing lost (issue 27)

@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    """A finished one-epoch run of 300 images (its best.pt is what `evaluate` reads)."""
    from cifar_hw2.training.config import make_config
    from cifar_hw2.training.trainer import fit
    out = tmp_path_factory.mktemp("evaluate") / "run"
    fit(make_config("quick", data=str(tiny_data), out=str(out), train_per_class=3, val_per_class=1,
                    test_per_class=1, epochs=1, batch_size=30, workers=0, progress="off"))
    return out


@pytest.mark.parametrize("change, said", [
    (lambda s: s["model"].update(fc=torch.zeros(3)), "Unexpected key(s) in state_dict"),
    (lambda s: s["model"].pop(next(iter(s["model"]))), "Missing key(s) in state_dict"),
    (lambda s: s["config"].update(from_a_later_version=1), "unexpected keyword argument 'from_a_later_version'"),
    (lambda s: s["config"].update(eval_batch_size=-1), "--eval-batch-size must be a positive integer, got -1"),
    (lambda s: s["config"].update(seed="x"), "seed"),
    (lambda s: s["config"].pop("model"), "its config names efficientnet_b4, its weights are small_cnn's"),
])
def test_evaluate_on_a_checkpoint_whose_settings_or_weights_do_not_fit_is_one_line(tiny_run, tmp_path, capsys,
                                                                                   change, said):
    """A checkpoint is not trusted: odd settings are checked as a run's are, the weights load strictly,
    and the model it builds is the one its weights are of (a config without `model` built B4)."""
    state = torch.load(tiny_run / "best.pt", weights_only=True)
    change(state)
    torch.save(state, tmp_path / "odd.pt")
    status, err = cli_here(capsys, "evaluate", "--checkpoint", str(tmp_path / "odd.pt"))
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"cifar-hw2: error: {tmp_path / 'odd.pt'} cannot be evaluated: its settings or weights do "
                          f"not make a model of this version (") and said in err, err


def test_evaluate_needs_no_longer_the_weight_file_a_run_started_from(tiny_run, tmp_path, capsys):
    """A run made with --pretrained FILE records the path; evaluated where that file is not (another
    machine, another folder), its best.pt is still evaluated: the weights are the checkpoint's."""
    state = torch.load(tiny_run / "best.pt", weights_only=True)
    state["config"]["pretrained"] = str(tmp_path / "gone" / "b4.safetensors")
    torch.save(state, tmp_path / "started-from-a-file.pt")
    status = cli_here(capsys, "evaluate", "--checkpoint", str(tmp_path / "started-from-a-file.pt"))[0]
    assert status == 0


def test_evaluate_on_a_folder_says_it_expects_a_checkpoint_file(tiny_run, tmp_path, capsys):
    status, err = cli_here(capsys, "evaluate", "--checkpoint", str(tiny_run))
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert (f"checkpoint {tiny_run} is a folder; expected a checkpoint file such as {tiny_run / 'best.pt'} "
            f"(it holds best.pt, last.pt)") in err
    # a last.pt that is a folder: no made-up file inside it is suggested
    (tmp_path / "last.pt").mkdir()
    status, err = cli_here(capsys, "evaluate", "--checkpoint", str(tmp_path / "last.pt"))
    assert status == 2 and err.strip() == (f"cifar-hw2: error: checkpoint {tmp_path / 'last.pt'} is a folder that "
                                           f"holds no .pt file; expected a checkpoint file: a run folder's best.pt "
                                           f"or last.pt"), err


@pytest.mark.parametrize("fault", ["ENOSPC", "immutable"])
def test_evaluate_prints_its_metrics_when_they_cannot_be_saved(fault, tiny_run, monkeypatch, capsys):
    """A full disk or a read-only folder: the metrics computed are printed, then one line says they
    were not saved (exit 74, as for a run file that cannot be written)."""
    from cifar_hw2.cli import EXIT_WRITE_FAILED
    from test_long_runs import _fail_writes_of
    saved = tiny_run / "eval-best-test.json"
    saved.unlink(missing_ok=True)
    if fault == "ENOSPC":
        _fail_writes_of(monkeypatch, saved.name, 1)
        why = "No space left on device"
    else:
        if subprocess.run(["chattr", "+i", str(tiny_run)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i needs root (CAP_LINUX_IMMUTABLE)")
        why = "Operation not permitted"
    from cifar_hw2.cli import main
    try:
        status = main(["evaluate", "--checkpoint", str(tiny_run / "best.pt"), "--device", "cpu"])
        out, err = capsys.readouterr()
    finally:
        if fault == "immutable":
            subprocess.run(["chattr", "-i", str(tiny_run)])
    assert status == EXIT_WRITE_FAILED and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"the metrics above could not be saved to {saved}: {why}" in err
    result = json.loads(out)
    assert result["split"] == "test" and {"top1", "top5", "nll", "ece", "ece_ts"} <= set(result)
    assert not saved.exists() and not [p for p in tiny_run.iterdir() if p.name.endswith(".tmp")]


def test_evaluate_on_a_malicious_pickle_prints_one_line_and_runs_nothing(tmp_path):
    """Python's default pickle protocol (5) makes torch warn before it refuses the file: one line only."""
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'payload-ran'}",)
    path = tmp_path / "best.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": Payload()}, f, protocol=pickle.DEFAULT_PROTOCOL)
    run = cli("evaluate", "--checkpoint", str(path))
    assert run.returncode == 2 and run.stderr.splitlines() == [
        f"cifar-hw2: error: {path} is not a cifar_hw2 checkpoint (or it is damaged): torch cannot read it as a "
        f"file of tensors. Pass a best.pt or last.pt written by `cifar_hw2 train`"], run.stderr
    assert not (tmp_path / "payload-ran").exists()


def test_grid_status_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    """`grid --status | head -1`: the reader is gone before the first line; the output stops, nothing else."""
    import os
    proc = subprocess.Popen([sys.executable, "-m", "cifar_hw2", "grid", "--status", "--runs", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and err == "", err
