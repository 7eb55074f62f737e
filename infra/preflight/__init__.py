"""Pure preflight rules: will vLLM load and serve a model at a TP size on a GPU? No Pulumi import."""

from infra.preflight.engine import (
    Check,
    PreflightInputError,
    PreflightRequest,
    Verdict,
    catalog_request,
    padded_intermediate_size,
    run_preflight,
)
from infra.preflight.model import ModelConfigError

__all__ = [
    "Check",
    "ModelConfigError",
    "PreflightInputError",
    "PreflightRequest",
    "Verdict",
    "catalog_request",
    "padded_intermediate_size",
    "run_preflight",
]
