"""Built-in plugins: each folder is one plugin, loaded by the host like any third-party one."""
