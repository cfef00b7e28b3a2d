"""Per-cloud networks: address space, subnets across zones, and the firewall rules."""

import ipaddress


def split(cidr: str, count: int, new_prefix: int = 20) -> list[str]:
    """The first `count` subnets of `cidr`, sized /new_prefix (a /16 gives sixteen /20s)."""
    subnets = ipaddress.ip_network(cidr).subnets(new_prefix=new_prefix)
    return [str(next(subnets)) for _ in range(count)]


# RFC 1918 and IPv6 unique-local only. `ipaddress.is_private` would also accept documentation and
# reserved ranges (e.g. 203.0.113.0/24), which are not ours to call private.
PRIVATE_RANGES = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8")
)


def is_private_range(cidr: str) -> bool:
    net = ipaddress.ip_network(cidr, strict=False)
    return any(net.version == p.version and net.subnet_of(p) for p in PRIVATE_RANGES)
