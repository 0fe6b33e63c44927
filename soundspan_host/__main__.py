from soundspan_host.cli import main

main()
