"""Names of the platform add-ons that the workload refers to (no Pulumi import)."""

KUBERAY_OPERATOR_NAMESPACE = "kuberay-system"

# kube-prometheus-stack at its pin (values.yaml lines 4451, 4476, 4499): with the default
# *SelectorNilUsesHelmValues: true, its Prometheus selects PodMonitors, ServiceMonitors and PrometheusRules
# labelled release=<Helm release name> (templates/prometheus/prometheus.yaml lines 212-215, 280-283), in
# every namespace (podMonitorNamespaceSelector: {} and the like, lines 4441, 4489, 4511: an empty selector
# means all namespaces). Our monitors carry that label instead of the stack widening its selectors, so they
# work with a kube-prometheus-stack someone else installed, too.
PROMETHEUS_RELEASE_LABEL = "release"
# The Prometheus operator's CRDs that the stack's monitoring objects are made of.
PROMETHEUS_OPERATOR_CRDS = ("podmonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com",
                            "servicemonitors.monitoring.coreos.com")
