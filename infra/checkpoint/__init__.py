"""Checkpoint tools (pure Python and numpy; no Pulumi)."""
