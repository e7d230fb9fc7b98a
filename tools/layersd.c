/*  layersd: the Layers server. Without options it is the supervisor: it starts the
    embedded PostgreSQL (unless LAYERS_DATABASE_URL is set), applies migrations, creates
    the demo workspace on first start, and runs every actor in its own process.
    `--only ROLE` runs one actor in this process, for scale-out; `--threads` runs every
    actor as a thread of one process, for tests. */
#include "ly_prelude.h"
#include "ly_actor.h"
#include "ly_bootstrap.h"
#include "ly_config.h"
#include "ly_crypto.h"
#include "ly_db.h"
#include "ly_geoip.h"
#include "ly_log.h"
#include "ly_metrics.h"
#include "ly_migrate.h"
#include "ly_pg.h"
#include "ly_reporter.h"
#include "ly_relay.h"
#include "ly_supervisor.h"
#include "ly_topology.h"
#include <curl/curl.h>
#include <net/if.h>
#include <netdb.h>
#include <sys/resource.h>

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: layersd [OPTIONS]\n"
"\n"
"Runs the Layers server: the event flow (SDK ingest, durable store, relay to ad\n"
"networks) and the partner API (with the content containers it serves; content\n"
"generation itself is not built yet), as actors on ZeroMQ.\n"
"\n"
"Without options layersd is the supervisor: it starts an embedded PostgreSQL under\n"
"$LAYERS_DATA_DIR/pg (unless LAYERS_DATABASE_URL is set), applies migrations, creates a\n"
"demo workspace on first start ($LAYERS_DATA_DIR/credentials.json), and runs each actor\n"
"in its own process, restarting any that dies. SIGINT, SIGTERM or SIGQUIT stops\n"
"everything; SIGHUP, SIGUSR1 and SIGUSR2 are ignored.\n"
"\n"
"Options:\n"
"  --only ROLE          run one actor in this process (scale-out); ROLE is one of:\n"
"                       store, api, ingest, gateway, relay\n"
"  --connect NAME=ADDR  use ADDR (tcp://HOST:PORT or ipc://PATH) for endpoint NAME:\n"
"                       the actor that owns NAME binds ADDR, the others connect to\n"
"                       it; repeatable; endpoints: ingest (owned by gateway), store,\n"
"                       api, metrics (owned by gateway: every actor's /metrics). The\n"
"                       supervisor passes these to every actor it starts; tcp ones\n"
"                       use CurveZMQ and heartbeats (a peer silent 4 s is cut off).\n"
"                       Example, one more ingest on another host:\n"
"                         main:  layersd --connect ingest=tcp://0.0.0.0:7601 \\\n"
"                                        --connect store=tcp://0.0.0.0:7602\n"
"                         other: layersd --only ingest --connect ingest=tcp://MAIN:7601 \\\n"
"                                        --connect store=tcp://MAIN:7602\n"
"  --ingest N           supervise N ingest actors (default 1)\n"
"  --relay N            supervise N relay actors (default 2): they share the outbox\n"
"                       safely, and while one waits for PostgreSQL the other sends\n"
"  --threads            run every actor as a thread of this one process (one of\n"
"                       each: --ingest and --relay are ignored; no restarts)\n"
"  --heartbeat-fd N     (with --only; the supervisor passes it) write a byte to file\n"
"                       descriptor N each time the actor answers (4 times a second)\n"
"  --help               show this help and exit\n"
"  --version            show the version and exit\n"
"\n"
"Environment (all optional):\n"
"  LAYERS_HTTP_ADDR         HTTP listen address (127.0.0.1:8080)\n"
"  LAYERS_DATA_DIR          data directory (./var)\n"
"  LAYERS_DATABASE_URL      PostgreSQL admin URL (unset: embedded PostgreSQL)\n"
"  LAYERS_MEDIA_URL         media store, file:// (file://$LAYERS_DATA_DIR/media); s3:// is\n"
"                           taken but not implemented yet (media routes answer 501)\n"
"  LAYERS_GEOIP_DB          a MaxMind .mmdb file for geo-IP regions; a new file moved\n"
"                           into its place is used within seconds\n"
"  LAYERS_MASTER_KEY_FILE   master key for secrets ($LAYERS_DATA_DIR/master.key, made 0600)\n"
"  LAYERS_META_URL, LAYERS_META_API_VERSION (v26.0), LAYERS_TIKTOK_URL, LAYERS_ADSERVICES_URL\n"
"                           ad-network endpoints\n"
"  LAYERS_MODEL_URL, LAYERS_MODEL_KEY, LAYERS_MODEL_KIND (openai|anthropic)\n"
"                           model provider for content generation (read and checked,\n"
"                           not used yet)\n"
"  LAYERS_TRUSTED_PROXIES   proxies whose X-Forwarded-For is believed: addresses and\n"
"                           CIDR ranges, comma-separated (10.0.0.0/8, fd00::/8)\n"
"  LAYERS_EVENT_MAX_AGE     oldest event time accepted, 60s to 3650d (7d); a re-sent\n"
"                           event is recognized this long and a day more\n"
"  LAYERS_EVENT_MAX_FUTURE  furthest event time ahead accepted, 1s to 7d (5m)\n"
"  LAYERS_EVENT_RETENTION   drop each month of stored events once it is older than\n"
"                           this, 1d or more (unset: keep them for ever)\n"
"  LAYERS_PROJECT_EVENT_RATE  events a second a project may send through one gateway,\n"
"                           in bursts of ten seconds' worth; more gets 429 (no limit)\n"
"  LAYERS_ACTOR_TIMEOUT     an actor process that has not answered the supervisor for\n"
"                           this long (stopped, stuck) is killed and restarted,\n"
"                           1s to 1d, or 0 for never (60s)\n"
"  LAYERS_LOG_LEVEL         debug, info, warning or error (info)\n"
"Durations are a number with s, m, h or d (a bare number is seconds). The relay's\n"
"LAYERS_RELAY_* knobs are in docs/relay.md.\n");
}

