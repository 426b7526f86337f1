"""The model deployment: one replica = one process with its own model, running the unchanged FastAPI app.

Each replica builds ``server.main:create_app()`` (settings from the environment, as the single-process service
reads them) and runs its lifespan (model load, session sweep, close on shutdown) as uvicorn would. (Ray Serve
allows one ``serve.ingress`` deployment per application: that is the ingress; the app here is driven through
its ASGI interface.) The ingress calls :meth:`SamReplica.forward` through a
``DeploymentHandle`` with the client's request; the answer streams back message by message (a streamed
propagation line by line), stamped with ``X-Replica``. Routing between replicas is
:class:`server.scale.router.AffinityRouter`'s.

Resources per replica (``num_cpus``, ``num_gpus``: 1, or a fraction such as 0.5 for two replicas per GPU),
replica counts and autoscaling come from the deployment options (``deploy/serve.yaml``); Ray sets
``CUDA_VISIBLE_DEVICES`` for a replica given a GPU, and ``SAM3_DEVICE`` (auto) picks it up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from ray import serve
from ray.serve.config import RequestRouterConfig

from server.scale.affinity import Route
from server.scale.router import AffinityRouter
from server.scale.edge import (
    REPLICA_KEY,
    Lifespan,
    error_app,
    lost_session_detail,
    replica_name,
    run_asgi,
    stamp_replica,
)

log = logging.getLogger("sam3.server")

# Requests one replica takes at once: the app has its own queue (SAM_MAX_QUEUE, 429 beyond) and every open
# stream counts as one, so this is set well above what the model serves at a time.
MAX_ONGOING_REQUESTS = 64


def build_app():
    """The service's FastAPI app, built in the replica's process (settings from its environment)."""
    from server.main import create_app

    return create_app()


@serve.deployment(
    name="SamReplica",
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
    ray_actor_options={"num_cpus": 1},
    request_router_config=RequestRouterConfig(request_router_class=AffinityRouter),
    health_check_period_s=2.0,
    health_check_timeout_s=30.0,
    graceful_shutdown_timeout_s=30.0,
)
class SamReplica:
    """One replica of the service (see the module docstring)."""

    async def __init__(self) -> None:
        replica_id = serve.get_replica_context().replica_id
        self.unique_id = replica_id.unique_id
        self.name = replica_name(replica_id.deployment_id.name, self.unique_id)
        self.app = build_app()
        self.lifespan = Lifespan(self.app)
        await self.lifespan.start()  # the model loads here (SAM3_LOAD_IN_BACKGROUND=false: ready = loaded)

    async def forward(self, scope: dict, body: bytes, route: Route | None = None) -> AsyncIterator[dict]:
        """Serve one HTTP request (``scope`` without the server's objects, the whole body) and yield the ASGI
        messages of the answer. A session request meant for another replica (which is gone) answers 410."""
        app = self.app
        if route is not None and route.session_id is not None and route.replica not in (None, self.unique_id):
            settings = app.state.settings
            app = error_app(settings, 410, lost_session_detail(route.session_id, route.replica))
        async for message in run_asgi(app, scope, body):
            if message["type"] == "http.response.start":
                stamp_replica(message, self.name)
                message[REPLICA_KEY] = self.unique_id
            yield message

    def holds(self, session_id: str, route: Route | None = None) -> str | None:
        """This replica's unique id when it holds the session, else None (the ingress asks every replica when
        its pin table does not know a session: after the ingress restarted, or with several ingresses)."""
        tracking = getattr(self.app.state, "tracking", None)
        return self.unique_id if tracking is not None and session_id in tracking.sessions else None

    def check_health(self) -> None:
        """Ray Serve's liveness probe: the app's lifespan runs (a model that failed to load is reported on
        ``/health``, as in the single-process service, not by restarting the replica)."""
        if not self.lifespan.running:
            raise RuntimeError("the app's lifespan has ended")

    async def __del__(self) -> None:
        """Graceful stop (scale-down, redeploy): close every session as the single-process service does."""
        await self.lifespan.stop()
