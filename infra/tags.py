"""Tag and label conventions shared by every component and checked by the policy pack.

AWS tags use `wojak:<key>`; GCP and Kubernetes labels allow no colon, so they use `wojak-<key>`.
"""

from __future__ import annotations

ROLE_DATA = "couchbase-data"
ROLE_QUERY = "couchbase-query"
ROLE_APP = "app"
ROLES = (ROLE_DATA, ROLE_QUERY, ROLE_APP)

ON_DEMAND = "on-demand"
SPOT = "spot"

# The placement rule of the whole platform, in one place: data is never on spot, the rest always is.
LIFECYCLE_BY_ROLE = {ROLE_DATA: ON_DEMAND, ROLE_QUERY: SPOT, ROLE_APP: SPOT}

REQUIRED_KEYS = ("stack", "role", "lifecycle")


def aws_tags(stack: str, role: str, name: str, **extra: str) -> dict[str, str]:
    tags = {
        "Name": name,
        "wojak:stack": stack,
        "wojak:role": role,
        "wojak:lifecycle": LIFECYCLE_BY_ROLE[role],
    }
    tags.update({f"wojak:{k}": v for k, v in extra.items()})
    return tags


def gcp_labels(stack: str, role: str, **extra: str) -> dict[str, str]:
    labels = {
        "wojak-stack": stack,
        "wojak-role": role,
        "wojak-lifecycle": LIFECYCLE_BY_ROLE[role],
    }
    labels.update({f"wojak-{k}": v for k, v in extra.items()})
    return labels


def base_aws_tags(stack: str, name: str) -> dict[str, str]:
    """For non-compute resources: who owns it, without a role."""
    return {"Name": name, "wojak:stack": stack}
