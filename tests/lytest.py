"""lytest: helpers for the black-box tests.

PgCluster starts a throwaway PostgreSQL 15 cluster in a fresh directory under /tmp (unix
socket only, trust authentication, fsync on) and removes it on stop(). layersctl() runs the
built `layersctl` against it. Run with /usr/bin/python3 (Debian's pytest and psycopg2).
"""

import os
import pwd
import shutil
import subprocess
import tempfile

import psycopg2

PG_BIN = os.environ.get("LY_PG_BIN", "/usr/lib/postgresql/15/bin")


def build_dir():
    """The CMake build directory with the binaries ($LY_BUILD_DIR, else ./build)."""
    return os.environ.get("LY_BUILD_DIR") or os.path.join(source_dir(), "build")


def source_dir():
    """The repository root ($LY_SOURCE_DIR, else the parent of tests/)."""
    return os.environ.get("LY_SOURCE_DIR") or os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))


class PgCluster:
    """A throwaway PostgreSQL cluster. Use as a context manager, or call stop()."""

    def __init__(self, prefix="lypg-"):
        self.root = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        self.datadir = os.path.join(self.root, "data")
        self.sockdir = os.path.join(self.root, "sock")
        self.logfile = os.path.join(self.root, "postgres.log")
        self.admin_url = "postgresql:///postgres?host=%s&user=postgres" % self.sockdir
        self._running = False
        self._as_postgres = os.geteuid() == 0
        try:
            os.mkdir(self.sockdir, 0o700)
            if self._as_postgres:
                pw = pwd.getpwnam("postgres")
                for path in (self.root, self.sockdir):
                    os.chown(path, pw.pw_uid, pw.pw_gid)
            self._run([os.path.join(PG_BIN, "initdb"), "-D", self.datadir, "-U", "postgres",
                       "-A", "trust", "-E", "UTF8", "--locale=C"])
            with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as conf:
                conf.write("listen_addresses = ''\n"
                           "unix_socket_directories = '%s'\n"
                           "max_connections = 50\n"
                           "shared_buffers = '32MB'\n" % self.sockdir)
            self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                       "-w", "-t", "60", "start"])
            self._running = True
        except BaseException:
            self.stop()
            raise

    def _run(self, argv):
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              cwd=self.root, timeout=120)
        if done.returncode != 0:
            log = ""
            if os.path.exists(self.logfile):
                with open(self.logfile, errors="replace") as f:
                    log = f.read()[-4000:]
            raise RuntimeError("%s exited %d:\n%s\n%s" % (
                " ".join(argv), done.returncode, done.stdout.decode(errors="replace"), log))

    def url(self, user="postgres", dbname="postgres"):
        """A libpq URL for user on dbname over the cluster's socket."""
        return "postgresql:///%s?host=%s&user=%s" % (dbname, self.sockdir, user)

    def connect(self, user="postgres", dbname="postgres", autocommit=False):
        """A new psycopg2 connection; the caller closes it."""
        conn = psycopg2.connect(host=self.sockdir, user=user, dbname=dbname)
        conn.autocommit = autocommit
        return conn

    def stop(self):
        """Stops the server (fast shutdown) and removes the directory; idempotent."""
        try:
            if self._running:
                self._running = False
                self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-m", "fast",
                           "-w", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def layersctl(args, database_url, data_dir, check=True, timeout=120, env=None):
    """Runs $LY_BUILD_DIR/layersctl ARGS against database_url; returns CompletedProcess
    (text stdout/stderr). Raises AssertionError with the output when check and it fails."""
    exe = os.path.join(build_dir(), "layersctl")
    if not os.access(exe, os.X_OK):
        raise AssertionError("layersctl not found at %s (set LY_BUILD_DIR)" % exe)
    full_env = dict(os.environ)
    full_env.update({"LAYERS_DATABASE_URL": database_url, "LAYERS_DATA_DIR": data_dir})
    if env:
        full_env.update(env)
    done = subprocess.run([exe] + list(args), env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError("layersctl %s exited %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(args), done.returncode, done.stdout, done.stderr))
    return done
