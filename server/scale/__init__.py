"""Scale-out on Ray Serve (optional extra ``.[scale]``): the same FastAPI app in N replicas, each with its own
model, behind a thin ingress that pins every video session and image id to the replica holding it.

- :mod:`server.scale.affinity`: which replica a request must reach (the routing key, the pin table).
- :mod:`server.scale.router`: the custom Ray Serve ``RequestRouter`` that enforces it.
- :mod:`server.scale.replica`: the model deployment (``serve.ingress(create_app)`` plus a forwarding method).
- :mod:`server.scale.ingress`: the HTTP entry deployment (reads the key, forwards, streams the answer back).
- :mod:`server.scale.app`: the application builder that ``serve run`` / ``serve deploy`` import.

Nothing here is imported by the single-process service (``./run_sam.sh``).
"""
