"""Reads the stack's config and secrets from Pulumi (the only module of the config that imports Pulumi)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi.runtime import config as runtime_config

from infra.config import PROJECT, SECRET_KEYS, StackConfig, check_namespaces, parse_stack_config


@dataclass
class StackSecrets:
    api_key: pulumi.Output[str] | None
    hub_token: pulumi.Output[str] | None


def _configured_keys() -> set[str]:
    everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    check_namespaces(everything, pulumi.get_stack())
    prefix = f"{PROJECT}:"
    return {key[len(prefix):] for key in everything if key.startswith(prefix)}


def load_stack_config() -> StackConfig:
    config = pulumi.Config(PROJECT)
    raw = {key: config.get(key) for key in _configured_keys() if key not in SECRET_KEYS}
    return parse_stack_config(raw, pulumi.get_stack())


def read_secrets() -> StackSecrets:
    config = pulumi.Config(PROJECT)
    return StackSecrets(api_key=config.get_secret("apiKey"), hub_token=config.get_secret("hubToken"))