//  Starts one actor in this process and waits for SIGINT/SIGTERM, showing the
//  supervisor on heartbeat_fd (-1: none) that the actor answers.
static int
s_run_only (const char *role, int heartbeat_fd, const sigset_t *signals)
{
    zactor_fn *fn = ly_actor_fn (role);
    zactor_t *actor = zactor_new (fn, NULL);
    if (!actor || ly_actor_failures ()) {
        ly_error (role, "could not start the %s actor", role);
        zactor_destroy (&actor);
        return 1;
    }
    //  The gateway exports metrics; every other actor process reports its own to it.
    zactor_t *reporter = streq (role, "gateway")? NULL: zactor_new (ly_reporter_actor, (void *) role);
    ly_heartbeat_run (actor, heartbeat_fd, signals);
    zactor_destroy (&reporter);
    zactor_destroy (&actor);
    return 0;
}

//  Starts every actor as a thread of this process and waits for SIGINT/SIGTERM.
static int
s_run_threads (const sigset_t *signals)
{
    zactor_t *actors [16] = { NULL };
    int count = 0;
    int rc = 0;
    for (int i = 0; ly_actor_names [i]; i++) {
        actors [count] = zactor_new (ly_actor_fn (ly_actor_names [i]), NULL);
        if (!actors [count] || ly_actor_failures ()) {
            zactor_destroy (&actors [count]);
            ly_error ("supervisor", "could not start the %s actor", ly_actor_names [i]);
            rc = 1;
            break;
        }
        count++;
    }
    if (rc == 0) {
        int signum;
        do
            signum = sigwaitinfo (signals, NULL);
        while (!ly_signal_stops (signum));
    }
    while (count > 0)
        zactor_destroy (&actors [--count]);
    return rc;
}

