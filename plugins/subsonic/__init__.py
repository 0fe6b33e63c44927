"""Into the player: our tracks matched to the songs of the user's Subsonic server (Navidrome,
gonic, Airsonic, supysonic...), so results can reach the app people already listen with.

The server's API lives in `client`, the refresh of the matches in `coordinator`, playlists
sent to the server in `sending` and the ones kept fresh in `fresh`; plugin.py speaks our hooks.
Off by default: it needs a server's URL and a user.
"""
