"""Cluster add-ons the workload needs: the NVIDIA device plugin and the KubeRay operator."""
