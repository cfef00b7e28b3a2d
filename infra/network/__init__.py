"""Per-cloud networks: address space, subnets across zones, and the firewall rules."""

import ipaddress


def split(cidr: str, count: int, new_prefix: int = 20) -> list[str]:
    """The first `count` subnets of `cidr`, sized /new_prefix (a /16 gives sixteen /20s)."""
    subnets = ipaddress.ip_network(cidr).subnets(new_prefix=new_prefix)
    return [str(next(subnets)) for _ in range(count)]
