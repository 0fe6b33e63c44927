"""`python -m soundspan_host`, and the `soundspan-host` command (pyproject's script).

The CLI is imported inside `main`: a process the host spawns (a worker, the export, the file
reader) first runs the script that started the host, as multiprocessing's spawn does with a
main script, so all this module imports at its top each of them would import too (the
host's CLI, web and database stack: ~30 MiB a process).
"""


def main() -> None:
    from soundspan_host.cli import main as run_cli

    run_cli()


if __name__ == "__main__":
    main()
