"""The transport flags of `iflearner-operator run` and the settings file's transport."""

from __future__ import annotations

import argparse

import pytest

from iflearner.controller.informers import GATEWAY_RESOURCES, OWNED_RESOURCES, served_owned_resources
from iflearner.controller.options import add_run_arguments, options_from_args
from iflearner.settings import parse_cluster_settings


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return options_from_args(parser.parse_args(list(argv)))


def test_transport_defaults_to_ingress_and_flags_override(tmp_path):
    assert parse().settings.transport == "ingress"
    settings = parse("--transport", "gateway", "--gateway-class", "other", "--gateway-listener-port", "443").settings
    assert (settings.transport, settings.gateway_class_name, settings.gateway_listener_port) == ("gateway", "other",
                                                                                                  443)
    recorded = tmp_path / "settings.yaml"
    recorded.write_text("transport: gateway\ngatewayClassName: iflearner\n")
    assert parse("--cluster-settings", str(recorded)).settings.transport == "gateway"


def test_unknown_transport_flag_is_refused():
    with pytest.raises(SystemExit):
        parse("--transport", "nginx")
    with pytest.raises(ValueError, match="transport"):
        parse_cluster_settings("transport: nginx\n", "test")


class FakeApi:
    def __init__(self, served: dict[str, list[str]]) -> None:
        self.served = served

    def get_or_none(self, path: str):
        plurals = self.served.get(path)
        return None if plurals is None else {"resources": [{"name": p} for p in plurals]}


def test_gateway_kinds_are_watched_only_where_the_cluster_serves_them():
    assert served_owned_resources(FakeApi({})) == OWNED_RESOURCES
    served = FakeApi({"/apis/gateway.networking.k8s.io/v1": ["gateways", "gateways/status", "grpcroutes"]})
    assert served_owned_resources(served) == OWNED_RESOURCES + GATEWAY_RESOURCES
