/*  ly_pg.c: the embedded PostgreSQL (see ly_pg.h).
    Layout: $DATA/pg/data is the cluster, $DATA/pg/run its socket directory (or a short
    directory under /tmp when that path is too long for a unix socket, or has a comma,
    which libpq takes for a list of hosts whatever the quotes), $DATA/pg/log the
    server log. PostgreSQL refuses to run as root, so as root every pg_ctl and initdb
    runs through runuser as `postgres`, which owns $DATA/pg. The cluster is made all at
    once: initdb works in a temporary $DATA/pg/data.new.XXXXXX, which becomes
    $DATA/pg/data by a rename once postgresql.conf includes layers.conf; one left by an
    interrupted first start is removed at the next. */
#include "ly_pg.h"
#include "ly_crypto.h"
#include "ly_log.h"

#define S_PGBIN "/usr/lib/postgresql/15/bin"
#define S_DATABASE "layers"

struct _ly_pg_t {
    char *root;         /* $DATA/pg, owned */
    char *cluster;      /* $DATA/pg/data, owned */
    char *sockdir;      /* socket directory, owned */
    char *admin_url;    /* conninfo for the superuser, owned */
    char *log_path;     /* the server's log, $DATA/pg/log, owned */
    bool running;       /* we started it and have not stopped it */
    int64_t retry_at;   /* monotonic msec of the next start after a crash, 0: none due */
    int backoff;        /* msec before the start after the next failed one */
    bool stopped;       /* seen stopped cleanly by someone else (pg_ctl stop) */
};

#define S_RESTART_BACKOFF_MIN 1000
#define S_RESTART_BACKOFF_MAX 30000

static char *
s_sockdir (const char *root)
{
    //  sun_path holds 107 bytes; the socket file adds "/.s.PGSQL.5432".
    char *dir = zsys_sprintf ("%s/run", root);
    if (strlen (dir) + 16 >= 100 || strchr (dir, ',')) {
        char hex [65];
        ly_sha256_hex (root, strlen (root), hex);
        hex [12] = 0;
        zstr_free (&dir);
        dir = zsys_sprintf ("/tmp/layers-pg-%s", hex);
    }
    return dir;
}

//  text with escape before each of the special characters; caller owns
static char *
s_escaped (const char *text, const char *special, char escape)
{
    char *escaped = (char *) zmalloc (2 * strlen (text) + 1);
    char *to = escaped;
    for (const char *from = text; *from; from++) {
        if (strchr (special, *from))
            *to++ = escape;
        *to++ = *from;
    }
    return escaped;
}

//  text for a single-quoted value, of a conninfo string or of a PostgreSQL
//  configuration file: both read \' and \\; caller owns
static char *
s_quoted (const char *text)
{
    return s_escaped (text, "'\\", '\\');
}

//  The conninfo of the cluster's superuser on dbname over the socket in sockdir;
//  caller owns
static char *
s_conninfo (const char *sockdir, const char *dbname)
{
    char *host = s_quoted (sockdir);
    char *conninfo = zsys_sprintf ("host='%s' dbname=%s user=postgres", host, dbname);
    zstr_free (&host);
    return conninfo;
}

static int s_run (const char *log_path, char *const argv []);
static bool s_file_exists (const char *format, const char *arg);

//  Whether the postgres user may search dir (and every directory on the way to it)
static bool
s_postgres_reaches (const char *dir)
{
    char *argv [] = { "/usr/bin/test", "-x", (char *) dir, NULL };
    return s_run ("/dev/null", argv) == 0;
}

//  The cluster's root: $DATA/pg, unless we are root and the postgres user cannot reach
//  the data directory (a home directory closed to others, say) and no cluster is in
//  $DATA/pg yet; then a directory of its own under /var/lib/layers, named after the
//  data directory. A cluster in $DATA/pg stays there, for ly_pg_start to refuse.
char *
ly_pg_root_for (const char *data_dir)
{
    if (geteuid () == 0) {
        zsys_dir_create ("%s", data_dir);
        if (!s_postgres_reaches (data_dir) && !s_file_exists ("%s/pg/data", data_dir)) {
            char hex [65];
            ly_sha256_hex (data_dir, strlen (data_dir), hex);
            hex [16] = 0;
            return zsys_sprintf ("/var/lib/layers/pg-%s", hex);
        }
    }
    return zsys_sprintf ("%s/pg", data_dir);
}

