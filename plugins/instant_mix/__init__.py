"""Instant Mix in every player: the HTTP API that the released AudioMuse-AI plugins of
Navidrome, Jellyfin and Lyrion call (similar songs, song paths, similar artists, alchemy),
answered from our index, keyed by the music server's own song ids.

The lists come from vibe_api and the ids from the plugin that matches the server (subsonic,
jellyfin, lyrion), both through hooks (plugin.py). Off by default: it needs a music server
plugin for the ids.
"""
