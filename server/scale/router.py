"""The Ray Serve request router of the model deployment: hard session/image affinity, load for the rest.

Ray Serve routes a ``DeploymentHandle`` call through a ``RequestRouter`` that runs in the caller's process
(here: the ingress replica). :class:`AffinityRouter` reads the :class:`~server.scale.affinity.Route` the
ingress passes as the ``route`` keyword argument:

- pinned (a known session or image id): only the replica holding it. While that replica's queue is full the
  request waits for it (the engine's back-off), it never goes elsewhere. When the replica is no longer
  running, any replica takes the request and answers 410 (the session is not its own), so nothing waits for
  a replica that will not return;
- a new session (``/track/start``): the replicas holding the fewest sessions first, then the least queued;
- anything else (image uploads, health, pages): the engine's "power of two choices" by queue length.

Why not model multiplexing: its routing is best effort (after a short timeout a request goes to any replica,
and a replica learns its model ids only through the controller, seconds later), and its LRU eviction would
close sessions. A custom router makes affinity a rule, not a preference. Whenever the running set changes
the router tells the shared :data:`~server.scale.affinity.TABLE`, so the sessions of a vanished replica answer
410 at once.

Ray Serve pickles this module by value into the caller's process: it keeps no state of its own (the table
lives in :mod:`server.scale.affinity`, imported there).
"""

from __future__ import annotations

import logging
import random

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from server.scale import affinity


class AffinityRouter(RequestRouter):
    """Routes by the ``route`` keyword argument of the call (see the module docstring)."""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        if pending_request is not None:
            # every choice here is final for this round: when no replica accepts (queue full, a queue-length
            # probe late on a busy machine), the engine waits before asking again instead of probing in a loop
            pending_request.routing_context.should_backoff = True
        route = pending_request.kwargs.get("route") if pending_request is not None else None
        if isinstance(route, affinity.Route) and route.replica is not None:
            for replica in candidate_replicas:
                if replica.replica_id.unique_id == route.replica:
                    return [[replica]]
        if isinstance(route, affinity.Route) and route.kind == "start":
            return self._fewest_sessions_first(candidate_replicas)
        if len(candidate_replicas) <= 2:
            return [random.sample(candidate_replicas, len(candidate_replicas))]
        return [random.sample(candidate_replicas, 2)]

    @staticmethod
    def _fewest_sessions_first(candidates: list[RunningReplica]) -> list[list[RunningReplica]]:
        """Ranks of replicas by the number of sessions they hold (fewest first); each rank goes to the least
        queued of its members, the next rank only when all of them are full."""
        counts = affinity.TABLE.sessions_per_replica()
        ranks: dict[int, list[RunningReplica]] = {}
        for replica in random.sample(candidates, len(candidates)):
            ranks.setdefault(counts.get(replica.replica_id.unique_id, 0), []).append(replica)
        return [ranks[n] for n in sorted(ranks)]

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        lost = affinity.TABLE.replicas_running({r.replica_id.unique_id for r in replicas})
        if lost:
            logging.getLogger("sam3.server").warning(
                "replica gone: %d session(s) lost with it (they answer 410)", len(lost)
            )

    def on_replica_actor_died(self, replica_id) -> None:
        super().on_replica_actor_died(replica_id)
        lost = affinity.TABLE.replica_gone(replica_id.unique_id)
        if lost:
            logging.getLogger("sam3.server").warning(
                "replica %s died: %d session(s) lost with it", replica_id.unique_id, len(lost)
            )