//  The first directory on the way to dir (dir last) that the postgres user may not
//  search, or NULL; caller owns
static char *
s_unreached (const char *dir)
{
    char *prefix = strdup (dir);
    for (char *slash = strchr (prefix + 1, '/'); slash; slash = strchr (slash + 1, '/')) {
        *slash = 0;
        bool reached = s_postgres_reaches (prefix);
        *slash = '/';
        if (!reached) {
            *slash = 0;
            return prefix;
        }
    }
    if (s_postgres_reaches (prefix))
        zstr_free (&prefix);
    return prefix;
}

char *
ly_pg_url_for (const char *data_dir)
{
    char *root = ly_pg_root_for (data_dir);
    char *sockdir = s_sockdir (root);
    char *url = s_conninfo (sockdir, S_DATABASE);
    zstr_free (&root);
    zstr_free (&sockdir);
    return url;
}

//  Runs a command, as postgres when we are root, with stdout and stderr appended to
//  log_path. Returns the exit status, or -1 when it could not run.
static int
s_run (const char *log_path, char *const argv [])
{
    bool as_postgres = geteuid () == 0;
    const char *full [32];
    int n = 0;
    if (as_postgres) {
        full [n++] = "/sbin/runuser";
        full [n++] = "-u";
        full [n++] = "postgres";
        full [n++] = "--";
    }
    for (int i = 0; argv [i] && n < 31; i++)
        full [n++] = argv [i];
    full [n] = NULL;

    pid_t pid = fork ();
    if (pid == -1)
        return -1;
    if (pid == 0) {
        sigset_t all;
        sigemptyset (&all);
        sigprocmask (SIG_SETMASK, &all, NULL);
        int fd = open (log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd != -1) {
            dup2 (fd, 1);
            dup2 (fd, 2);
            close (fd);
        }
        int null = open ("/dev/null", O_RDONLY);
        if (null != -1)
            dup2 (null, 0);
        //  Nothing of ours in PostgreSQL's environment (LAYERS_MODEL_KEY and the like:
        //  a superuser can read it back from /proc): the path, and the time zone initdb
        //  reads
        const char *tz = getenv ("TZ");
        char *tz_copy = tz? strdup (tz): NULL;
        clearenv ();
        setenv ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
        if (tz_copy)
            setenv ("TZ", tz_copy, 1);
        //  Own process group: a Ctrl-C at the terminal reaches the supervisor only,
        //  which then stops the server in order.
        setpgid (0, 0);
        execv (full [0], (char *const *) full);
        _exit (127);
    }
    int status;
    while (waitpid (pid, &status, 0) == -1)
        if (errno != EINTR)
            return -1;
    return WIFEXITED (status)? WEXITSTATUS (status): -1;
}

//  Runs pg_ctl start (the server logging to log_path) or stop (fast) on the cluster
//  and waits for it: 60 s for a start, which may recover from a crash, 30 for a stop.
//  Returns pg_ctl's exit status.
static int
s_pg_ctl (ly_pg_t *self, const char *action)
{
    bool start = streq (action, "start");
    //  No TCP listener whatever the configuration files say (or whether the server can
    //  read them): a command-line setting wins over them and over ALTER SYSTEM
    char *argv [] = { S_PGBIN "/pg_ctl", (char *) action, "-D", self->cluster, "-w",
                      "-t", start? "60": "30", start? "-l": "-m", start? self->log_path: "fast",
                      start? "-o": NULL, "-c listen_addresses=''", NULL };
    return s_run (start? "/dev/null": self->log_path, argv);
}

//  Makes dir (and parents) owned by postgres when we are root.
static int
s_own_dir (const char *dir, mode_t mode, char *err, size_t errlen)
{
    if (zsys_dir_create ("%s", dir)) {
        snprintf (err, errlen, "could not create directory \"%s\": %s", dir, strerror (errno));
        return -1;
    }
    chmod (dir, mode);
    if (geteuid () == 0) {
        struct passwd *pw = getpwnam ("postgres");
        if (!pw) {
            snprintf (err, errlen, "no \"postgres\" system user to run the embedded "
                      "PostgreSQL as; install postgresql-15 (tools/deps)");
            return -1;
        }
        if (chown (dir, pw->pw_uid, pw->pw_gid)) {
            snprintf (err, errlen, "could not give \"%s\" to postgres: %s", dir, strerror (errno));
            return -1;
        }
    }
    return 0;
}

