"""A local Ray instance serving the Ray Serve application on a free 127.0.0.1 port, for tests and benches.

The tiny preset with random weights on CPU, one thread per replica (the test machine's cores are shared);
Ray and Serve are started here and stopped when the context ends. Worker processes import this checkout
(``PYTHONPATH``), whatever the virtual environment's editable install points at.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.clients.conftest import REPO, free_port

__all__ = ["REPO", "ServeCluster", "serve_cluster", "tiny_env", "wait_healthy"]


@dataclass
class ServeCluster:
    url: str
    media: Path
    app_name: str

    temp_dir: str = ""
    actor_options: dict | None = None

    def deploy(self, replicas: int) -> None:
        """Deploy (or redeploy) the application with ``replicas`` model replicas; returns when it runs."""
        from ray import serve

        from server.scale.app import build

        options = {"num_replicas": replicas, "ray_actor_options": self.actor_options or {"num_cpus": 1}}
        try:
            serve.run(build({"replica": options}), name=self.app_name, route_prefix="/")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{replica_errors(self.temp_dir)}") from None

    def kill_replica(self, name: str) -> None:
        """Kill the replica named ``name`` (``Deployment#id``, as in ``X-Replica``) as a crash would."""
        import ray

        deployment, unique_id = name.split("#")
        actor = ray.get_actor(f"SERVE_REPLICA::{self.app_name}#{deployment}#{unique_id}", namespace="serve")
        ray.kill(actor, no_restart=True)

    def replicas(self, deployment: str) -> list[str]:
        """The names (``Deployment#id``) of the deployment's replica actors alive now."""
        import ray

        prefix = f"SERVE_REPLICA::{self.app_name}#{deployment}#"
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        return [f"{deployment}#{n[len(prefix) :]}" for n in names if n.startswith(prefix)]


def tiny_env(media: Path, **extra: str) -> dict[str, str]:
    return {
        "SAM3_PRESET": "tiny",
        "SAM3_RANDOM_WEIGHTS": "true",
        "SAM3_DEVICE": "cpu",
        "SAM3_AUTO_DOWNLOAD": "false",
        "SAM3_WARMUP": "false",
        "SAM3_NUM_THREADS": "1",
        "SAM3_LOAD_IN_BACKGROUND": "false",  # a replica is ready when its model is
        "SAM_MEDIA_ROOTS": str(media),
        "SAM_MAX_SESSIONS": "4",
        **extra,
    }


@contextlib.contextmanager
def serve_cluster(
    media: Path, replicas: int = 2, env: dict[str, str] | None = None, actor_options: dict | None = None
) -> Iterator[ServeCluster]:
    """Start Ray, Serve and the application (``replicas`` model replicas, each with ``actor_options``, by default
    one CPU); stop everything afterwards. ``env`` overrides the tiny CPU settings."""
    import ray
    from ray import serve

    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    service_env = {**tiny_env(media), **(env or {})}
    process_env = {
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_SERVE_LOG_TO_STDERR": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        **service_env,
    }
    saved = dict(os.environ)
    os.environ.update(process_env)  # inherited by the raylet, hence by every worker process
    try:
        ray.init(
            num_cpus=max(4, replicas + 2),  # logical slots, not cores
            include_dashboard=False,
            object_store_memory=100 * 1024 * 1024,
            _temp_dir=temp_dir,
            logging_level="WARNING",
            log_to_driver=False,
            namespace="sam3-tests",
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    app_name = "sam3"
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        cluster = ServeCluster(f"http://127.0.0.1:{port}", media, app_name, temp_dir, actor_options)
        cluster.deploy(replicas)
        wait_healthy(cluster.url, timeout_s=120)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        if os.environ.get("SAM3_TEST_RAY_LOGS"):  # a folder to keep Ray's logs in (debugging)
            shutil.copytree(
                Path(temp_dir) / "session_latest" / "logs", os.environ["SAM3_TEST_RAY_LOGS"], dirs_exist_ok=True
            )
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_healthy(url: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{url}/health", timeout=5)
            last = answer.status_code
            if answer.status_code == 200 and answer.json().get("model_loaded"):
                return answer.json()
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{url}/health did not report a loaded model within {timeout_s} s (last: {last!r})")


def replica_errors(temp_dir: str, lines: int = 60) -> str:
    """The last traceback lines of the Serve logs (to say why a deployment failed)."""
    out = []
    for log in sorted(Path(temp_dir).glob("session_*/logs/**/*.log")) + sorted(
        Path(temp_dir).glob("session_*/logs/**/*.err")
    ):
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            out.append(f"--- {log.name}\n" + "\n".join(text[text.index("Traceback") :].splitlines()[:lines]))
    return "\n".join(out[-4:]) or "(no traceback in the Ray logs)"
