"""A private PostgreSQL cluster loaded with TechEmpower's hello_world database, for the tests and the benchmark.

Cluster().start() makes a cluster with Debian's PostgreSQL (the `postgresql`
package: initdb, pg_ctl and psql under `pg_config --bindir` or
/usr/lib/postgresql/VERSION/bin) in a new temporary directory, listening on a
free port of 127.0.0.1 and on a Unix socket in that directory, and loads
create-postgres.sql into its hello_world database, owned by TechEmpower's
user benchmarkdbuser (password benchmarkdbpass, asked on TCP connections).
env() gives the libpq variables (PGHOST, PGPORT, PGUSER, PGPASSWORD,
PGDATABASE) that the application finds it by; close() stops it and removes the
directory. stop() and restart() take the server away and bring it back on the
same data (the tests' "database went away" case).

Tuned as a benchmark database, not a durable one: fsync, synchronous_commit
and full_page_writes are off (a crash may lose or corrupt the data, which the
next start makes anew anyway), as TechEmpower's own PostgreSQL image turns
synchronous_commit off.

initdb refuses to run as root, so as root every server command runs as the
unprivileged user `postgres` (Debian's package creates it), through runuser.

  python pgcluster.py     starts one, prints its variables as `export` lines,
                          and stops it on Enter or Ctrl-C
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "create-postgres.sql")
DATABASE = "hello_world"
USER = "benchmarkdbuser"
PASSWORD = "benchmarkdbpass"
SYSTEM_USER = "postgres"
INSTALL_HINT = "PostgreSQL's server is not installed: apt-get install -y postgresql (Debian's package)"
COMMAND_TIMEOUT = 120.0

# Beyond the defaults: room for every pool of every server at once (the
# tests' 512-connection case opens no more than the pools allow), and a
# benchmark's durability trade-offs (see the module's docstring).
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "checkpoint_timeout": "1h",
    "max_wal_size": "1GB",
    "jit": "off",
    "log_min_messages": "warning",
    "log_connections": "off",
}


class PostgresMissing(RuntimeError):
    """The PostgreSQL server programs are not on this machine."""


def bindir():
    """The directory of initdb, pg_ctl and psql: pg_config's, else Debian's newest."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())

    def version(path):
        name = os.path.basename(os.path.dirname(path))
        return int(name) if name.isdigit() else 0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for path in candidates:
        if all(os.access(os.path.join(path, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres", "psql")):
            return path
    raise PostgresMissing(INSTALL_HINT)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self):
        self.bin = bindir()
        self.dir = None
        self.port = None
        self.owner = None  # the pwd entry the server runs as, when we are root

    # ---- paths and commands ---------------------------------------------------

    @property
    def data(self):
        return os.path.join(self.dir, "data")

    @property
    def socket_dir(self):
        return os.path.join(self.dir, "socket")

    @property
    def log(self):
        return os.path.join(self.dir, "postgres.log")

    def _run(self, tool, *args, stdin=None):
        command = [os.path.join(self.bin, tool), *args]
        if self.owner is not None:
            command = ["runuser", "-u", self.owner.pw_name, "--", *command]
        out = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, cwd=self.dir
        )
        if out.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        return out.stdout

    def psql(self, sql, database=DATABASE, user=SYSTEM_USER):
        """Runs sql over the Unix socket; its output, unaligned, tuples only."""
        return self._run(
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.socket_dir, "-p", str(self.port),
            "-U", user, "-d", database, "-c", sql,
        )  # fmt: skip

    # ---- life cycle -------------------------------------------------------------

    def start(self):
        """Makes, starts and loads the cluster; returns self."""
        self.dir = tempfile.mkdtemp(prefix="px-postgres-")
        try:
            if os.geteuid() == 0:
                try:
                    self.owner = pwd.getpwnam(SYSTEM_USER)
                except KeyError:
                    raise PostgresMissing(
                        f"no user {SYSTEM_USER!r} to run PostgreSQL as root; {INSTALL_HINT}"
                    ) from None
                os.chown(self.dir, self.owner.pw_uid, self.owner.pw_gid)
            self._run(
                "initdb", "-D", self.data, "-U", SYSTEM_USER, "-E", "UTF8", "--locale=C",
                "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
            )  # fmt: skip
            os.mkdir(self.socket_dir)
            if self.owner is not None:
                os.chown(self.socket_dir, self.owner.pw_uid, self.owner.pw_gid)
            self.port = free_port()
            settings = dict(SETTINGS, port=str(self.port), unix_socket_directories=f"'{self.socket_dir}'")
            with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
                f.write("".join(f"{key} = {value}\n" for key, value in settings.items()))
            self.restart()
            self.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'", database="postgres")
            self.psql(f"CREATE DATABASE {DATABASE} OWNER {USER}", database="postgres")
            with open(SCHEMA) as f:
                self._run(
                    "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.socket_dir, "-p", str(self.port),
                    "-U", SYSTEM_USER, "-d", DATABASE, stdin=f.read(),
                )  # fmt: skip
        except BaseException:
            self.close()
            raise
        return self

    def restart(self):
        """Starts the server on the cluster's data (after stop()), waiting until it accepts connections."""
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def stop(self):
        """Stops the server at once (fast shutdown: sessions are ended)."""
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop")

    def running(self):
        return self.postmaster_pid() is not None

    def postmaster_pid(self):
        """The server's first process, or None when it is not running."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def pids(self):
        """The postmaster and every process it forked (backends, writers)."""
        root = self.postmaster_pid()
        if root is None:
            return []
        found = [root]
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat", "rb") as f:
                        stat = f.read()
                except OSError:
                    continue
                if int(stat[stat.rindex(b")") + 2 :].split()[1]) == root:
                    found.append(int(name))
        return found

    def cpu_seconds(self):
        """User and system CPU time the server has used: its live processes',
        and that of the backends which exited, which the postmaster reaped
        (its children's times). Without the latter a connection closed during
        a run would take its backend's time out of the total, and a run's
        difference could come out below zero."""
        ticks = os.sysconf("SC_CLK_TCK")
        root = self.postmaster_pid()
        total = 0.0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            if pid == root:
                total += int(fields[13]) + int(fields[14])  # cutime, cstime
        return total / ticks

    def close(self):
        """Stops the server (if it runs) and removes its directory."""
        if self.dir is None:
            return
        if self.running():
            try:
                self.stop()
            except (RuntimeError, subprocess.TimeoutExpired):
                pid = self.postmaster_pid()
                if pid is not None:
                    os.kill(pid, 9)
                    time.sleep(0.5)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def env(self, host="127.0.0.1"):
        """libpq's variables for TechEmpower's user over TCP (host="127.0.0.1") or the Unix socket."""
        return {
            "PGHOST": self.socket_dir if host is None else host,
            "PGPORT": str(self.port),
            "PGUSER": USER,
            "PGPASSWORD": PASSWORD,
            "PGDATABASE": DATABASE,
        }

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    with Cluster() as cluster:
        for key, value in cluster.env().items():
            print(f"export {key}={value}")
        print(f"# PostgreSQL {cluster.psql('SHOW server_version').strip()} in a temporary directory; Enter stops it")
        try:
            input()
        except (KeyboardInterrupt, EOFError):
            pass
