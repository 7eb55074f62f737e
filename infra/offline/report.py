"""Presents a plan: a JSON document, or tables and a resource tree for people."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from infra import outputs as output_names
from infra.capacity.planner import describe_figures
from infra.cost import describe_cost
from infra.workload import access
from infra.workload.upgrade import IMAGE_CHANGE_ANNOTATION
from infra.offline.engine import PlanResult
from infra.config import PROJECT
from infra.run_mode import UP_REFUSES
from infra.preflight.memory import MEMORY_LABELS
from infra.preflight_gate import FIELD_TO_KEY


def preflight_of(result: PlanResult) -> dict | None:
    if output_names.PREFLIGHT in result.outputs:
        return result.outputs[output_names.PREFLIGHT]
    verdict = getattr(result.cause, "verdict", None)
    return verdict.as_dict() if verdict is not None else None


def placement_of(result: PlanResult) -> dict | None:
    if output_names.PLACEMENT in result.outputs:
        return result.outputs[output_names.PLACEMENT]
    report = getattr(result.cause, "report", None)
    return report.as_dict() if report is not None else None


@dataclass(frozen=True)
class Verdict:
    """One line of the plan's summary: what was checked, whether it passed, and in a few words why."""
    name: str
    ok: bool | None  # None: information (a cost, a warning), neither passed nor failed
    message: str


