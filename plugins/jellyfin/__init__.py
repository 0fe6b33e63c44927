"""Jellyfin's ids: our tracks matched to the audio items of the user's Jellyfin server, by
path, so that its AudioMuse-AI plugin (Instant Mix in every Jellyfin app), which asks by item
id, gets item ids back.

The server's API lives in `client`, the refresh of the matches in `coordinator`, the path
mapping in `matching`; plugin.py speaks our hooks. Off by default: it needs a URL and an API key.
"""
