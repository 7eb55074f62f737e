"""Kubernetes resource quantities as integers: CPU in millicores, everything else in base units."""

from __future__ import annotations

import re
from decimal import Decimal

_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
CPU = "cpu"
MEMORY = "memory"


def parse(value: str | int | float) -> Decimal:
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.groups()
    return Decimal(number) * Decimal(_SUFFIXES[suffix or ""])


def amount(resource: str, value: str | int | float) -> int:
    """cpu in millicores; other resources (memory, nvidia.com/gpu, ...) in their base unit, rounded up
    like the API server's MilliValue/Value."""
    scaled = parse(value) * (1000 if resource == CPU else 1)
    return int(scaled.to_integral_value(rounding="ROUND_CEILING"))


def amounts(resources: dict | None) -> dict[str, int]:
    return {name: amount(name, value) for name, value in (resources or {}).items()}


def show(resource: str, value: int) -> str:
    """A quantity for people: 3920m, 13.4Gi, 4."""
    if resource == CPU:
        return f"{value // 1000}" if value % 1000 == 0 else f"{value}m"
    if resource == MEMORY or resource == "ephemeral-storage":
        gib = value / 2**30
        return f"{gib:.0f}Gi" if abs(gib - round(gib)) < 0.005 else f"{gib:.1f}Gi" if gib >= 1 else f"{value / 2**20:.0f}Mi"
    return str(value)
