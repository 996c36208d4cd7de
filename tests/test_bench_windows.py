"""What bench's timed windows and the epoch loop augment: exactly the chunks they train on (the
device path augments whole chunks of batches; fetching one batch past the last step used to
augment one more chunk), and the JSON lines written as records come."""
import json

import pytest

from cifar_hw2.perf import bench
from cifar_hw2.training.config import make_config
from cifar_hw2.training.processes import Processes
from cifar_hw2.training.trainer import Trainer


@pytest.fixture()
def counted(tiny_data, tmp_path):
    """A small_cnn trainer on 1,000 images, batch 50: 20 batches, 10 per 512-image chunk; and a
    list that grows by one per augmented chunk."""
    cfg = make_config("quick", data=str(tiny_data), out=str(tmp_path / "run"), train_per_class=10,
                      val_per_class=2, test_per_class=1, batch_size=50, epochs=1, progress="off")
    trainer = Trainer(cfg.validate(), Processes())
    trainer.setup(None)
    assert trainer.loader.batches_per_chunk == 10 and len(trainer.loader) == 20
    calls, augment = [], trainer.loader.augment.uint8
    trainer.loader.augment.uint8 = lambda images, params: calls.append(len(images)) or augment(images, params)
    return trainer, calls


@pytest.mark.parametrize("steps, chunks", [(10, 1), (11, 2)])
def test_windows_augment_exactly_the_chunks_they_train(counted, steps, chunks):
    trainer, calls = counted
    trainer.train_epoch(0, None, max_steps=steps)
    assert len(calls) == chunks
    calls.clear()
    bench.trainer_window(trainer, steps)()
    assert len(calls) == chunks
    calls.clear()
    bench.bare_window(trainer, steps)()
    assert len(calls) == chunks


def test_bench_refuses_two_compiled_batch_sizes_and_writes_json_as_it_goes(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="one batch size per process"):
        bench.run_bench(batch_size=[16, 32], compile=True, data=str(tiny_data))
    path = tmp_path / "b.jsonl"
    seen = []

    def echo(line):               # each record is on disk by the time it is printed
        if line.startswith("{"):
            seen.append(len(path.read_text().splitlines()))

    bench.run_bench(batch_size=50, device="cpu", steps=4, repeats=1, data=str(tiny_data), out=str(tmp_path / "o"),
                    echo=echo, json_path=str(path))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert seen == list(range(1, len(records) + 1)) and records[0]["measurement"] == "augmentation_per_core"
    assert records[-1]["measurement"] == "hours_per_row"
    # A bench refused before its first record leaves the last one's file as it was
    kept = path.read_text()
    with pytest.raises(ValueError, match="steps and repeats must be positive"):
        bench.run_bench(steps=0, data=str(tiny_data), json_path=str(path))
    with pytest.raises(ValueError, match="--steps 99 is more than the"):
        bench.run_bench(batch_size=50, device="cpu", steps=99, repeats=1, data=str(tiny_data),
                        out=str(tmp_path / "o"), echo=lambda line: None, json_path=str(path))
    assert path.read_text() == kept
    with pytest.raises(ValueError, match=f"--json {tmp_path} is a folder"):
        bench.run_bench(data=str(tiny_data), json_path=str(tmp_path))
    with pytest.raises(ValueError, match="cannot make its folder"):
        bench.run_bench(data=str(tiny_data), json_path=str(path / "under-a-file.jsonl"))


@pytest.mark.slow
def test_the_warm_start_runs_last_once_no_trainer_holds_the_device(tiny_data, tmp_path, monkeypatch):
    """--warm-start's fresh process builds a whole trainer: on a GPU, Swin-B at batch 64 twice (this
    process's and the child's) need not fit. So it runs after every other record, with no trainer
    left in this process and dynamo's compiled code (and its CUDA graph pools) dropped."""
    import gc

    class AotEagerTrainer(Trainer):            # no C++ compile on the CPU (as tests/test_compiled.py)
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.compilation.backend = "aot_eager"

    path, alive, calls = tmp_path / "b.jsonl", [], []
    release = bench.release_device_memory

    def release_device_memory():
        calls.append("release")
        release()

    def warm_start_seconds(cfg):
        calls.append("warm start")
        gc.collect()
        alive.append(sum(issubclass(type(o), Trainer) for o in gc.get_objects()))
        measured = [json.loads(line)["measurement"] for line in path.read_text().splitlines()]
        assert measured[-1] == "hours_per_row"                     # everything else is on disk first
        return 1.5

    monkeypatch.setattr(bench, "Trainer", AotEagerTrainer)
    monkeypatch.setattr(bench, "warm_start_seconds", warm_start_seconds)
    monkeypatch.setattr(bench, "release_device_memory", release_device_memory)
    records = bench.run_bench(batch_size=50, device="cpu", steps=2, repeats=1, data=str(tiny_data),
                              out=str(tmp_path / "o"), compile=True, warm_start=True, json_path=str(path),
                              echo=lambda line: None)
    assert alive == [0] and calls == ["release", "warm start"]      # compiled code dropped before the child
    assert records[-1]["measurement"] == "compile_warm_start" and records[-1]["value"] == 1.5
    assert records[-1]["batch_size"] == 50 and records[-1]["compile"] == "default"   # the run's own fields
    assert json.loads(path.read_text().splitlines()[-1]) == records[-1]


def test_the_logged_window_writes_what_a_run_writes_and_leaves_the_trainer_unlogged(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = make_config("quick", data=str(tiny_data), out=str(tmp_path / "run"), train_per_class=10,
                      val_per_class=2, test_per_class=1, batch_size=20, epochs=1, progress="off")
    trainer = Trainer(cfg.validate(), Processes())
    trainer.setup(None)
    quiet = trainer.board
    window = bench.logged_window(trainer, 50, tmp_path / "events")
    for _ in range(2):
        window()
    # On the CPU the loop reads its loss every step; a point every 25 steps of an epoch: one in 50 steps
    assert window.board.points == 2
    assert trainer.board is quiet and quiet.writer is None     # trainer_window's loop stays unlogged
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "events"))
    events.Reload()
    assert len(events.Scalars("train/loss")) == 2
