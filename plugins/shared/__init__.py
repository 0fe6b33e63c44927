"""Code the built-in analyzer plugins share. Not a plugin: nothing here has hooks."""