//  Fails, said at once, when LAYERS_HTTP_ADDR cannot be listened on (another server
//  holds the port), rather than through a gateway that restarts for ever. The gateway
//  binds it again, as the only one (no SO_REUSEPORT).
//  0 when a TCP socket can be bound to address (as its server will: SO_REUSEADDR), else
//  the errno that refused it.
static int
s_bind_error (const struct addrinfo *address)
{
    int fd = socket (address->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int error = fd < 0 || bind (fd, address->ai_addr, address->ai_addrlen)? errno: 0;
    if (fd >= 0)
        close (fd);
    return error;
}

static int
s_check_http_addr (void)
{
    struct addrinfo *addresses = ly_config_http_address ("supervisor");
    if (!addresses)
        return -1;
    int error = s_bind_error (addresses);
    freeaddrinfo (addresses);
    if (error)
        ly_error ("supervisor", "cannot listen on LAYERS_HTTP_ADDR \"%s\": %s%s", ly_config.http_addr,
                  strerror (error), error == EADDRINUSE? " (is another server running there?)": "");
    return error? -1: 0;
}

//  Whether every tcp endpoint this supervisor's actors bind can be bound, as the HTTP
//  address is checked: an address no interface has, or a port another process holds,
//  would have the binding actor restart for ever. ZeroMQ binds an IP address, "*" or
//  an interface name; a name that is none of these is refused too. 0 / -1 (logged).
static int
s_check_endpoints (void)
{
    int rc = 0;
    //  A unix socket's path takes at most 107 bytes; each actor's tap is one too
    char *tap_dir = ly_tap_dir ();
    size_t tap_len = strlen (tap_dir) + strlen ("/gateway.4194304");
    if (tap_len >= sizeof ((struct sockaddr_un *) 0)->sun_path) {
        ly_error ("supervisor", "the data directory \"%s\" is too long a path for the unix "
                  "sockets under it (at most %zu bytes): choose a shorter LAYERS_DATA_DIR",
                  ly_config.data_dir, strlen (ly_config.data_dir)
                  - (tap_len - sizeof ((struct sockaddr_un *) 0)->sun_path + 1));
        rc = -1;
    }
    zstr_free (&tap_dir);
    for (size_t i = 0; rc == 0 && i < ly_topology_count (); i++) {
        const char *name = ly_topology_at (i)->name;
        char *address = ly_topology_address (name);
        for (size_t j = 0; rc == 0 && j < i; j++) {
            const char *other = ly_topology_at (j)->name;
            char *other_address = ly_topology_address (other);
            if (streq (address, other_address)) {
                ly_error ("supervisor", "endpoints \"%s\" and \"%s\" are both at \"%s\": "
                          "each needs an address of its own", other, name, address);
                rc = -1;
            }
            zstr_free (&other_address);
        }
        if (rc == 0 && strncmp (address, "ipc://", 6) == 0
        &&  strlen (address + 6) >= sizeof ((struct sockaddr_un *) 0)->sun_path) {
            ly_error ("supervisor", "cannot bind endpoint \"%s\" at \"%s\": a unix socket's "
                      "path takes at most %zu bytes (choose a shorter LAYERS_DATA_DIR, or "
                      "--connect %s=ipc://SHORTER)", name, address,
                      sizeof ((struct sockaddr_un *) 0)->sun_path - 1, name);
            rc = -1;
        }
        char host [256];
        const char *port = ly_topology_tcp_host (address, host, sizeof host);
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE };
        struct addrinfo *found = NULL;
        if (port && getaddrinfo (streq (host, "*")? NULL: host, port, &hints, &found) == 0) {
            int error = s_bind_error (found);
            if (error) {
                ly_error ("supervisor", "cannot bind endpoint \"%s\" at \"%s\": %s", name,
                          address, strerror (error));
                rc = -1;
            }
            freeaddrinfo (found);
        }
        else
        if (port && if_nametoindex (host) == 0) {
            ly_error ("supervisor", "cannot bind endpoint \"%s\" at \"%s\": \"%s\" is no "
                      "IP address, \"*\" or interface name of this host", name, address, host);
            rc = -1;
        }
        zstr_free (&address);
    }
    return rc;
}

