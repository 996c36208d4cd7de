"""cifar_hw2: CIFAR-100 with EfficientNet-B4 / Swin-B and the CE, MC, focal and FLSD-53 losses.

A small package that the notebooks import. Each module holds one concern:

- data: the official archive, checked, as uint8 tensors, and its splits
- augment: the report's §2.1 augmentations, per image; batch_augment: the same per sample, batched on the device
- loader: training and evaluation batches, seeded per (seed, epoch)
- models: EfficientNet-B4, Swin-B and a small CNN, with their feature maps
- losses: CE, focal, FLSD-53 and MC (and the homework's variants)
- optim, schedule: optimizers and learning-rate schedules by name
- metrics: accuracy, NLL, ECE, reliability, temperature scaling
- config: every setting of a run and the presets; checkpoint: crash-safe files and checkpoints
- stopping: signals, the time limit and timed checkpoints; folderlock: one run per out folder
- trainer: fit(), Trainer.step, the epoch loop with evaluation; evaluate: a saved checkpoint's metrics
- processes: devices, torchrun process groups, DDP and SyncBatchNorm; runfolder: config, history, metrics, checkpoints
- precision: bf16 / fp16 (with GradScaler) / fp32 by device; backends: cudnn, TF32, determinism, compile caches
- reference: the report's Table 1 as data; grid: the experiment grid; report: runs against Table 1
- slurm: the grid and single runs as Slurm jobs through submitit, requeued at their time limit
- spread: runs that differ only by seed, mean ± sd, and differences against that spread
- plots, widgets, notebook: figures, interactive explorers and helpers for the notebooks
- nbtools: `notebooks --execute/--check/--repo-url`; progress: the epoch bar; speed: a CPU run's time, said up front
- bench: where a training step spends its time; cli: `python -m cifar_hw2 COMMAND`
- compiled: torch.compile of the step (regional, cached, eager fallback); syncs: would-be host syncs, counted
"""
__version__ = "0.1.0"
