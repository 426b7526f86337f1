"""deploy/serve.yaml is a valid Ray Serve config whose application and deployments exist in the code."""

from __future__ import annotations

import importlib

import pytest
import yaml

pytest.importorskip("ray.serve", reason="the scale extra is not installed (pip install -e '.[scale]')")

from ray.serve import Application  # noqa: E402
from ray.serve.schema import ServeDeploySchema  # noqa: E402

from tests.scale.cluster import REPO  # noqa: E402


def test_the_config_file_validates_and_names_the_code():
    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "deploy" / "serve.yaml").read_text()))
    (app,) = config.applications
    module, attr = app.import_path.split(":")
    assert isinstance(getattr(importlib.import_module(module), attr), Application)
    names = {d.name for d in app.deployments}
    assert names == {"SamIngress", "SamReplica"}
    replica = next(d for d in app.deployments if d.name == "SamReplica")
    autoscaling = replica.autoscaling_config
    assert autoscaling["min_replicas"] <= autoscaling["initial_replicas"] <= autoscaling["max_replicas"]
    assert config.http_options.host == "127.0.0.1" and config.http_options.port == 8001
