"""Lyrion's ids: our tracks matched to the tracks of the user's Lyrion Music Server (LMS), by
the path in their file:// URL, so that its AudioMuse-AI mixer (Don't Stop The Music), which
asks by LMS's track ids, gets LMS's track ids back.

The server's API lives in `client`, the refresh of the matches in `coordinator`, the URL's
path in `matching`; plugin.py speaks our
hooks. Off by default: it needs the server's address.
"""
