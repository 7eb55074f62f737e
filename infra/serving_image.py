"""The serving image as Pulumi resources: built from images/vllm with the pinned versions and pushed to
the stack's registry (ECR, Artifact Registry, or the registry in config). Cloud SDKs load only for the
stack's cloud."""

from __future__ import annotations

from typing import Sequence

import pulumi

from infra.config import StackConfig
from infra.image_build import DOCKERFILE, IMAGE_NAME, REPO_ROOT, build_args, content_tag


def _registry(cfg: StackConfig, cloud_provider: pulumi.ProviderResource | None, parent: pulumi.Resource,
              after: Sequence[pulumi.Resource]):
    """(repository address, registry credentials for docker-build or None)."""
    opts = pulumi.ResourceOptions(parent=parent, provider=cloud_provider, protect=cfg.protect, depends_on=list(after))
    if cfg.cloud == "aws":
        import pulumi_aws as aws

        repo = aws.ecr.Repository(IMAGE_NAME, image_tag_mutability="IMMUTABLE", force_delete=not cfg.protect,
                                  image_scanning_configuration={"scan_on_push": True}, opts=opts)
        token = aws.ecr.get_authorization_token_output(
            registry_id=repo.registry_id, opts=pulumi.InvokeOutputOptions(parent=parent, provider=cloud_provider))
        return repo.repository_url, {"address": repo.repository_url, "username": token.user_name,
                                     "password": pulumi.Output.secret(token.password)}
    if cfg.cloud == "gcp":
        import pulumi_gcp as gcp

        from infra.clusters.gcp import project_unique_name

        # Named per stack: two stacks of one project and region would otherwise claim the same repository.
        repo = gcp.artifactregistry.Repository(IMAGE_NAME, repository_id=project_unique_name(IMAGE_NAME, cfg.stack),
                                               format="DOCKER",
                                               location=cfg.region, opts=opts)
        client = gcp.organizations.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=parent, provider=cloud_provider))
        address = pulumi.Output.concat(cfg.region, "-docker.pkg.dev/", repo.project, "/", repo.repository_id)
        return (pulumi.Output.concat(address, "/", IMAGE_NAME),
                {"address": f"{cfg.region}-docker.pkg.dev", "username": "oauth2accesstoken",
                 "password": pulumi.Output.secret(client.access_token)})
    # An existing cluster pulls from the registry in config; pushing uses the machine's docker login.
    return pulumi.Output.from_input(f"{cfg.registry}/{IMAGE_NAME}"), None


class ServingImage(pulumi.ComponentResource):
    """Builds and pushes the image; `ref` is `repository:tag@sha256:digest`."""

    def __init__(self, name: str, cfg: StackConfig, model_dir: str, hub_token: pulumi.Output[str] | None,
                 cloud_provider: pulumi.ProviderResource | None, after: Sequence[pulumi.Resource] = (),
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("qwen2vl:image:ServingImage", name, None, opts)
        import pulumi_docker_build as docker_build

        repository, credentials = _registry(cfg, cloud_provider, self, after)
        tag = content_tag(cfg, model_dir)
        secrets = {"hf_token": hub_token} if cfg.bake_model and hub_token is not None else None
        self.image = docker_build.Image(
            IMAGE_NAME,
            tags=[pulumi.Output.concat(repository, ":", tag)],
            context={"location": str(REPO_ROOT)},
            dockerfile={"location": str(DOCKERFILE)},
            build_args=build_args(cfg, model_dir),
            platforms=["linux/amd64"],
            push=True,
            # A preview must not spend minutes building a GPU image; `pulumi up` builds and pushes.
            build_on_preview=False,
            registries=[credentials] if credentials else None,
            secrets=secrets,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.ref = self.image.ref
        self.register_outputs({"ref": self.ref})
