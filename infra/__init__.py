"""The Qwen2-VL serving stack: a Pulumi program (`__main__.py`) and the pure libraries it wires."""
