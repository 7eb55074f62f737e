"""The endpoint's API key: the one in stack config, or one generated and kept in the stack's state."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from infra.config_reader import StackSecrets

API_KEY_LENGTH = 40


def endpoint_api_key(secrets: StackSecrets) -> pulumi.Output[str]:
    if secrets.api_key is not None:
        return pulumi.Output.secret(secrets.api_key)
    generated = random.RandomPassword("endpoint-api-key", length=API_KEY_LENGTH, special=False)
    return pulumi.Output.secret(generated.result)
