"""The placement check: a twin of the kube-scheduler's decisions for the pods this stack creates.

Pure (no Pulumi import): from the stack config, the workload's objects, the Helm releases' values
and the node pools' shapes, it decides offline whether every pod schedules, every volume binds and
a NewCluster upgrade fits, with the scheduler's own reasons. docs/placement.md explains each rule
and where it comes from."""

from infra.placement.check import PlacementFailed, PlacementReport, check_placement, placement_report

__all__ = ["PlacementFailed", "PlacementReport", "check_placement", "placement_report"]
