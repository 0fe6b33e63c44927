"""Code the built-in plugins share: the analyzers' skeleton and audio decoding, and what the
plugins that match a music server by path have in common (server_*.py). Not a plugin: nothing
here has hooks."""
