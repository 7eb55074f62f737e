"""Evaluation lifecycle: short cost-bounded eval stacks and the reaper (Automation API behind a seam)."""
