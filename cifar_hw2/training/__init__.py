"""The machinery that trains one model: what `python -m cifar_hw2 train` and notebook 04 run.

- config: every setting of a run, the presets and their checks; parameters: notebook 04's cell → a config
- naming: a setting as a message names it (a field name, or a flag on the command line)
- loader: training and evaluation batches, seeded per (seed, epoch), augmented on the device
- trainer: fit(), Trainer.step and the loop: setup, resume, train an epoch, evaluate, checkpoint, record
- tally: an epoch's running loss and accuracy, on the device; evaluation: an epoch's logits and metrics
- checkpoint: crash-safe files and checkpoints; runfolder: config, history, metrics, checkpoints of a run
- stopping: signals, the time limit, timed checkpoints, what a stopped run says; folderlock: one run per folder
- processes: devices, torchrun process groups, DDP and SyncBatchNorm
- precision: bf16 / fp16 (with GradScaler) / fp32 by device; backends: cudnn, TF32, determinism, compile caches
- compiled: torch.compile of the step (regional, cached, eager fallback) and its warm-up
- runstate: what last.pt and best.pt hold and when they are written: RNG states, a position inside an epoch
- progress: the epoch bar, and output that outlives a closed pipe
- speed: a CPU run's time, said up front; paths: the repository and shown paths
- predictions: predictions.npz, the best epoch's logits; tensorboard: the run's TensorBoard event files

May import: the science (cifar_hw2.data, augment, models, losses, …) and itself. Never the
experiments, perf, notebook or cli floors: one run must not depend on how many are run or shown.
"""
