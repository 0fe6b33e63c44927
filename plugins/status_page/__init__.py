"""The status page at GET /: one server-rendered HTML page, no build step, whose inline script
fetches every figure it shows from the JSON API (progress, failures, search, similar tracks,
the library map) and refreshes itself.

It renders HTML and nothing else: it imports no other plugin and knows nothing about models.
The hooks are in plugin.py; api.py renders and serves the page, settings.py holds [status_page].
"""