//  An exclusive flock on path (opened with flags), held while the supervisor runs; -1
//  with errno when it could not be taken.
static int
s_flock (const char *path, int flags)
{
    int fd = open (path, flags | O_CLOEXEC, 0600);
    if (fd != -1 && flock (fd, LOCK_EX | LOCK_NB)) {
        int error = errno;
        close (fd);
        errno = error;
        fd = -1;
    }
    return fd;
}

//  Holds exclusive locks on the data directory while the supervisor runs: on the
//  directory itself, which no clean-up of files can remove (a lock file deleted as
//  "stale" let a second layersd stop the first one's PostgreSQL), and on the file
//  layersd.lock, which earlier versions lock and which serves where a directory cannot
//  be locked (NFS emulates flock with locks that need a file open for writing).
//  Returns the file's descriptor (the directory's is kept open for good), or -1.
static int
s_lock_data_dir (void)
{
    static int dir_fd = -1;
    char *path = zsys_sprintf ("%s/layersd.lock", ly_config.data_dir);
    int fd = s_flock (path, O_RDWR | O_CREAT);
    int error = errno;
    if (fd != -1 && dir_fd == -1) {
        dir_fd = s_flock (ly_config.data_dir, O_RDONLY | O_DIRECTORY);
        if (dir_fd == -1 && errno == EWOULDBLOCK) {
            close (fd);
            fd = -1;
            error = EWOULDBLOCK;
        }
    }
    if (fd == -1)
        ly_error ("supervisor", "could not lock the data directory \"%s\": %s", ly_config.data_dir,
                  error == EWOULDBLOCK? "another layersd runs with this data directory"
                                      : strerror (error));
    zstr_free (&path);
    return fd;
}

