"""Executors: where an experiment's runs execute (this process, worker processes, SLURM)."""
