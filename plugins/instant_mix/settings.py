"""The [instant_mix] section: who may call without the token, and how lists are shaped."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from soundspan_hooks import PluginSettings

NAME = "instant_mix"


class InstantMixSettings(PluginSettings):
    enabled: bool = Field(
        False,
        description="Answer the AudioMuse-AI API that Navidrome's, Jellyfin's and Lyrion's "
        "plugins call (Instant Mix, radio, Don't Stop The Music), with the music server's ids "
        "(needs [subsonic], [jellyfin] or [lyrion] for them).",
    )
    default_server: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="The music server plugin whose ids a request without `server=` means (the "
        "players' plugins send none), e.g. jellyfin where [subsonic] is on too; unset: "
        "subsonic where it is enabled, else the one music server plugin enabled.",
    )
    clients_without_token: list[str] = Field(
        [],
        description="Client addresses or networks (e.g. 172.18.0.0/16) that may call this "
        "plugin's routes, which change nothing, without the API token; every other route "
        "still needs it. For a music server whose plugin sends no token.",
    )
    max_per_artist: int = Field(
        3,
        ge=1,
        le=200,
        description="With eliminate_duplicates (the plugins' default): songs of one artist in "
        "a similar_tracks answer at most, the seed's artist included.",
    )

    @field_validator("clients_without_token")
    @classmethod
    def _addresses(cls, clients: list[str]) -> list[str]:
        for client in clients:
            try:
                ipaddress.ip_network(client, strict=False)
            except ValueError:
                raise ValueError(
                    f"{client!r} is no IP address or network (e.g. 192.168.1.20, 10.0.0.0/8)"
                ) from None
        return clients

    def trusts(self, address: str | None) -> bool:
        """Whether a client at `address` is one the token may be left out for."""
        if address is None:
            return False
        try:
            client = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
            client = client.ipv4_mapped
        return any(
            client in ipaddress.ip_network(network, strict=False)
            for network in self.clients_without_token
        )