int
main (int argc, char *argv [])
{
    const char *only = NULL;
    bool threads = false;
    int heartbeat_fd = -1;              /* --heartbeat-fd, from the supervisor */
    long ingest_count = 1;
    long relay_count = 2;      //  one relay alternates database and HTTP work: two overlap
    const char *connects [32];          /* --connect specs, passed on to children */
    int connect_count = 0;
    char err [1024];

    zsys_handler_set (NULL);        //  signals are ours, taken with sigwait
    ly_topology_reset ();
    for (int i = 1; i < argc; i++) {
        if (streq (argv [i], "--help") || streq (argv [i], "-h")) {
            s_usage (stdout);
            return 0;
        }
        else
        if (streq (argv [i], "--version")) {
            printf ("layersd %s\n", LY_VERSION);
            return 0;
        }
        else
        if (streq (argv [i], "--only") && i + 1 < argc) {
            only = argv [++i];
            if (!ly_actor_fn (only)) {
                fprintf (stderr, "layersd: unknown actor \"%s\" for --only; see --help\n", only);
                return 2;
            }
        }
        else
        if (streq (argv [i], "--connect") && i + 1 < argc && connect_count < 32) {
            connects [connect_count++] = argv [i + 1];
            if (ly_topology_override (argv [++i], err, sizeof err)) {
                fprintf (stderr, "layersd: %s\n", err);
                return 2;
            }
        }
        else
        if ((streq (argv [i], "--ingest") || streq (argv [i], "--relay")) && i + 1 < argc) {
            long *count = streq (argv [i], "--ingest")? &ingest_count: &relay_count;
            const char *option = argv [i];
            char *end = NULL;
            *count = strtol (argv [++i], &end, 10);
            if (!*argv [i] || *end || *count < 1 || *count > 16) {
                fprintf (stderr, "layersd: %s takes a number from 1 to 16\n", option);
                return 2;
            }
        }
        else
        if (streq (argv [i], "--threads"))
            threads = true;
        else
        if (streq (argv [i], "--heartbeat-fd") && i + 1 < argc) {
            char *end = NULL;
            heartbeat_fd = (int) strtol (argv [++i], &end, 10);
            if (!*argv [i] || *end || heartbeat_fd < 3 || fcntl (heartbeat_fd, F_GETFD) == -1) {
                fprintf (stderr, "layersd: --heartbeat-fd takes an open file descriptor\n");
                return 2;
            }
            fcntl (heartbeat_fd, F_SETFD, FD_CLOEXEC);  //  not for processes we start
        }
        else {
            fprintf (stderr, "layersd: unknown or incomplete option \"%s\"; see --help\n", argv [i]);
            return 2;
        }
    }
    if (ly_config_load (&ly_config, err, sizeof err)) {
        fprintf (stderr, "layersd: %s\n", err);
        return 2;
    }
    if (ly_relay_settings_check (err, sizeof err)) {
        fprintf (stderr, "layersd: %s\n", err);
        ly_config_free (&ly_config);
        return 2;
    }
    if (ly_config.geoip_db && heartbeat_fd == -1 && (!only || streq (only, "ingest"))) {
        //  A file that is no geo-IP database would only show as ingest failing to start.
        //  Not in an actor the supervisor starts: the file was good at the supervisor's
        //  start, and if it went away since, the actor still runs (ly_ingest)
        ly_geoip_t *geoip = ly_geoip_new (ly_config.geoip_db, err, sizeof err);
        if (!geoip) {
            fprintf (stderr, "layersd: LAYERS_GEOIP_DB: %s\n", err);
            ly_config_free (&ly_config);
            return 2;
        }
        ly_geoip_destroy (&geoip);
    }
    ly_log_init (ly_config.log_level, only? only: "supervisor");
    char unread [128];
    const char *closest;
    for (size_t cursor = 0; heartbeat_fd == -1
                         && ly_config_unread (&cursor, unread, sizeof unread, &closest); )
        ly_warning (only? only: "supervisor", "%s is no setting of layersd and is ignored%s%s%s",
                    unread, closest? " (did you mean ": "", closest? closest: "", closest? "?)": "");
    if (!only && strncmp (ly_config.media_url, "s3://", 5) == 0)
        ly_warning ("supervisor", "LAYERS_MEDIA_URL is s3://, which this version does not "
                    "read or write yet: media routes answer 501");

    //  Process-global set-up, once, before any thread starts. Every HTTP connection,
    //  socket and pipe is a file descriptor: take what the hard limit allows.
    struct rlimit files;
    if (getrlimit (RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        setrlimit (RLIMIT_NOFILE, &files);
    }
    //  No core files, here or in any process started from here (the limit is inherited
    //  and cannot be raised again): a core would hold the raw personal data of the
    //  requests in flight (IPs, emails, phones, User-Agents) and the master key.
    struct rlimit no_core = { 0, 0 };
    setrlimit (RLIMIT_CORE, &no_core);
    sigset_t signals;
    ly_signals_block (&signals);
    curl_global_init (CURL_GLOBAL_DEFAULT);
    zsys_init ();
    zsys_set_linger (0);

    int rc = 1;
    int lock_fd = -1;
    ly_pg_t *pg = NULL;
    uint8_t master_key [32];
    if (zsys_dir_create ("%s", ly_config.data_dir)) {
        ly_error ("supervisor", "could not create data directory \"%s\": %s",
                  ly_config.data_dir, strerror (errno));
        goto cleanup;
    }
    //  Ingest and gateway hold no database session: a scale-out node running only
    //  those needs no master key.
    bool keyless = only && (streq (only, "ingest") || streq (only, "gateway"));
    memset (master_key, 0, sizeof master_key);
    bool key_made = access (ly_config.master_key_file, F_OK) != 0;     //  by this start
    if (ly_master_key_load (ly_config.master_key_file, !only, master_key, err, sizeof err)
    &&  !(keyless && errno == ENOENT)) {
        ly_error (only? only: "supervisor", "%s", err);
        goto cleanup;
    }
    ly_master_key_set (master_key);
    if (only) {
        //  A supervised child or a scale-out node: the database is given.
        char *url = ly_config.database_url? strdup (ly_config.database_url)
                                          : ly_pg_url_for (ly_config.data_dir);
        ly_db_init (url, master_key);
        free (url);
        //  A node with another master key would seal and open secrets the others
        //  cannot (deliveries parked as 'the secret does not open'): refused as the
        //  supervisor refuses it. A database that cannot be reached now is the actor's
        //  to wait for.
        if (!keyless) {
            PGconn *admin = ly_db_connect (LY_DB_ADMIN, err, sizeof err);
            int checked = admin? ly_migrate_key_check (admin, err, sizeof err): -1;
            if (admin)
                PQfinish (admin);
            if (checked == -2) {
                ly_error (only, "%s", err);
                goto cleanup;
            }
        }
        rc = s_run_only (only, heartbeat_fd, &signals);
        goto cleanup;
    }
    if ((lock_fd = s_lock_data_dir ()) == -1 || s_check_http_addr () || s_check_endpoints ())
        goto cleanup;
    if (ly_topology_cert_ensure (err, sizeof err)) {
        ly_error ("supervisor", "%s", err);
        goto cleanup;
    }
    const char *admin_url = ly_config.database_url;
    if (!admin_url) {
        pg = ly_pg_start (ly_config.data_dir, err, sizeof err);
        if (!pg) {
            ly_error ("supervisor", "%s", err);
            goto cleanup;
        }
        admin_url = ly_pg_admin_url (pg);
    }
    ly_db_init (admin_url, master_key);
    PGconn *admin = ly_db_connect (LY_DB_ADMIN, err, sizeof err);
    int applied = 0;
    bool key_refused = false;
    if (!admin
    ||  ly_migrate_run (admin, &applied, err, sizeof err)
    ||  (key_refused = ly_migrate_key_check (admin, err, sizeof err) != 0)
    ||  ly_db_setup_roles (admin, err, sizeof err)
    ||  ly_bootstrap_demo (admin, err, sizeof err)) {
        ly_error ("supervisor", "%s", err);
        if (key_refused && key_made && unlink (ly_config.master_key_file) == 0)
            ly_info ("supervisor", "removed the master key file \"%s\" made by this start",
                     ly_config.master_key_file);
        if (admin)
            PQfinish (admin);
        goto cleanup;
    }
    PQfinish (admin);
    if (applied)
        ly_info ("supervisor", "applied %d migrations", applied);

    //  Children find the database through the environment.
    setenv ("LAYERS_DATABASE_URL", admin_url, 1);
    setenv ("LAYERS_DATA_DIR", ly_config.data_dir, 1);
    if (threads)
        rc = s_run_threads (&signals);
    else {
        char exe [PATH_MAX];
        ssize_t len = readlink ("/proc/self/exe", exe, sizeof exe - 1);
        if (len <= 0) {
            ly_error ("supervisor", "could not find our own binary: %s", strerror (errno));
            goto cleanup;
        }
        exe [len] = 0;
        ly_supervisor_t *supervisor = ly_supervisor_new (exe);
        ly_supervisor_set_timeout (supervisor, (int) ly_config.actor_timeout * 1000);
        for (int i = 0; i < connect_count; i++) {
            ly_supervisor_add_arg (supervisor, "--connect");
            ly_supervisor_add_arg (supervisor, connects [i]);
        }
        for (int i = 0; ly_actor_names [i]; i++) {
            long copies = streq (ly_actor_names [i], "ingest")? ingest_count
                        : streq (ly_actor_names [i], "relay")? relay_count: 1;
            for (long copy = 0; copy < copies; copy++)
                ly_supervisor_add (supervisor, ly_actor_names [i]);
        }
        if (pg)
            ly_supervisor_set_watch (supervisor, ly_pg_watch, pg, 1000);
        rc = ly_supervisor_run (supervisor);
        ly_supervisor_destroy (&supervisor);
    }

cleanup:
    ly_pg_destroy (&pg);
    if (lock_fd != -1)
        close (lock_fd);
    memset (master_key, 0, sizeof master_key);
    ly_master_key_set (NULL);
    ly_db_init (NULL, NULL);
    ly_metrics_shutdown ();
    ly_topology_shutdown ();
    ly_config_free (&ly_config);
    curl_global_cleanup ();
    zsys_shutdown ();
    if (!only)
        ly_info ("supervisor", "stopped");
    return rc;
}