//  The server's log, made the postgres user's before any pg_ctl runs: pg_ctl start
//  appends to it as postgres, and a pg_ctl stop run first would make it root's, 0600
static int
s_own_log (ly_pg_t *self, char *err, size_t errlen)
{
    int fd = open (self->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct passwd *pw = geteuid () == 0? getpwnam ("postgres"): NULL;
    bool owned = fd != -1 && (!pw || fchown (fd, pw->pw_uid, pw->pw_gid) == 0);
    if (!owned)
        snprintf (err, errlen, "could not give \"%s\" to postgres: %s", self->log_path,
                  strerror (errno));
    if (fd != -1)
        close (fd);
    return owned? 0: -1;
}

static bool
s_file_exists (const char *format, const char *arg)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, format, arg);
    return access (path, F_OK) == 0;
}

//  Writes text as a configuration file of the cluster, whatever the umask: 0600, the
//  postgres user's when we are root, so that the server reads it. -1, with err.
static int
s_conf_write (ly_pg_t *self, const char *name, const char *text, char *err, size_t errlen)
{
    char *path = zsys_sprintf ("%s/%s", self->cluster, name);
    int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    struct passwd *pw = geteuid () == 0? getpwnam ("postgres"): NULL;
    size_t len = strlen (text);
    bool written = fd != -1 && fchmod (fd, 0600) == 0
                && (!pw || fchown (fd, pw->pw_uid, pw->pw_gid) == 0)
                && write (fd, text, len) == (ssize_t) len;
    if (fd != -1 && close (fd))
        written = false;
    if (!written)
        snprintf (err, errlen, "could not write \"%s\" for PostgreSQL: %s", path, strerror (errno));
    zstr_free (&path);
    return written? 0: -1;
}

//  pg_hba.conf: the unix socket only (0700, the postgres user's), never a TCP client,
//  should a listener come up all the same
static int
s_write_hba (ly_pg_t *self, char *err, size_t errlen)
{
    return s_conf_write (self, "pg_hba.conf",
        "# Written by layersd at every start; edits are lost. The embedded cluster is\n"
        "# reached through its unix socket only (a directory only postgres can enter).\n"
        "local all all trust\n"
        "host all all 0.0.0.0/0 reject\n"
        "host all all ::/0 reject\n", err, errlen);
}

static int
s_write_conf (ly_pg_t *self, char *err, size_t errlen)
{
    //  A list of directories, each of which may be double-quoted ("" for a ")
    char *inner = s_escaped (self->sockdir, "\"", '"');
    char *element = zsys_sprintf ("\"%s\"", inner);
    char *sockdirs = s_quoted (element);
    zstr_free (&inner);
    zstr_free (&element);
    char *text = zsys_sprintf (
        "# Written by layersd at every start; edits are lost.\n"
        "listen_addresses = ''\n"
        "unix_socket_directories = '%s'\n"
        "unix_socket_permissions = 0700\n"
        "max_connections = 200\n"
        "# ingest writes WAL fast: with the default 1GB, checkpoints come every 25 s under\n"
        "# load (PostgreSQL warns), each one a burst of full-page images and an fsync that\n"
        "# stalls commits; ALTER SYSTEM (postgresql.auto.conf) still wins\n"
        "max_wal_size = '4GB'\n"
        "min_wal_size = '1GB'\n"
        "# a new 16MB WAL segment is otherwise zero-filled and fsynced by the backend that\n"
        "# needs it, holding up every commit meanwhile: ~60 ms each 16MB of ingest while\n"
        "# there are no old segments to recycle (a fresh or quiet cluster)\n"
        "wal_init_zero = off\n"
        "# the store's backend writes the table pages it evicts; without this the kernel\n"
        "# keeps them dirty and writes them back in one burst every 30 s (vm.dirty_expire),\n"
        "# and commits wait behind that burst for 50-200 ms\n"
        "backend_flush_after = '256kB'\n"
        "log_min_error_statement = panic\n"
        "log_line_prefix = '%%m [%%p] '\n",
        sockdirs);
    int rc = s_conf_write (self, "layers.conf", text, err, errlen);
    zstr_free (&sockdirs);
    zstr_free (&text);
    return rc;
}

static void
s_destroy_fields (ly_pg_t *self)
{
    zstr_free (&self->root);
    zstr_free (&self->cluster);
    zstr_free (&self->sockdir);
    zstr_free (&self->admin_url);
    zstr_free (&self->log_path);
    free (self);
}

