"""Launchers: sweeps on local processes, Slurm (submitit) and Ray Tune."""
