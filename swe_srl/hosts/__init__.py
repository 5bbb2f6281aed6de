"""Episodes over many Docker hosts, on Ray: one long-lived actor per Docker engine (the
``ray`` episode runner, :class:`swe_srl.runner.RayRunner`, runs episodes through it).

    driver (policy, agent loops in threads) --Ray--> HostWorker actor on each Docker host
                                                       owns that engine's client, its images,
                                                       its containers and their reaper

The two halves live apart:

    actor.py   the ACTOR side: :class:`HostWorker`, what runs inside the Ray actor on a Docker
               host (sandboxes, image builds and holds, grading, the reaper of its containers)
    pool.py    the DRIVER side: :class:`HostPool` (starting/joining Ray, placing one actor per
               host, leasing episode slots, dropping dead hosts), :class:`HostHandle` (the
               driver's view of one host) and :class:`RemoteSandbox` (a sandbox on a host actor)
    config.py  :class:`HostsConfig` (the ``hosts`` settings) and ``RESOURCE_PREFIX`` (a host's Ray
               resource name), which the driver side reads

The agent loop stays in the driver, next to the policy (one batched generation service, no
model copy per host); each episode holds a slot on one host actor and sends it the sandbox
operations (:class:`RemoteSandbox`), then asks it to grade the patch in a fresh container on
the same engine. Containers never need network access, and engines are reached only through
their local socket by the actor on the same machine (or over SSH / TLS, as the user's
``docker`` URL says). Never expose an unauthenticated TCP Docker socket.

Scheduling: host ``name`` is a Ray custom resource ``swe_srl_host:<name>``; on a cluster, each
Docker machine joins with ``ray start --address=HEAD --resources='{"swe_srl_host:<name>": 1}'``.
With no cluster address a local Ray instance is started holding every host's resource (all
engines reachable from this machine).

Faults: an engine that stops answering turns the episodes running on it into infrastructure
failures (masked, counted), the host leaves the pool, and the rest finish on the other hosts.
Each episode has a wall-clock budget from container create to teardown: a host call that
does not return within it is the host's failure (infrastructure); the agent's own time limit
(the model's) is capped to the budget.
"""

from __future__ import annotations

from .actor import HostWorker
from .config import RESOURCE_PREFIX, HostsConfig
from .pool import HostHandle, HostPool, RemoteSandbox

__all__ = ["RESOURCE_PREFIX", "HostHandle", "HostPool", "HostWorker", "HostsConfig", "RemoteSandbox"]
