"""Balancing methods, one module each, registered by the name ``UpstreamSpec.method`` uses.

Every method makes the choice nginx makes from the same state; each module names the
nginx source file it follows.
"""

from __future__ import annotations

from nonstop.config.vocabulary import BACKUP_METHODS
from nonstop.proxy.balancers.balancer import Balancer, BalancerFactory, RandomSource
from nonstop.proxy.balancers.hash import ConsistentHash, Hash, make_hash
from nonstop.proxy.balancers.ip_hash import IpHash
from nonstop.proxy.balancers.least_conn import LeastConn
from nonstop.proxy.balancers.peers import Attempt, Peer, PeerSet, usable
from nonstop.proxy.balancers.random import Random, RandomTwo, make_random
from nonstop.proxy.balancers.round_robin import RoundRobin, pick_round_robin

__all__ = [
    "BACKUP_METHODS",
    "BALANCERS",
    "Attempt",
    "Balancer",
    "BalancerFactory",
    "ConsistentHash",
    "Hash",
    "IpHash",
    "LeastConn",
    "Peer",
    "PeerSet",
    "Random",
    "RandomSource",
    "RandomTwo",
    "RoundRobin",
    "pick_round_robin",
    "usable",
]

# one per name in nonstop.config.vocabulary.METHODS (a unit test holds them equal)
BALANCERS: dict[str, BalancerFactory] = {
    "round_robin": RoundRobin,
    "least_conn": LeastConn,
    "ip_hash": IpHash,
    "hash": make_hash,
    "random": make_random,
}
