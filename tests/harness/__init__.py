"""What the test modules share, so that no test module imports another. Fixtures live in
tests/conftest.py (`fast_host` starts a host); these are the helpers they and the tests use.

    library.py              audio files to drop in a music dir; waiting (`eventually`) and
                            reading the host's tables (tracks, jobs, settled)
    fast_settings.py        the quick timings `fast_host` adds to a test's settings
    plugins.py              the test plugins (echo, toy, vectors), installed by entry point
    database.py             URLs to the session's embedded PostgreSQL
    processes.py            `soundspan-host serve` and `worker` as real processes, free ports
    cli_host.py             a host process on a small vector library for the CLI tests, and
                            the commands run against it
    terminal_text.py        checks on what the CLI prints (whole words, plain pipes)
    vector_library.py       a library of known embeddings (the vectors analyzer's), analyzed
    subsonic_server.py      a real Subsonic server (supysonic) in its own process
    subsonic_library.py     the vector library on that server, and a host matched with it
    subsonic_settings.py    [subsonic] for one user on a server a test runs itself
    instant_mix_library.py  tagged FLACs of known embeddings on supysonic, for Instant Mix
    tagged_audio.py         real encoded, tagged files (MP3, FLAC, Ogg, M4A)
    clap_models.py          tiny random CLAP models and checkpoints in the real formats
    hub_server.py           a Hugging Face hub on localhost (the file protocol)
    browser.py              the status page in headless chromium
    pool_tasks.py           functions model-pool workers run; spawned workers import it by
                            this module path, so it imports nothing of the tests

This package's __init__ imports nothing: a spawned pool worker imports it on its way to
pool_tasks.
"""
