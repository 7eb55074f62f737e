"""The guardrail policy pack (functions in policies.py; the pack in __main__.py)."""
