"""Names of the platform add-ons that the workload refers to (no Pulumi import)."""

KUBERAY_OPERATOR_NAMESPACE = "kuberay-system"