//  Removes what interrupted first starts left of their temporary clusters (an initdb
//  may even run on there, in its own process group, its supervisor gone)
static void
s_remove_unfinished (ly_pg_t *self)
{
    DIR *dir = opendir (self->root);
    struct dirent *entry;
    while (dir && (entry = readdir (dir))) {
        if (strncmp (entry->d_name, "data.new.", 9))
            continue;
        char *path = zsys_sprintf ("%s/%s", self->root, entry->d_name);
        ly_info ("supervisor", "removing \"%s\", left by an interrupted first start", path);
        char *argv [] = { "/bin/rm", "-rf", path, NULL };
        if (s_run ("/dev/null", argv) != 0)
            ly_warning ("supervisor", "could not remove \"%s\"", path);
        zstr_free (&path);
    }
    if (dir)
        closedir (dir);
}

//  Makes the cluster, all or nothing: initdb into a temporary directory beside it, and
//  postgresql.conf made to include layers.conf there, before the rename that makes it
//  the cluster. A start killed meanwhile leaves no cluster, and the next makes it anew.
static int
s_initdb (ly_pg_t *self, const char *init_log, char *err, size_t errlen)
{
    s_remove_unfinished (self);
    char *temp = zsys_sprintf ("%s/data.new.XXXXXX", self->root);
    char *conf = NULL;
    int rc = -1;
    if (!mkdtemp (temp)) {
        snprintf (err, errlen, "could not create directory \"%s\": %s", temp, strerror (errno));
        goto cleanup;
    }
    if (s_own_dir (temp, 0700, err, errlen))
        goto cleanup;
    ly_info ("supervisor", "initializing PostgreSQL cluster in \"%s\"", self->cluster);
    char *argv [] = { S_PGBIN "/initdb", "-D", temp, "-U", "postgres",
                      "--auth-local=trust", "--auth-host=reject", "-E", "UTF8",
                      "--no-locale", NULL };
    if (s_run (init_log, argv) != 0) {
        snprintf (err, errlen, "could not initialize PostgreSQL cluster in \"%s\"; see \"%s\"",
                  temp, init_log);
        goto cleanup;
    }
    conf = zsys_sprintf ("%s/postgresql.conf", temp);
    FILE *file = fopen (conf, "a");
    bool included = file && fprintf (file, "\ninclude_if_exists = 'layers.conf'\n") > 0
                 && fflush (file) == 0 && fsync (fileno (file)) == 0;
    if (file && fclose (file))
        included = false;
    if (!included) {
        snprintf (err, errlen, "could not write \"%s\": %s", conf, strerror (errno));
        goto cleanup;
    }
    if (rename (temp, self->cluster)) {
        snprintf (err, errlen, "could not rename \"%s\" to \"%s\": %s", temp, self->cluster,
                  strerror (errno));
        goto cleanup;
    }
    rc = 0;

cleanup:
    zstr_free (&temp);
    zstr_free (&conf);
    return rc;
}

typedef enum {
    S_STOPPED,          //  no postmaster.pid: stopped cleanly, or never started
    S_RUNNING,          //  its postmaster runs (or is starting)
    S_DEAD              //  postmaster.pid names a process that is gone, or no postgres
} s_state_t;

//  What the cluster's postmaster.pid says, checked against the process it names
static s_state_t
s_state (ly_pg_t *self)
{
    char *path = zsys_sprintf ("%s/postmaster.pid", self->cluster);
    FILE *file = fopen (path, "r");
    zstr_free (&path);
    if (!file)
        return S_STOPPED;
    long pid = 0;
    bool read = fscanf (file, "%ld", &pid) == 1 && pid > 0;
    fclose (file);
    if (!read)
        return S_RUNNING;       //  being written by a postmaster that is starting
    char comm_path [64], comm [32] = "";
    snprintf (comm_path, sizeof comm_path, "/proc/%ld/comm", pid);
    FILE *proc = fopen (comm_path, "r");
    if (!proc)
        return kill ((pid_t) pid, 0) == -1 && errno == ESRCH? S_DEAD: S_RUNNING;
    bool postgres = fgets (comm, sizeof comm, proc) && strncmp (comm, "postgres", 8) == 0;
    fclose (proc);
    return postgres? S_RUNNING: S_DEAD;
}

