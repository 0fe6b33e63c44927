"""Built-in plugins: each folder is one plugin, loaded by the host like any third-party one.

A plugin's hooks are in its `plugin.py`; its `__init__.py` says what it is and imports
nothing. Every process a plugin starts (its workers, the export, the file reader, the map)
imports the package of the function it runs, and with it the package's `__init__`: hooks
there would bring the host's web, database and settings stack into each one (~35 MiB of a
worker's memory) for nothing it runs.
"""
