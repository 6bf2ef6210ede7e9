"""The viser server both viewers serve on (a neural field's, viewer/web.py; a policy's replay, viewer/replay.py):
the port checked first (viewer/ports.py), the share URL refused, and what is said about the address."""

from __future__ import annotations

import ipaddress
import logging
import time
from pathlib import Path

import viser

from config.errors import ConfigError
from viewer.ports import choose_port

log = logging.getLogger("train")
vlog = logging.getLogger("viewer")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def url_of(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _no_share_url(*_args, **_kwargs) -> None:
    vlog.warning("a client asked for a share URL: refused (it tunnels the viewer through a relay on the internet)")


def open_server(host: str, port: int | None, default: int) -> tuple[viser.ViserServer, int, str | None]:
    """`(server, port, note)`: a viser server listening on `host:port` (`choose_port`'s rule; `note` says
    which port was taken instead of the default, for the caller to log once it is up)."""
    port, note = choose_port(host, port, default)
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per connection otherwise
    server = viser.ViserServer(host=host, port=port, label="hydrabot", verbose=False)
    if server.get_port() != port:  # taken between the check and the bind: viser moved on silently
        server.stop()
        raise ConfigError(f"viewer port {port} on {host} was taken while the viewer started; run again, or set "
                          "viewer.websocket_port to a free port")
    server.request_share_url = _no_share_url  # a client's share button would reach the internet
    server.gui.configure_theme(show_share_button=False)
    return server, port, note


def say_address(host: str, note: str | None, reach: str = "watch and pause training") -> None:
    """The warnings a viewer gives once it serves: the port taken instead of the default, and a host
    beyond this machine (`reach`: what whoever reaches it can do)."""
    if note:
        log.warning(note)
    if not is_loopback(host):
        log.warning("viewer: listening on %s, not only on this machine: anyone who reaches it can %s", host,
                    reach)


def open_log(path: Path) -> logging.Handler | None:
    """The viewer's own log file (viewer.relative_log_filename); a folder that cannot take it costs a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    except OSError as e:
        log.warning("viewer: no log file at %s (%s)", path, e.strerror)
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    vlog.addHandler(handler)
    vlog.setLevel(logging.INFO)
    vlog.propagate = False
    return handler


def close_log(handler: logging.Handler | None) -> None:
    if handler is not None:
        vlog.removeHandler(handler)
        handler.close()


def serve_until_interrupted() -> None:
    """Returns at Ctrl-C (and SIGTERM, which training.termination turns into one)."""
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        log.info("viewer closed")
