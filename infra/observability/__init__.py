"""What operators see and are told: the metric names we rely on, alert rules and the Grafana dashboard,
all built as data from one definition (no Pulumi import)."""
