"""The serving ingress's limits (images/vllm/qwen2vl_serve/limits.py), read from that file: the image package
is not installed beside infra/, and the stack's defaults, the preflight and the ingress must share each number
(the image-token bound the ingress guarantees is the one the memory profile is budgeted for)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

LIMITS_FILE = Path(__file__).resolve().parents[2] / "images" / "vllm" / "qwen2vl_serve" / "limits.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qwen2vl_serve_limits", LIMITS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LIMITS = _load()
