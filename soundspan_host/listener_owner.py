"""Who listens on a local TCP port: the CLI sends the API token only to a host run by this user
(or root), never to another account's process that took the port first.

Read from the kernel's socket tables (/proc/net/tcp and tcp6), which name each socket's owner
to every user; psutil gives a socket's process only to that process's owner or root, and no
owner at all, so these few lines are ours. Elsewhere than Linux nothing is known (None).
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

SOCKET_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
LISTEN = "0A"


def listener_uids(address: str, port: int) -> set[int] | None:
    """The uids owning a socket that listens on `port` and takes connections to `address`
    (itself or a wildcard); None where the kernel's tables cannot be read."""
    wanted = ipaddress.ip_address(address)
    owners: set[int] = set()
    readable = False
    for table in SOCKET_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            local, state, uid = fields[1], fields[3], int(fields[7])
            host_hex, port_hex = local.split(":")
            if state != LISTEN or int(port_hex, 16) != port:
                continue
            listening = _address(host_hex)
            if listening.is_unspecified or listening == wanted or _mapped(listening) == wanted:
                owners.add(uid)
    return owners if readable else None


def _address(host_hex: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The kernel writes each 32-bit word of an address in the machine's byte order."""
    raw = bytes.fromhex(host_hex)
    if sys.byteorder == "little":
        raw = b"".join(raw[index : index + 4][::-1] for index in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)


def _mapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address):
    return getattr(address, "ipv4_mapped", None)
