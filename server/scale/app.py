"""The Ray Serve application: ``SamIngress`` (HTTP entry, affinity) in front of ``SamReplica`` (the models).

    serve run deploy/serve.yaml                   # a local Ray instance, the config's replicas
    serve run server.scale.app:app                # the same with the code's defaults (one replica)

Replica counts, autoscaling and resources per replica are deployment options: the code sets defaults, the
config file (``deploy/serve.yaml``, section ``deployments``) or :func:`build`'s arguments override them.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from server.scale.ingress import SamIngress
from server.scale.replica import SamReplica


def build(args: dict[str, Any] | None = None) -> Application:
    """The application, with optional ``SamReplica`` options (``num_replicas``, ``autoscaling_config``,
    ``ray_actor_options`` ...) under ``args["replica"]``: ``serve run``'s application builder."""
    replica_options = dict((args or {}).get("replica") or {})
    replica = SamReplica.options(**replica_options) if replica_options else SamReplica
    return SamIngress.bind(replica.bind())


app = build()
