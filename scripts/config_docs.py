#!/usr/bin/env python3
"""Writes docs/config.md from infra/config.py's KEYS (`--check` fails when the page is stale)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.config import KEYS, PROJECT, REQUIRED_KEYS, SECRET_KEYS  # noqa: E402

PAGE = ROOT / "docs" / "config.md"


def render() -> str:
    lines = [
        "# Stack configuration",
        "",
        "Generated from `infra/config.py` by `python scripts/config_docs.py`; do not edit by hand.",
        f"Set a key with `pulumi config set {PROJECT}:<key> <value> --stack <stack>`. Every value is",
        "validated before any resource is registered; a bad one stops the run with the key, the value,",
        "what is allowed and the command that fixes it.",
        "",
        "| key | default | allowed | meaning |",
        "|---|---|---|---|",
    ]
    for key in KEYS:
        if key.name in REQUIRED_KEYS:
            default = "(required)"
        else:
            default = "(none)" if key.default in (None, ()) else f"`{key.default}`"
        lines.append(f"| `{PROJECT}:{key.name}` | {default} | {key.allowed} | {key.doc} |")
    lines += [
        "",
        "## Secrets",
        "",
        f"Set with `pulumi config set --secret {PROJECT}:<key> <value>`; they stay Pulumi secrets end to end",
        "(state, outputs and the offline plan show them only as `[secret]`).",
        "",
        f"- `{PROJECT}:{SECRET_KEYS[0]}`: the endpoint's API key. Unset: one is generated and kept in the stack's",
        "  state; read it with `pulumi stack output apiKey --show-secrets`.",
        f"- `{PROJECT}:{SECRET_KEYS[1]}`: a Hugging Face token, only for gated or private model repositories.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python scripts/config_docs.py")
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
