"""Who may talk to the embedded PostgreSQL: its password, its pg_hba.conf and its socket folder.

Every connection needs the password (scram-sha-256); no `trust` line is left. The secret is made
once per data dir and kept in `data_dir/database-password` (mode 0600, the host's user only).
The host itself connects through a Unix socket in a folder only the server's OS user can write
in (and only it, or root, enter), so no other local process can reach it, squat its port, or
see its password go by; a TCP listener on 127.0.0.1 is opened only for workers, when
`embedded_database_port` asks for one.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import pwd
import re
import secrets
import stat
import tempfile
from pathlib import Path

from sqlalchemy import URL

from soundspan_host.errors import ConfigError

DATABASE_NAME = "soundspan"
SUPERUSER = "postgres"
SECRET_FILE_NAME = "database-password"
# what remote workers log in as: it claims, stores and renews, and is no superuser
WORKER_ROLE = "soundspan_worker"
WORKER_SECRET_FILE_NAME = "worker-database-password"
# the socket's file name carries a port even when no TCP listener is open
DEFAULT_PORT = 5432
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default for scram_iterations

HBA_RULES = (
    "# Written by soundspan-host: every connection needs the password (in the data dir's\n"
    f"# {SECRET_FILE_NAME}). The host's next start puts back any change made here.\n"
    "local  all  all                scram-sha-256\n"
    "host   all  all  127.0.0.1/32  scram-sha-256\n"
)
# Only while the password is being set: the private socket alone, no TCP listener at all.
SETUP_HBA_RULES = f"local  all  {SUPERUSER}  trust\n"
SETUP_HBA_NAME = "soundspan-setup-hba.conf"

# sizeof(sockaddr_un.sun_path), the room for a socket's whole path and its final NUL
SOCKET_PATH_ROOM = 108
PLAIN_PATH = re.compile(r"[\w/.-]+")  # safe in postgres' -c list syntax and pg_ctl's shell


def secret_file(data_dir: Path, name: str = SECRET_FILE_NAME) -> Path:
    return data_dir / name


def read_or_create_secret(data_dir: Path, name: str = SECRET_FILE_NAME) -> tuple[str, bool]:
    """A password kept in the data dir, and whether it was made just now (mode 0600)."""
    path = secret_file(data_dir, name)
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        secret = ""
    if secret:
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            path.chmod(0o600)  # our own file: narrowing it is always safe
        return secret, False
    secret = secrets.token_urlsafe(32)  # URL-safe, so it goes into a URL unescaped
    descriptor, partial = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.")
    with os.fdopen(descriptor, "w") as out:  # mkstemp makes it 0600
        out.write(secret + "\n")
    os.replace(partial, path)  # a crash leaves the old state or the whole file, never half
    return secret, True


def read_secret(data_dir: Path, name: str = SECRET_FILE_NAME) -> str:
    """A password the data dir keeps, for a worker's URL; says what to do when it is gone."""
    path = secret_file(data_dir, name)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist; start the host once on data dir {data_dir} to make it"
        ) from None