def _first_sentence(text: str, limit: int = 140) -> str:
    """The first sentence, without its parenthesis when that is what makes it long (details follow below)."""
    sentence = text.split(". ")[0].splitlines()[0]
    if len(sentence) > limit:
        sentence = sentence.split(" (")[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


def preflight_verdicts(result: PlanResult) -> list[Verdict]:
    preflight = preflight_of(result)
    if preflight is None:
        return []
    failed = [c for c in preflight["checks"] if not c["ok"] and c["severity"] != "warning"]
    warned = [c for c in preflight["checks"] if not c["ok"] and c["severity"] == "warning"]
    if failed:
        message = "; ".join(f"{c['name']}: {_first_sentence(c['message'], 100)}" for c in failed)
    else:
        message = (f"vLLM {preflight['vllm_version']} would load and serve: {preflight['kernel']} kernel, "
                   f"TP {preflight['tensor_parallel_size']} on {preflight['gpu']}")
    if warned:
        message += f" ({len(warned)} warning{'s' if len(warned) > 1 else ''}: {', '.join(c['name'] for c in warned)})"
    return [Verdict("preflight", not failed, message)]


def placement_verdicts(result: PlanResult) -> list[Verdict]:
    placement = placement_of(result)
    if placement is None:
        return []
    if placement.get("skipped"):
        return [Verdict("placement", None, f"skipped: {placement['skipped']}")]
    pending = [p for p in placement["pods"] if p["reasons"]]
    if placement["ok"]:
        message = f"all {len(placement['pods'])} pods fit their pools (kube-scheduler filters, offline)"
    elif pending:
        message = "Pending: " + "; ".join(f"{p['pod']} ({_first_sentence(p['reasons'][0], 80)})" for p in pending[:3])
    else:
        message = "volumes or the upgrade do not fit (details below)"
    return [Verdict("placement", placement["ok"], message)]


def cost_verdicts(result: PlanResult) -> list[Verdict]:
    cost = result.outputs.get(output_names.HOURLY_COST_USD)
    return [Verdict("cost", None, describe_cost(cost))] if cost else []


def capacity_verdicts(result: PlanResult) -> list[Verdict]:
    figures = result.outputs.get(output_names.CAPACITY)
    return [Verdict("capacity", None, describe_figures(figures))] if figures else []


def upgrade_verdicts(result: PlanResult) -> list[Verdict]:
    """What an image change costs on this stack, as the RayService states it (infra/workload/upgrade.py)."""
    return [Verdict("upgrade", None, r.inputs["metadata"]["annotations"][IMAGE_CHANGE_ANNOTATION])
            for r in result.resources if r.type == "kubernetes:ray.io/v1:RayService"]


def monitoring_verdicts(result: PlanResult) -> list[Verdict]:
    monitoring = result.outputs.get(output_names.MONITORING)
    return [Verdict("monitoring", None, monitoring)] if monitoring else []


def zone_verdicts(result: PlanResult) -> list[Verdict]:
    """Where the cluster goes, and why (infra/nodepool.py eks_zone_choice, gke_zone_choice)."""
    choice = result.outputs.get(output_names.CLUSTER_ZONES)
    if not choice:
        return []
    ids = f" ({', '.join(choice['zoneIds'])})" if choice.get("zoneIds") else ""
    passed = "; ".join(f"not {zone}: {why}" for zone, why in (choice.get("passedOver") or {}).items())
    return [Verdict("zones", None, f"{', '.join(choice['zones'])}{ids}" + (f"; {passed}" if passed else ""))]


def warning_verdicts(result: PlanResult) -> list[Verdict]:
    return [Verdict("warning", None, _first_sentence(warning)) for warning in result.warnings
            if not warning.startswith(UP_REFUSES)]


def up_verdicts(result: PlanResult) -> list[Verdict]:
    """What `pulumi up` will refuse although the plan (a preview) passes, such as prod without its model lock."""
    return [Verdict("up", False, _first_sentence(refusal)) for refusal in result.up_refusals]


def plan_verdicts(result: PlanResult) -> list[Verdict]:
    if not result.ok:
        return [Verdict("plan", False, _first_sentence(result.error or "failed", 200))]
    custom = sum(1 for r in result.resources if r.custom)
    return [Verdict("plan", True, f"{custom} resources in {len(result.resources) - custom - 1} components")]


# The summary's sections, in order. A new check joins the summary by adding its function here: it takes
# the PlanResult and returns Verdict lines (an empty list when it has nothing to say).
SUMMARY_SECTIONS: list[Callable[[PlanResult], list[Verdict]]] = [
    preflight_verdicts, placement_verdicts, cost_verdicts, capacity_verdicts, zone_verdicts, upgrade_verdicts,
    monitoring_verdicts, warning_verdicts, up_verdicts, plan_verdicts,
]


def summary(result: PlanResult) -> list[Verdict]:
    return [verdict for section in SUMMARY_SECTIONS for verdict in section(result)]


def plan_document(result: PlanResult) -> dict[str, Any]:
    return {
        "stack": result.stack,
        "project": result.project,
        "ok": result.ok,
        "summary": [asdict(verdict) for verdict in summary(result)],
        "error": result.error,
        "warnings": result.warnings,
        "preflight": preflight_of(result),
        "placement": placement_of(result),
        "resources": [r.as_dict() for r in result.resources if r.parent is not None],
        "outputs": result.outputs,
    }


def _memory_table(memory: dict) -> Table:
    table = Table(title="Memory per GPU", show_header=False, box=None, padding=(0, 2))
    for key, label in MEMORY_LABELS.items():
        if key in memory:
            table.add_row(label, str(memory[key]))
    return table


def print_preflight(console: Console, preflight: dict, max_num_seqs: int | None = None) -> None:
    status = "[green]PASS[/green]" if preflight["ok"] else "[red]FAIL[/red]"
    console.print(
        f"Preflight: {status}  vLLM {preflight['vllm_version']}, {preflight['kernel']} kernel, "
        f"TP {preflight['tensor_parallel_size']} on {preflight['gpu']}"
    )
    for check in preflight["checks"]:
        if not check["ok"]:
            colour = "yellow" if check["severity"] == "warning" else "red"
            console.print(f"  [{colour}]{check['severity']}[/{colour}] {check['name']}: {escape(check['message'])}")
            if check.get("changes"):
                # The stack's own words: the settings that make the check pass (each alone).
                settings = " or ".join(" and ".join(f"pulumi config set {PROJECT}:{FIELD_TO_KEY[k]} {v}" for k, v in change.items())
                                       for change in check["changes"])
                console.print(f"    fix: {escape(settings)}")
            elif check["fix"]:
                console.print(f"    fix: {escape(check['fix'])}")
    if preflight.get("memory"):
        console.print(_memory_table(preflight["memory"]))


def print_placement(console: Console, placement: dict) -> None:
    """Pod -> pool, the headroom left per pool, and for each pod that would stay Pending, why."""
    if placement.get("skipped"):
        console.print(f"Placement: [yellow]SKIPPED[/yellow] {escape(placement['skipped'])}")
        return
    status = "[green]PASS[/green]" if placement["ok"] else "[red]FAIL[/red]"
    console.print(f"Placement: {status}  (kube-scheduler filters, offline)")
    table = Table(box=None, padding=(0, 2))
    for column in ("pod", "kind", "requests", "pool"):
        table.add_column(column)
    for pod in placement["pods"]:
        requests = ", ".join(f"{k} {v}" for k, v in pod["requests"].items())
        pool = escape(pod["pool"]) if pod["pool"] and not pod["reasons"] else "[red]Pending[/red]"
        table.add_row(escape(pod["pod"]), pod["kind"], escape(requests), pool)
        for reason in pod["reasons"]:
            table.add_row("", "", f"[red]{escape(reason)}[/red]", "")
    console.print(table)
    for pool in placement["pools"]:
        free = "; ".join(f"{name} {pool[name]['free']} free of {pool[name]['allocatable']}"
                         for name in ("cpu", "memory", "nvidia.com/gpu") if name in pool)
        console.print(f"  pool {escape(pool['pool'])}: {pool['nodes']} x {escape(pool['instance'])}, {escape(free)}")
    for volume in placement["volumes"]:
        state = "[green]binds[/green]" if volume["ok"] else "[red]" + escape("; ".join(volume["reasons"])) + "[/red]"
        console.print(f"  volume {escape(volume['claim'])} ({escape(str(volume['storageClass']))}, "
                      f"{escape(str(volume['provisioner']))}): {state}")
    upgrade = placement.get("upgrade") or {}
    if upgrade:
        if upgrade.get("note"):
            state = escape(upgrade["note"])
        elif upgrade["ok"]:
            state = "[green]a second RayCluster fits beside the first[/green]"
        else:
            state = "[red]" + escape("; ".join(upgrade["reasons"])) + "[/red]"
        console.print(f"  upgrade {escape(upgrade['strategy'])}: {state}")
    for row in placement.get("preemption") or []:
        first = ", ".join(row["evicted_first"]) or "nothing"
        room = ", ".join(f"{name} {value}" for name, value in row["room_before_eviction"].items())
        console.print(f"  preemption {escape(row['pod'])} (priority {row['priority']}) on {escape(row['node'])}: "
                      f"evicted first {escape(first)}; a higher-priority pod may take {escape(room)} before it")


def _tree(result: PlanResult, show_inputs: bool) -> Tree:
    stack = next(r for r in result.resources if r.parent is None)
    root = Tree(f"[bold]{stack.type}[/bold] {stack.name}")
    nodes = {stack.key: root}
    for resource in result.resources:
        if resource.parent is None:
            continue
        flags = " [magenta](protected)[/magenta]" if resource.protect else ""
        flags += " [blue](read)[/blue]" if resource.read else ""
        parent = nodes.get(resource.parent, root)
        node = parent.add(f"[cyan]{resource.type}[/cyan] {escape(resource.name)}{flags}")
        if show_inputs and resource.custom and resource.inputs:
            node.add(escape(yaml.safe_dump(resource.inputs, sort_keys=True, width=100).rstrip()))
        nodes[resource.key] = node
    return root


VERDICT_LABELS = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]", None: "[yellow]note[/yellow]"}


