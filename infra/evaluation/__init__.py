"""Evaluation lifecycle: short cost-bounded eval stacks and the reaper (the Pulumi CLI, driven as interruptible processes, behind a seam)."""
