"""The serving image as Pulumi resources: built from images/vllm with the pinned versions and pushed to
the stack's registry (ECR, Artifact Registry, or the registry in config). Cloud SDKs load only for the
stack's cloud.

Two docker-build resources: the first builds into the builder's cache (nothing pushed, so no registry token
has to outlive the build), the second repeats the same build from that cache and pushes, with a registry
token minted only after the first is done. A GCP access token lasts an hour
(https://cloud.google.com/docs/authentication/token-types#access-tokens) and docker-build holds registry
credentials as given, without refreshing them (pulumi-docker-build v0.0.22 provider/internal/host.go: the
host's credentials are read once, at start); a first build of this image can take longer than that. Both
read, and the second writes, a registry build cache (`:buildcache`, mode max: every stage's layers), so a
later build on another machine reuses the CUDA and vLLM layers instead of rebuilding them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pulumi

from infra.config import StackConfig
from infra.image_build import BUILD_CACHE_TAG, DOCKERFILE, IMAGE_NAME, REPO_ROOT, build_args, content_tag

# (resources that must exist first) -> registry credentials for docker-build, minted after them.
Credentials = Callable[[Sequence[pulumi.Resource]], dict]


def _registry(cfg: StackConfig, cloud_provider: pulumi.ProviderResource | None, parent: pulumi.Resource,
              after: Sequence[pulumi.Resource]) -> tuple[pulumi.Output[str], Credentials | None]:
    """(repository address, a function minting registry credentials for docker-build, or None: the host's login)."""
    opts = pulumi.ResourceOptions(parent=parent, provider=cloud_provider, protect=cfg.protect, depends_on=list(after))

    def invoke(first: Sequence[pulumi.Resource]) -> pulumi.InvokeOutputOptions:
        return pulumi.InvokeOutputOptions(parent=parent, provider=cloud_provider, depends_on=list(first))

    if cfg.cloud == "aws":
        import pulumi_aws as aws

        # Content tags never move; the build cache's tag is rewritten by every build.
        repo = aws.ecr.Repository(IMAGE_NAME, image_tag_mutability="IMMUTABLE_WITH_EXCLUSION",
                                  image_tag_mutability_exclusion_filters=[
                                      {"filter": BUILD_CACHE_TAG, "filter_type": "WILDCARD"}],
                                  force_delete=not cfg.protect,
                                  image_scanning_configuration={"scan_on_push": True}, opts=opts)

        def ecr_login(first: Sequence[pulumi.Resource]) -> dict:
            token = aws.ecr.get_authorization_token_output(registry_id=repo.registry_id, opts=invoke(first))
            return {"address": repo.repository_url, "username": token.user_name,
                    "password": pulumi.Output.secret(token.password)}

        return repo.repository_url, ecr_login
    if cfg.cloud == "gcp":
        import pulumi_gcp as gcp

        from infra.clusters.gcp import project_unique_name

        # Named per stack: two stacks of one project and region would otherwise claim the same repository.
        repo = gcp.artifactregistry.Repository(IMAGE_NAME, repository_id=project_unique_name(IMAGE_NAME, cfg.stack),
                                               format="DOCKER",
                                               location=cfg.region, opts=opts)
        address = pulumi.Output.concat(cfg.region, "-docker.pkg.dev/", repo.project, "/", repo.repository_id)

        def artifact_registry_login(first: Sequence[pulumi.Resource]) -> dict:
            client = gcp.organizations.get_client_config_output(opts=invoke(first))
            return {"address": f"{cfg.region}-docker.pkg.dev", "username": "oauth2accesstoken",
                    "password": pulumi.Output.secret(client.access_token)}

        return pulumi.Output.concat(address, "/", IMAGE_NAME), artifact_registry_login
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
        cache_ref = pulumi.Output.concat(repository, ":", BUILD_CACHE_TAG)
        secrets = {"hf_token": hub_token} if cfg.bake_model and hub_token is not None else None
        # The same build definition for both resources, so the second is a cache hit.
        build = {
            "tags": [pulumi.Output.concat(repository, ":", content_tag(cfg, model_dir))],
            "context": {"location": str(REPO_ROOT)},
            "dockerfile": {"location": str(DOCKERFILE)},
            "build_args": build_args(cfg, model_dir),
            "platforms": ["linux/amd64"],
            "cache_from": [{"registry": {"ref": cache_ref}}],
            # A preview must not spend minutes building a GPU image; `pulumi up` builds and pushes.
            "build_on_preview": False,
            "secrets": secrets,
        }
        self.build = docker_build.Image(
            f"{IMAGE_NAME}-build", push=False, registries=[credentials(())] if credentials else None, **build,
            opts=pulumi.ResourceOptions(parent=self))
        self.image = docker_build.Image(
            IMAGE_NAME, push=True, registries=[credentials([self.build])] if credentials else None,
            # "Some registries like AWS ECR will not work with caching" without an OCI image manifest
            # (pulumi-docker-build v0.0.22 CacheToRegistry imageManifest); Artifact Registry takes it as well.
            cache_to=[{"registry": {"ref": cache_ref, "mode": "max", "image_manifest": True,
                                    "oci_media_types": True}}],
            **build, opts=pulumi.ResourceOptions(parent=self, depends_on=[self.build]))
        self.ref = self.image.ref
        self.register_outputs({"ref": self.ref})
