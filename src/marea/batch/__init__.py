"""Batch-system drivers behind one interface (`base.BatchSystem`): slurm, htcondor, kubernetes."""
