"""Which address the viewer serves: the host it is told, and a port that is really free there.

viser moves to the next port by itself when the one it is given is taken, without a word; a user who
asked for `websocket_port=7010` must instead hear that 7010 is in use, and one who left it unset must
be told once which port was taken instead of 7007. So the port is tried here first, the way the
server will bind it (SO_REUSEADDR, as asyncio's servers do, on every address the host resolves to).
"""

from __future__ import annotations

import socket

from config.errors import ConfigError

LAST_PORT = 65535


def addresses(host: str, port: int) -> list[tuple]:
    """`(family, sockaddr)` for each address `host` resolves to (several for `localhost`: IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"viewer.websocket_host={host} is not an address of this machine ({e.strerror}); "
                          "use 127.0.0.1 (this machine only) or an interface's address") from None
    return list(dict.fromkeys((info[0], info[4]) for info in infos))


def port_is_free(host: str, port: int) -> bool:
    """Whether a listening socket can be bound on `host:port` (every address of the host)."""
    for family, sockaddr in addresses(host, port):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(sockaddr)
            except OSError as e:
                if e.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
                    return False
                raise ConfigError(f"the viewer cannot listen on {host}:{port} ({e.strerror}); set "
                                  "viewer.websocket_host to an address of this machine, e.g. 127.0.0.1") from None
    return True


def choose_port(host: str, port: int | None, default: int) -> tuple[int, str | None]:
    """`(port, note)`: `port` itself when free (taken: one-line error), else with `port=None` the first free
    one from `default` up (nerfstudio's rule); `note` says which was taken instead of `default`."""
    if port is not None:
        if not port_is_free(host, port):
            raise ConfigError(f"viewer.websocket_port={port} is in use on {host}; stop what listens there, pick "
                              "another port, or set viewer.websocket_port=null to take the next free port after "
                              f"viewer.websocket_port_default={default}")
        return port, None
    for candidate in range(default, LAST_PORT + 1):
        if port_is_free(host, candidate):
            note = None if candidate == default else (
                f"viewer: port {default} is in use on {host}, serving on {candidate} instead")
            return candidate, note
    raise ConfigError(f"no free port on {host} from viewer.websocket_port_default={default} up; set "
                      "viewer.websocket_port to a free port")
