"""The vibe API: tracks, similar tracks, text-to-vibe search, paths, mixes, the library map
and playlists, over REST; the host's analysis status gets its exclude rules from here.

It asks the host's analyzers, chosen by what they can do, to describe themselves, embed
text and detail their results; it never imports one and knows nothing about models. The
hooks are in plugin.py; api.py holds the routes, settings.py the [vibe_api] section.
"""