def scram_verifier(secret: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `secret` (RFC 5803's format).

    Hand-written (a few lines of hashlib) because none of our libraries exposes it: sending the
    verifier instead of the password keeps the secret out of the server's logs and errors.
    """
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    encoded = [base64.b64encode(part).decode() for part in (salt, stored_key, server_key)]
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{encoded[0]}${encoded[1]}:{encoded[2]}"


def hba_is_current(pgdata: Path) -> bool:
    """pg_hba.conf holds our rules, as a file of its own (a link is never current)."""
    try:
        return read_no_follow(pgdata / "pg_hba.conf") == HBA_RULES
    except OSError:  # missing, or a link (ELOOP): written anew
        return False


def read_no_follow(path: Path) -> str:
    """A file's text, refusing a symlink: the cluster folder belongs to the server's OS user,
    and a link planted there must never make root read (or show) another file."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor, errors="replace") as opened:
        return opened.read()


def write_hba(pgdata: Path, name: str = "pg_hba.conf", rules: str = HBA_RULES) -> Path:
    """Write access rules into pgdata, owned by the server's OS user.

    The folder is that user's: anything named `name` there (a symlink to a root-owned file,
    say) may be planted. So the rules go into a new file, never opened by name, handed over
    by its descriptor, and renamed over whatever was there: root follows no link.
    """
    path = pgdata / name
    descriptor, partial = tempfile.mkstemp(dir=pgdata, prefix=f".{name}.")  # O_EXCL, 0600
    try:
        with os.fdopen(descriptor, "w") as out:
            out.write(rules)
            if os.geteuid() == 0:
                owner = os.stat(pgdata)
                os.fchown(out.fileno(), owner.st_uid, owner.st_gid)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return path


def socket_dir_for(pgdata: Path, port: int, os_user: str | None) -> Path:
    """A folder for the server's socket that nobody but its OS user may write in, the same at
    each start: pgdata itself when the host runs as that user and the socket's path fits,
    else /run/soundspan-pg-<hash of pgdata> as root, $XDG_RUNTIME_DIR/... or /tmp/...
    otherwise (in /tmp another user may take the name first: the start then refuses it).

    As root the server runs as its own OS user, and the folder lets root's group in (0750,
    group root): a host run as root without its power over file modes (capabilities dropped,
    as in a hardened container) still reaches the socket, and no other user does.
    """
    room_needed = len(f"/.s.PGSQL.{port}") + 1
    fits = PLAIN_PATH.fullmatch(str(pgdata)) and len(str(pgdata)) + room_needed <= SOCKET_PATH_ROOM
    if os_user is None and fits:
        return pgdata
    # as root, /run: no cleaner ages out a long-lived socket there as in /tmp; as a user, the
    # user's own runtime folder where there is one, where no one else can take the name first
    if os_user:
        base = Path("/run") if Path("/run").is_dir() else Path("/tmp")
    else:
        base = _private_runtime_dir() or Path("/tmp")
    folder = base / f"soundspan-pg-{hashlib.sha256(bytes(pgdata)).hexdigest()[:16]}"
    owner = pwd.getpwnam(os_user).pw_uid if os_user else os.geteuid()
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    found = folder.lstat()
    # someone else's folder, or one others may write in, could hold a squatter's socket
    if (
        not stat.S_ISDIR(found.st_mode)
        or found.st_uid not in (owner, os.geteuid())
        or (found.st_mode & 0o022)
    ):
        raise ConfigError(
            f"{folder} (the embedded database's socket folder) exists but is not a private "
            f"folder of {os_user or 'this user'}; remove it and start again"
        )
    os.chown(folder, owner, 0 if os_user else -1)
    folder.chmod(0o750 if os_user else 0o700)
    return folder


def _private_runtime_dir() -> Path | None:
    """$XDG_RUNTIME_DIR (/run/user/<uid>) when it is this user's alone, as the spec says."""
    given = os.environ.get("XDG_RUNTIME_DIR")
    if not given or not PLAIN_PATH.fullmatch(given):
        return None
    try:
        found = os.lstat(given)
    except OSError:
        return None
    mine = found.st_uid == os.geteuid() and stat.S_IMODE(found.st_mode) == 0o700
    return Path(given) if stat.S_ISDIR(found.st_mode) and mine else None


def host_url(secret: str, socket_dir: Path, port: int) -> str:
    """The host's own URL: through the private socket, password included (never log it)."""
    return URL.create(
        "postgresql+asyncpg",
        username=SUPERUSER,
        password=secret,
        database=DATABASE_NAME,
        query={"host": str(socket_dir), "port": str(port)},
    ).render_as_string(hide_password=False)


def worker_url(data_dir: Path, port: int, *, hide_password: bool = False) -> str:
    """What a worker on this machine sets as SOUNDSPAN_DATABASE_URL to reach a host's embedded
    database, whose TCP listener `embedded_database_port = port` opened: the worker role's."""
    password = "***" if hide_password else read_secret(data_dir, WORKER_SECRET_FILE_NAME)
    return f"postgresql://{WORKER_ROLE}:{password}@127.0.0.1:{port}/{DATABASE_NAME}"
