"""Many runs and what they mean: the report's Table 1, the grid that runs it, and the report.

- reference: the report's Table 1 as data
- rows: the grid's rows (Table 1 and the rows its code could not run), and --only's selection
- grid: the experiment grid, each row through notebook 04 (papermill) or a Slurm job
- slurm: the grid and single runs as Slurm jobs through submitit, requeued at their time limit
- runs: one run folder read back (config, history, metrics), checked as untrusted files
- report: run folders against Table 1, with figures and calibration
- spread: runs that differ only by seed, mean ± sd, and differences against that spread
- evaluate: a saved checkpoint's metrics
- mistakes: what each run gets wrong, read from its predictions.npz

May import: the science, the training machinery and itself. Never perf, notebook or cli.
"""