//  Whether the cluster's last shut-down was clean, as pg_ctl stop (smart or fast)
//  leaves it: pg_control's state (after its identifier and two version numbers) is
//  "shut down" or "shut down in recovery". Not after a crash, pg_ctl stop -m immediate,
//  or a postmaster that gave up starting (its recovery could not write: a full disk).
//  True when the file cannot be read: nothing then says it was not someone's stop.
static bool
s_shut_down_cleanly (ly_pg_t *self)
{
    char *path = zsys_sprintf ("%s/global/pg_control", self->cluster);
    FILE *file = fopen (path, "rb");
    zstr_free (&path);
    if (!file)
        return true;
    uint8_t header [20];
    bool read = fread (header, 1, sizeof header, file) == sizeof header;
    fclose (file);
    int32_t state;
    memcpy (&state, header + 16, sizeof state);
    return !read || state == 1 || state == 2;   //  DB_SHUTDOWNED, DB_SHUTDOWNED_IN_RECOVERY
}

ly_pg_t *
ly_pg_start (const char *data_dir, char *err, size_t errlen)
{
    ly_pg_t *self = (ly_pg_t *) zmalloc (sizeof (ly_pg_t));
    self->root = ly_pg_root_for (data_dir);
    if (strncmp (self->root, data_dir, strlen (data_dir)))
        ly_warning ("supervisor", "the postgres user cannot reach \"%s\"; the embedded "
                    "cluster lives in \"%s\" (back it up, and remove it, with the data "
                    "directory)", data_dir, self->root);
    self->cluster = zsys_sprintf ("%s/data", self->root);
    self->sockdir = s_sockdir (self->root);
    self->admin_url = ly_pg_url_for (data_dir);
    self->log_path = zsys_sprintf ("%s/log", self->root);
    const char *log_path = self->log_path;
    char *init_log = zsys_sprintf ("%s/initdb.log", self->root);
    int rc = -1;

    //  pg_ctl starts the server through /bin/sh, with the cluster's path and its log's
    //  between double quotes, where these characters are the shell's
    if (strpbrk (self->root, "\"$`\\\n")) {
        snprintf (err, errlen, "the embedded PostgreSQL cannot run in \"%s\": pg_ctl passes "
                  "its path through a shell, which reads a \", $, `, \\ or newline in it; choose a "
                  "data directory without them, or set LAYERS_DATABASE_URL", self->root);
        goto cleanup;
    }
    //  A cluster there, out of the postgres user's reach: never an empty one elsewhere
    //  in its place (see ly_pg_root_for)
    if (geteuid () == 0 && !strncmp (self->root, data_dir, strlen (data_dir))
    &&  !s_postgres_reaches (data_dir)) {
        char *unreached = s_unreached (data_dir);
        const char *closed = unreached? unreached: data_dir;
        snprintf (err, errlen, "the postgres user cannot reach the embedded PostgreSQL cluster "
                  "in \"%s\", as it may not search \"%s\": let it (chmod o+x \"%s\", or "
                  "chgrp postgres and chmod g+x), or move the data directory where it can",
                  self->cluster, closed, closed);
        zstr_free (&unreached);
        goto cleanup;
    }

    if (s_own_dir (self->root, 0700, err, errlen)
    ||  s_own_dir (self->sockdir, 0700, err, errlen))
        goto cleanup;
    if (geteuid () == 0) {
        char *argv [] = { "/usr/bin/test", "-w", self->root, NULL };
        if (s_run ("/dev/null", argv) != 0) {
            snprintf (err, errlen, "the postgres user cannot write \"%s\"", self->root);
            goto cleanup;
        }
    }
    if (!s_file_exists ("%s/PG_VERSION", self->cluster)
    &&  s_initdb (self, init_log, err, errlen))
        goto cleanup;
    if (s_write_conf (self, err, errlen) || s_write_hba (self, err, errlen)
    ||  s_own_log (self, err, errlen))
        goto cleanup;
    if (s_state (self) == S_RUNNING) {
        //  Left behind by a supervisor that was killed: stop it, to start it as ours
        ly_warning ("supervisor", "stopping a PostgreSQL left running in \"%s\"", self->cluster);
        s_pg_ctl (self, "stop");
    }
    if (s_pg_ctl (self, "start") != 0) {
        snprintf (err, errlen, "could not start PostgreSQL in \"%s\"; see \"%s\"",
                  self->cluster, log_path);
        goto cleanup;
    }
    self->running = true;

    //  The application database, on first start.
    char *postgres_url = s_conninfo (self->sockdir, "postgres");
    PGconn *conn = PQconnectdb (postgres_url);
    zstr_free (&postgres_url);
    if (PQstatus (conn) != CONNECTION_OK) {
        snprintf (err, errlen, "could not connect to the embedded PostgreSQL: %s", PQerrorMessage (conn));
        PQfinish (conn);
        goto cleanup;
    }
    PGresult *res = PQexec (conn, "SELECT 1 FROM pg_database WHERE datname = '" S_DATABASE "'");
    bool exists = PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1;
    PQclear (res);
    if (!exists) {
        res = PQexec (conn, "CREATE DATABASE " S_DATABASE);
        if (PQresultStatus (res) != PGRES_COMMAND_OK) {
            snprintf (err, errlen, "could not create database " S_DATABASE ": %s",
                      PQresultErrorMessage (res));
            PQclear (res);
            PQfinish (conn);
            goto cleanup;
        }
        PQclear (res);
    }
    PQfinish (conn);
    rc = 0;

cleanup:
    zstr_free (&init_log);
    if (rc) {
        size_t len = strlen (err);
        while (len && err [len - 1] == '\n')
            err [--len] = 0;
        ly_pg_destroy (&self);
    }
    return self;
}

