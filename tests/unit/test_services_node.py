"""The services job's choice of Atlas's port on its node."""

from __future__ import annotations

import socket

from metalab.services.node import PROGRESS_PREFIX, atlas_port


def test_atlas_takes_its_configured_port_on_the_node_or_says_which_it_took_instead(capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert atlas_port(free, "127.0.0.1") == free
    assert capsys.readouterr().out == ""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        other = atlas_port(taken, "127.0.0.1")
    assert other != taken
    line = capsys.readouterr().out.strip()
    assert line == f"{PROGRESS_PREFIX}atlas: port {taken} is taken on {socket.gethostname()}; using {other} " \
                   f"(the tunnel still forwards it to {taken})"
