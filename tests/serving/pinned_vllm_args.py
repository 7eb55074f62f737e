"""The pinned vLLM release's OpenAI server argument parser, rebuilt from the release's wheel without
importing vLLM: importing it needs the release's torch, and the package index has only that torch's CUDA
build (with about 2.5 GB of CUDA libraries; the CPU build lives on PyTorch's own index, which this machine
cannot reach). Every `add_argument` call of the two files that make the parser (arg_utils.py for the
engine, cli_args.py for the server) is replayed with its flags, action, nargs, literal choices and int or
float type; --quantization's choices are QUANTIZATION_METHODS' keys and None, as the release has them
(vllm/engine/arg_utils.py:447-450). A flag the release does not define, a value outside its choices or of
the wrong type is refused, as vLLM's own parser refuses it."""

from __future__ import annotations

import argparse
import ast

from tests.vllm_release import pinned_vllm_source

SOURCES = ("vllm/engine/arg_utils.py", "vllm/entrypoints/openai/cli_args.py")
QUANTIZATION_SOURCE = "vllm/model_executor/layers/quantization/__init__.py"
TYPES = {"int": int, "float": float}


def quantization_methods() -> set[str]:
    tree = ast.parse(pinned_vllm_source(QUANTIZATION_SOURCE))
    methods = next(node.value for node in ast.walk(tree) if isinstance(node, ast.AnnAssign)
                   and getattr(node.target, "id", "") == "QUANTIZATION_METHODS")
    return {key.value for key in methods.keys}


def _options(call: ast.Call, quantization: set[str]) -> dict:
    options: dict = {}
    for keyword in call.keywords:
        value = keyword.value
        if keyword.arg == "action" and isinstance(value, ast.Constant):
            options["action"] = value.value  # store_true, append; the release's own Action classes store
        elif keyword.arg == "nargs":
            options["nargs"] = ast.literal_eval(value)
        elif keyword.arg == "type" and isinstance(value, ast.Name) and value.id in TYPES:
            options["type"] = TYPES[value.id]
        elif keyword.arg == "choices":
            if ast.unparse(value) == "[*QUANTIZATION_METHODS, None]":
                options["choices"] = [*sorted(quantization), None]
            else:
                try:
                    options["choices"] = ast.literal_eval(value)
                except ValueError:
                    pass  # built at run time (DEVICE_OPTIONS, LoadFormat): not checked
    if options.get("action") not in (None, "store_true", "store_false", "append"):
        options.pop("action")
    return options


def pinned_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm.entrypoints.openai.api_server", exit_on_error=False,
                                     allow_abbrev=False)
    quantization = quantization_methods()
    for name in SOURCES:
        for node in ast.walk(ast.parse(pinned_vllm_source(name))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                flags = [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
                if flags and all(flag.startswith("-") for flag in flags):
                    parser.add_argument(*flags, **_options(node, quantization))
    return parser


def parse_pinned(argv: list[str]) -> argparse.Namespace:
    """`argv` parsed as the pinned release parses it; ValueError naming what it refuses."""
    try:
        parsed, unknown = pinned_parser().parse_known_args(argv)
    except argparse.ArgumentError as error:
        raise ValueError(f"the pinned vLLM refuses {argv}: {error}") from None
    if unknown:
        raise ValueError(f"the pinned vLLM does not know {unknown}")
    return parsed