void
ly_pg_watch (void *arg)
{
    ly_pg_t *self = (ly_pg_t *) arg;
    if (!self->running)
        return;
    int64_t now = ly_mono_msec ();
    s_state_t state = s_state (self);
    if (self->retry_at == 0) {
        if (state == S_STOPPED && !self->stopped && !s_shut_down_cleanly (self)) {
            ly_warning ("supervisor", "PostgreSQL in \"%s\" stopped without a clean shut-down"
                        " (a failed recovery, as on a full disk, or pg_ctl stop -m immediate);"
                        " starting it again; see \"%s\"", self->cluster, self->log_path);
            self->backoff = S_RESTART_BACKOFF_MIN;
            self->retry_at = now;
            return;
        }
        //  A clean stop is someone's choice (pg_ctl stop): left so, but said
        if (state == S_STOPPED && !self->stopped)
            ly_warning ("supervisor", "PostgreSQL in \"%s\" was stopped (pg_ctl stop?); it is"
                        " left stopped, and requests get 503 until it is started again"
                        " (pg_ctl start, or a restart of layersd)", self->cluster);
        else
        if (state == S_RUNNING && self->stopped)
            ly_info ("supervisor", "PostgreSQL in \"%s\" was started again", self->cluster);
        self->stopped = state == S_STOPPED;
        if (state != S_DEAD)
            return;
        ly_warning ("supervisor", "PostgreSQL in \"%s\" died; starting it again", self->cluster);
        self->backoff = S_RESTART_BACKOFF_MIN;
    }
    else
    if (state == S_RUNNING) {
        //  A start that pg_ctl gave up waiting for went on
        ly_info ("supervisor", "PostgreSQL in \"%s\" runs again", self->cluster);
        self->retry_at = 0;
        return;
    }
    else
    if (now < self->retry_at)
        return;
    if (s_pg_ctl (self, "start") == 0) {
        ly_info ("supervisor", "PostgreSQL in \"%s\" runs again", self->cluster);
        self->retry_at = 0;
    }
    else {
        //  Its old backends may still hold the shared memory for a moment
        ly_warning ("supervisor", "could not start PostgreSQL in \"%s\" again; trying in %d ms;"
                    " see \"%s\"", self->cluster, self->backoff, self->log_path);
        self->retry_at = ly_mono_msec () + self->backoff;
        self->backoff = self->backoff * 2 > S_RESTART_BACKOFF_MAX? S_RESTART_BACKOFF_MAX
                                                                  : self->backoff * 2;
    }
}

void
ly_pg_destroy (ly_pg_t **self_p)
{
    assert (self_p);
    ly_pg_t *self = *self_p;
    if (!self)
        return;
    if (self->running) {
        if (s_pg_ctl (self, "stop") != 0)
            ly_warning ("supervisor", "could not stop PostgreSQL in \"%s\"; see \"%s\"",
                        self->cluster, self->log_path);
    }
    s_destroy_fields (self);
    *self_p = NULL;
}

const char *
ly_pg_admin_url (ly_pg_t *self)
{
    return self->admin_url;
}
