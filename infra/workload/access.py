"""How a person reaches the endpoint after `pulumi up`: the exact commands, as data (no Pulumi import).

The endpoint is a ClusterIP Service that KubeRay creates from the RayService's serveService
(network.serve_service), so from outside the cluster the way in is `kubectl port-forward`: it reaches
the pod through the API server and the kubelet, so it needs no Ingress or load balancer. The Serve app
checks the key on every /v1 path (images/vllm/qwen2vl_serve/app.py), sent as `Authorization: Bearer`.
The program exports these commands (outputs.ACCESS), the offline plan prints them, docs/endpoint.md
explains them.
"""

from __future__ import annotations

import json

from infra import outputs
from infra.workload.spec import SERVE_PORT, WorkloadSpec

# The keys of the ACCESS output; ORDER is the order a person runs them in.
KUBECONFIG = "kubeconfig"
PORT_FORWARD = "portForward"
API_KEY = "apiKey"
CURL = "curl"
OPENAI = "openai"
SMOKE = "smoke"
ORDER = (KUBECONFIG, PORT_FORWARD, API_KEY, CURL, OPENAI, SMOKE)
# The OpenAI client reads its key from this variable; curl and the smoke script read the same one.
API_KEY_ENV = "OPENAI_API_KEY"


def local_base_url(port: int = SERVE_PORT) -> str:
    return f"http://127.0.0.1:{port}"


def access_commands(spec: WorkloadSpec) -> dict[str, str]:
    cfg = spec.cfg
    stack = f"--stack {cfg.stack}"
    if cfg.cloud == "existing":
        context = cfg.kube_context
        kubeconfig = (f"kubectl config use-context {context}" if context else
                      "kubectl config current-context  # the stack deployed to the context that was current")
    else:
        kubeconfig = (f"pulumi stack output {outputs.KUBECONFIG} --show-secrets {stack} > kubeconfig-{cfg.stack}.yaml"
                      f" && export KUBECONFIG=$PWD/kubeconfig-{cfg.stack}.yaml")
    base = local_base_url()
    chat = json.dumps({"model": cfg.served_model_name, "max_tokens": 32,
                       "messages": [{"role": "user", "content": "Say hello in five words."}]})
    openai = ("python -c \"from openai import OpenAI; client = OpenAI(base_url='" + base + "/v1'); "
              f"print(client.chat.completions.create(model='{cfg.served_model_name}', max_tokens=32, "
              "messages=[{'role': 'user', 'content': 'Say hello in five words.'}]).choices[0].message.content)\"")
    return {
        KUBECONFIG: kubeconfig,
        # Leave it running in its own terminal; the Service's port is the head's serve port.
        PORT_FORWARD: (f"kubectl -n {spec.namespace} port-forward service/{spec.endpoint_service} "
                       f"{SERVE_PORT}:{SERVE_PORT}"),
        API_KEY: f"export {API_KEY_ENV}=\"$(pulumi stack output {outputs.API_KEY} --show-secrets {stack})\"",
        CURL: (f"curl -sS {base}/v1/chat/completions -H \"Authorization: Bearer ${API_KEY_ENV}\" "
               f"-H 'Content-Type: application/json' -d '{chat}'"),
        OPENAI: openai,
        SMOKE: f"python scripts/smoke.py --base-url {base} --model {cfg.served_model_name} --api-key-env {API_KEY_ENV}",
    }
