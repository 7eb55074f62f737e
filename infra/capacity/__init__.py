"""The capacity planner: from a target load and goals to the cheapest GPU shape that serves it (docs/capacity.md)."""
