"""The guardrails as a Pulumi policy pack: `pulumi preview --policy-pack infra/policy` (and `up`).

The engine starts this directory as `python -u -m pulumi.policy <engine> infra/policy` and talks to the port
it prints (pulumi-language-python RunPlugin, pulumi v3.259.0 sdk/python/cmd/pulumi-language-python/main.go
lines 1612-1639). The checks get the pack's own property proxy, never a copy, so that a check reads only
the fields it needs and one unknown elsewhere cannot switch it off during preview (infra/policy/policies.py).
"""

from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy, StackValidationPolicy

from infra.policy.policies import RESOURCE_POLICIES, STACK_POLICIES, Resource


def _resource(args) -> Resource:
    return Resource(args.resource_type, args.props, args.urn, args.name)


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
        *(_stack_policy(name, check) for name, check in STACK_POLICIES.items()),
    ],
)
