"""Policy pack entry: `pulumi preview --policy-pack infra/policy`. Every rule is MANDATORY."""

import os
import sys

try:
    import infra  # noqa: F401
except ImportError:
    # run by the policy host from infra/policy/: make the repo's `infra` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pulumi_policy import (  # noqa: E402
    EnforcementLevel,
    PolicyPack,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

from infra.policy import rules  # noqa: E402

PolicyPack(
    name="wojak-invariants",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(name=name, description=rules.DESCRIPTIONS[name], validate=fn)
        for name, fn in rules.RESOURCE_RULES.items()
    ]
    + [
        StackValidationPolicy(name=name, description=rules.DESCRIPTIONS[name], validate=fn)
        for name, fn in rules.STACK_RULES.items()
    ],
)
