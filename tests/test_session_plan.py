"""Notebook 04's plan cell: on Colab it times this run's own steps and says what a session holds."""
from cifar_hw2.perf.session import session_plan
from cifar_hw2.training.config import make_config


def test_off_colab_it_measures_nothing_and_says_how_to(tiny_data, tmp_path):
    lines = []
    assert session_plan(make_config("quick", data=str(tiny_data), out=str(tmp_path / "r")), on_colab=False,
                        echo=lines.append) is None
    assert len(lines) == 1 and "python -m cifar_hw2 bench --model small_cnn" in lines[0]
    assert not (tmp_path / "r").exists()


def test_on_colab_it_times_real_steps_and_points_at_drive_and_time_limit(tiny_data, tmp_path):
    cfg = make_config("quick", data=str(tiny_data), out=str(tmp_path / "r"), epochs=3000, batch_size=16,
                      train_per_class=None, val_per_class=2, test_per_class=None, device="cpu")
    lines = []
    plan = session_plan(cfg, steps=4, session_hours=0.001, on_colab=True, echo=lines.append)
    assert plan["images_per_s"] > 0 and not (tmp_path / "r").exists()   # the probe trains elsewhere
    images = 100 * (500 - 2)                 # the real split this config trains on
    assert abs(plan["hours_per_row"] - 3000 * images / plan["images_per_s"] / 3600) < 1e-9
    text = "\n".join(lines)
    assert "images/s" in text and "/content/drive/MyDrive/cifar_hw2/runs/r" in text
    assert "time_limit" in text and "checkpoint_minutes" in text     # the run outlasts this 3.6 s "session"
