"""The test cluster is what the SLURM tests claim it is: hosts really apart, a workstation that
reaches only the gateway and cannot see the shared filesystem, and addresses that exist only
inside its namespaces (blackholed in the root one, never addressed from it)."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.integration

REACH = """
import json, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close(); print("true")
except OSError:
    print("false")
"""


def test_each_host_has_its_own_name_and_address(cluster):
    for name, info in cluster.info.hosts.items():
        host = cluster.host(name)
        assert host.run(["hostname"]).out.strip() == name
        assert info.address in host.run(["hostname", "-I"]).out.split()


def test_the_workstation_reaches_only_the_gateways_sshd(cluster):
    info = cluster.info
    assert cluster.ws.python(REACH, info.gateway_address_from_ws, "22") is True
    assert cluster.ws.python(REACH, info.address("login"), "6817") is False  # slurmctld: no route
    for node in info.nodes:
        assert cluster.ws.python(REACH, info.address(node), "6818") is False
        assert cluster.login.python(REACH, info.address(node), "6818") is True  # the login node does reach them


def test_the_workstation_cannot_see_the_shared_filesystem_nor_the_cluster_its_folders(cluster, tmp_path):
    marker = cluster.info.shared / f"marker-{tmp_path.name}"
    marker.write_text("on the cluster")
    try:
        assert cluster.ws.run(["test", "-e", str(marker)]).code == 1
        for node in ("login", *cluster.info.nodes):
            assert cluster.host(node).run(["cat", str(marker)]).out == "on the cluster"  # shared, like NFS
            assert cluster.host(node).run(["ls", "-A", str(cluster.info.workstation)]).out == ""
        assert cluster.ws.run(["touch", str(cluster.info.shared / "x")]).code != 0  # read-only emptiness
    finally:
        marker.unlink()


def test_the_root_namespace_has_no_route_to_the_cluster(cluster):
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    for address in {info.address for info in cluster.info.hosts.values()}:
        route = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True, check=False)
        assert route.returncode != 0 or "blackhole" in route.stdout + route.stderr, route
    assert "blackhole 10.97.0.0/24" in routes and "blackhole 10.97.1.0/24" in routes
    links = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert "10.97." not in links  # no address of the cluster's in the root namespace
