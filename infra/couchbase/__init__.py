"""Couchbase on VMs: per-cloud clusters, the node bootstrap script and cross-cloud XDCR."""

# Couchbase ports (7.x). Opened only between cluster members, app nodes and the peer cloud's
# cluster; the policy pack refuses them from any public range.
CLIENT_PORTS = ((8091, 8097), (9123, 9123), (11207, 11207), (11210, 11211), (18091, 18097))
CLUSTER_PORTS = (
    (4369, 4369),
    (8091, 8097),
    (9100, 9105),
    (9110, 9118),
    (9120, 9124),
    (9130, 9130),
    (9140, 9140),
    (9999, 9999),
    (11207, 11211),
    (11280, 11280),
    (18091, 18097),
    (21100, 21100),
    (21150, 21150),
)
# XDCR: the source cluster's nodes talk to the target's management and data ports
XDCR_PORTS = ((8091, 8092), (11207, 11207), (11210, 11210), (18091, 18092))
ADMIN_PORT = 8091
