"""The guardrails as a Pulumi policy pack: `pulumi preview --policy-pack infra/policy`."""

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ResourceValidationPolicy,
    Secret,
    StackValidationPolicy,
)

from infra.policy.policies import RESOURCE_POLICIES, STACK_POLICIES, Resource, secrets_are_secret


def _resource(args) -> Resource:
    return Resource(args.resource_type, dict(args.props), args.urn, args.name)


def _resource_policy(name, check):
    return ResourceValidationPolicy(name=name, description=check.__doc__ or name,
                                    validate=lambda args, report: check(_resource(args), report))


def _stack_policy(name, check):
    def validate(args, report):
        resources = [_resource(r) for r in args.resources]
        stack = resources[0].stack if resources else ""
        check(resources, stack, report)

    return StackValidationPolicy(name=name, description=check.__doc__ or name, validate=validate)


PolicyPack(
    name="qwen2vl-guardrails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        *(_resource_policy(name, check) for name, check in RESOURCE_POLICIES.items()),
        ResourceValidationPolicy(
            name="secrets-are-secret", description="Secret values come from Pulumi secrets",
            validate=lambda args, report: secrets_are_secret(_resource(args), report,
                                                             lambda v: isinstance(v, Secret)),
        ),
        *(_stack_policy(name, check) for name, check in STACK_POLICIES.items()),
    ],
)