def print_summary(console: Console, result: PlanResult) -> None:
    table = Table(box=None, padding=(0, 2), show_header=False)
    for verdict in summary(result):
        table.add_row(verdict.name, VERDICT_LABELS[verdict.ok], escape(verdict.message))
    console.print(table)


def print_plan(console: Console, result: PlanResult, show_inputs: bool = False, quiet: bool = False) -> None:
    """The summary first (what passed and what did not), then, unless `quiet`, the details and the tree."""
    console.print(f"[bold]Offline plan of stack {result.stack}[/bold] (project {result.project}; "
                  "strict mocks, no cloud calls)")
    print_summary(console, result)
    if quiet:
        return
    console.print()
    preflight = preflight_of(result)
    if preflight:
        print_preflight(console, preflight)
    placement = placement_of(result)
    if placement:
        print_placement(console, placement)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if not result.ok:
        # The preflight's reasons are printed above; the error's first line says what happened.
        error = result.error.splitlines()[0] if preflight else result.error
        console.print(f"[red]Plan failed:[/red] {escape(error)}", highlight=False)
        return
    cost = result.outputs.get(output_names.HOURLY_COST_USD, {})
    if cost:
        console.print(f"GPU pool cost: {escape(describe_cost(cost))}")
    custom = sum(1 for r in result.resources if r.custom)
    console.print(f"Resources: {custom} custom resources in {len(result.resources) - custom - 1} components")
    console.print(_tree(result, show_inputs))
    table = Table(title="Stack outputs", box=None, padding=(0, 2))
    table.add_column("output")
    table.add_column("value")
    for name, value in result.outputs.items():
        if name in (output_names.PREFLIGHT, output_names.HOURLY_COST_USD, output_names.PLACEMENT, output_names.CAPACITY,
                    output_names.ACCESS):
            continue
        shown = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
        table.add_row(name, escape(shown))
    console.print(table)
    print_access(console, result.outputs.get(output_names.ACCESS) or {})


def print_access(console: Console, commands: dict) -> None:
    """After `pulumi up`, these reach the endpoint (docs/endpoint.md), in the order to run them."""
    if not commands:
        return
    console.print(f"[bold]Reach the endpoint after pulumi up[/bold] (stack output {output_names.ACCESS}; "
                  "port-forward in its own terminal):")
    for key in access.ORDER:
        if key in commands:
            # soft_wrap: a command is copied whole, never broken into lines.
            console.print(f"  {escape(commands[key])}", soft_wrap=True)
