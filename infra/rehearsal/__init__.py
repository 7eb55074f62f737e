"""The rehearsal: the rendered RayService's head and worker, its Serve application and the smoke Job run
for real on one CPU machine, each container in a sandbox built from its own manifest.

Pure parts (no process is started by them): manifests (what the pods are), kuberay (what the operator
adds to them), image (what the serving image provides), substitutions (the CPU machine's list),
write_paths (where vLLM 0.6.3.post1 writes on paths the CPU run cannot reach), sandbox (bwrap's command
line). The impure shell: network, kube_api, run.
"""
