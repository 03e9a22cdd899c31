"""One address, one listener: two listeners that would bind the same socket address,
however it is written, are refused when the config is read, with one line naming both
keys, instead of failing at start-up with an error that names neither."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import ConfigError, build_config


def dual_stack() -> bool:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        return not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)


@pytest.mark.parametrize("listen, message", [
    (["127.0.0.1:29025", "localhost:29025"],
     "relay.listen[1]: localhost:29025 is also relay.listen[0] (127.0.0.1:29025): "
     "one address, one listener"),
    (["0.0.0.0:29025", "127.0.0.1:29025"],
     "relay.listen[1]: 127.0.0.1:29025 overlaps relay.listen[0] (0.0.0.0:29025): a "
     "wildcard address takes the port on every address of its family; one address, one "
     "listener"),
    (["localhost:29025", "0.0.0.0:29025"],
     "relay.listen[1]: 0.0.0.0:29025 overlaps relay.listen[0] (localhost:29025): a "
     "wildcard address takes the port on every address of its family; one address, one "
     "listener"),
    (["[::]:29025", "[::1]:29025"],
     "relay.listen[1]: [::1]:29025 overlaps relay.listen[0] ([::]:29025): a wildcard "
     "address takes the port on every address of its family; one address, one listener"),
])
def test_the_same_address_written_differently_is_refused(listen: list[str], message: str
                                                         ) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"relay": {"listen": listen}}, environ={})
    assert str(err.value) == message


def test_a_clash_across_sections_names_both_keys() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"relay": {"listen": ["127.0.0.1:29026"]},
                      "http": {"listen": "localhost:29026"}}, environ={})
    assert str(err.value) == ("http.listen: localhost:29026 is also relay.listen[0] "
                              "(127.0.0.1:29026): one address, one listener")


@pytest.mark.skipif(not socket.has_ipv6 or not dual_stack(),
                    reason="[::] takes IPv4 too only on a dual-stack host")
def test_a_dual_stack_wildcard_covers_ipv4_too() -> None:
    with pytest.raises(ConfigError, match=r"^relay\.listen\[1\]: 127\.0\.0\.1:29027 overlaps "
                                          r"relay\.listen\[0\] \(\[::\]:29027\)"):
        build_config({"relay": {"listen": ["[::]:29027", "127.0.0.1:29027"]}}, environ={})


@pytest.mark.parametrize("listen", [
    ["127.0.0.1:29028", "127.0.0.2:29028"],   # two addresses
    ["127.0.0.1:29028", "localhost:29029"],   # two ports
    ["[::1]:29028", "localhost:29028"],       # localhost listens on IPv4: two families
    ["127.0.0.1:0", "localhost:0"],           # ports of the system's choosing
])
def test_different_sockets_are_fine(listen: list[str]) -> None:
    assert build_config({"relay": {"listen": listen}}, environ={}).relay.listen == listen


def test_check_config_says_it_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[relay]\nlisten = ["0.0.0.0:29030", "localhost:29030"]\n')
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    result = subprocess.run([sys.executable, "-m", "relay.cli", "check-config", str(config)],
                            capture_output=True, text=True, env=environ, timeout=60,
                            check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "trackrelay: config error: relay.listen[1]: localhost:29030 overlaps relay.listen[0] "
        "(0.0.0.0:29030): a wildcard address takes the port on every address of its "
        "family; one address, one listener"]
