/*  ly_db.c: PostgreSQL sessions per server role (see ly_db.h). Each role's password is
    HMAC-SHA256(master key, "layers-db-role:" role), hashed with SCRAM on our side
    before it is sent, so neither the password nor the key reaches the server's logs. */
#include "ly_db.h"
#include <poll.h>
#include <openssl/hmac.h>
#include <openssl/evp.h>
#include "ly_log.h"

static char *s_admin_url;                   /* admin connection string, owned */
static uint8_t s_master_key [32];           /* copy of the master key */

static const char *s_role_names [] = {
    [LY_DB_ADMIN] = NULL,
    [LY_DB_API] = "layers_api",
    [LY_DB_AUTH] = "layers_auth",
    [LY_DB_STORE] = "layers_store",
    [LY_DB_RELAY] = "layers_relay",
    [LY_DB_CONTENT] = "layers_content",
};

void
ly_db_init (const char *admin_url, const uint8_t master_key [32])
{
    free (s_admin_url);
    s_admin_url = admin_url? strdup (admin_url): NULL;
    if (master_key)
        memcpy (s_master_key, master_key, 32);
    else
        memset (s_master_key, 0, sizeof s_master_key);
}

const char *
ly_db_role_name (ly_db_role_t role)
{
    return s_role_names [role]? s_role_names [role]: "admin";
}

//  Writes the role's derived password (64 hex chars + NUL) into password.
static void
s_role_password (ly_db_role_t role, char password [65])
{
    char label [64];
    snprintf (label, sizeof label, "layers-db-role:%s", s_role_names [role]);
    uint8_t digest [32];
    unsigned int digest_len = sizeof digest;
    HMAC (EVP_sha256 (), s_master_key, sizeof s_master_key,
          (const uint8_t *) label, strlen (label), digest, &digest_len);
    for (int i = 0; i < 32; i++)
        sprintf (password + 2 * i, "%02x", digest [i]);
    password [64] = 0;
}

char *
ly_db_options (const char *conninfo, char *out, size_t size)
{
    const char *given = getenv ("PGOPTIONS");
    PQconninfoOption *parsed = conninfo? PQconninfoParse (conninfo, NULL): NULL;
    for (PQconninfoOption *option = parsed; option && option->keyword; option++)
        if (streq (option->keyword, "options") && option->val && *option->val)
            given = option->val;
    if (given && *given)
        snprintf (out, size, "%s -c jit=off", given);
    else
        snprintf (out, size, "-c jit=off");
    PQconninfoFree (parsed);
    return out;
}

//  The connection parameters of a session as role, into keys and values (NULL-ended);
//  they point into password, application and options. -1 when no database is set.
static int
s_params (ly_db_role_t role, const char *keys [16], const char *values [16],
          char password [65], char application [64], char options [1024])
{
    if (!s_admin_url)
        return -1;
    snprintf (application, 64, "layers-%s", ly_db_role_name (role));
    //  Over TCP, a server that went away without a word (a failover, a partition) is
    //  noticed within ~30 s instead of the kernel's ~15 minutes: keepalives while idle,
    //  tcp_user_timeout while data waits for an acknowledgement. Before "dbname", so the
    //  database URL's own settings win; libpq ignores them on a Unix socket.
    const char *fixed_keys [] = { "keepalives", "keepalives_idle", "keepalives_interval",
                                  "keepalives_count", "tcp_user_timeout",
                                  "dbname", "application_name", "connect_timeout", "options" };
    const char *fixed_values [] = { "1", "10", "5", "3", "30000",
                                    s_admin_url, application, "5",
                                    ly_db_options (s_admin_url, options, 1024) };
    int count = 9;
    memcpy (keys, fixed_keys, sizeof fixed_keys);
    memcpy (values, fixed_values, sizeof fixed_values);
    password [0] = 0;
    if (role != LY_DB_ADMIN) {              //  else keep the URL's own user and password
        s_role_password (role, password);
        keys [count] = "user";
        values [count++] = s_role_names [role];
        keys [count] = "password";
        values [count++] = password;
    }
    keys [count] = values [count] = NULL;
    return 0;
}

//  What the server says outside a statement's answer (a NOTICE of ours, or the FATAL
//  with which it ends a session: a shutdown, a crash) goes to our log under actor (a
//  static or session-owned name), rather than raw to stderr as libpq would write it.
static void
s_notice (void *actor, const PGresult *res)
{
    const char *severity = PQresultErrorField (res, PG_DIAG_SEVERITY_NONLOCALIZED);
    char message [512];
    ly_db_message (message, sizeof message, PQresultErrorMessage (res));
    bool quiet = severity && (streq (severity, "NOTICE") || streq (severity, "INFO")
                           || streq (severity, "LOG") || streq (severity, "DEBUG"));
    if (quiet)
        ly_debug ((const char *) actor, "database: %s", message);
    else
        ly_warning ((const char *) actor, "database: %s", message);
}

PGconn *
ly_db_connect (ly_db_role_t role, char *err, size_t errlen)
{
    char password [65], application [64], options [1024];
    const char *keys [16], *values [16];
    if (s_params (role, keys, values, password, application, options)) {
        snprintf (err, errlen, "no database configured");
        return NULL;
    }
    PGconn *conn = PQconnectdbParams (keys, values, 1);
    memset (password, 0, sizeof password);
    if (!conn) {
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus (conn) != CONNECTION_OK) {
        char reason [512];
        snprintf (err, errlen, "could not connect to the database as %s: %s",
                  ly_db_role_name (role), ly_db_message (reason, sizeof reason, PQerrorMessage (conn)));
        PQfinish (conn);
        return NULL;
    }
    PQsetNoticeReceiver (conn, s_notice, (void *) "database");
    return conn;
}

char *
ly_db_message (char *out, size_t size, const char *message)
{
    snprintf (out, size, "%s", message? message: "");
    size_t len = strlen (out);
    while (len && (out [len - 1] == '\n' || out [len - 1] == ' '))
        out [--len] = 0;
    return out;
}

int
ly_db_exec (PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec (conn, sql);
    ExecStatusType status = PQresultStatus (res);
    int rc = 0;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        ly_db_message (err, errlen, PQresultErrorMessage (res));
        rc = -1;
    }
    PQclear (res);
    return rc;
}

int
ly_db_setup_roles (PGconn *conn, char *err, size_t errlen)
{
    for (ly_db_role_t role = LY_DB_API; role <= LY_DB_CONTENT; role++) {
        char password [65];
        s_role_password (role, password);
        char *hashed = PQencryptPasswordConn (conn, password, s_role_names [role], NULL);
        memset (password, 0, sizeof password);
        if (!hashed) {
            snprintf (err, errlen, "could not hash the password of %s: %s",
                      s_role_names [role], PQerrorMessage (conn));
            return -1;
        }
        char *literal = PQescapeLiteral (conn, hashed, strlen (hashed));
        PQfreemem (hashed);
        if (!literal) {
            snprintf (err, errlen, "could not quote a password: %s", PQerrorMessage (conn));
            return -1;
        }
        char sql [512];
        snprintf (sql, sizeof sql, "ALTER ROLE %s LOGIN PASSWORD %s", s_role_names [role], literal);
        PQfreemem (literal);
        if (ly_db_exec (conn, sql, err, errlen))
            return -1;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Self-reconnecting sessions

#define S_RECONNECT_MSEC 1000
#define S_CONNECT_MSEC 5000         /* a new connection is given up after this */

struct _ly_db_session_t {
    ly_db_role_t role;          /* the role it logs in as */
    char *actor;                /* for log lines, owned */
    ly_db_setup_fn *setup;      /* per-connection set-up statements, may be NULL */
    void *arg;                  /* for setup, borrowed */
    PGconn *conn;               /* the connection, owned; NULL while down */
    PGconn *pending;            /* a connection on its way, owned; NULL if none */
    PostgresPollingStatusType polling;  /* what the pending one waits for */
    bool setting_up;            /* the pending one is connected and runs its set-up */
    int64_t pending_until;      /* monotonic msec when it is given up */
    int64_t next_connect;       /* monotonic msec before which we do not retry */
    bool down_logged;           /* the outage was logged */
};

ly_db_session_t *
ly_db_session_new (ly_db_role_t role, const char *actor, ly_db_setup_fn *setup, void *arg)
{
    ly_db_session_t *self = (ly_db_session_t *) calloc (1, sizeof (ly_db_session_t));
    assert (self);
    self->role = role;
    self->actor = strdup (actor);
    self->setup = setup;
    self->arg = arg;
    return self;
}

void
ly_db_session_destroy (ly_db_session_t **self_p)
{
    assert (self_p);
    ly_db_session_t *self = *self_p;
    if (self) {
        if (self->conn)
            PQfinish (self->conn);
        if (self->pending)
            PQfinish (self->pending);
        free (self->actor);
        free (self);
        *self_p = NULL;
    }
}

static void
s_session_drop (ly_db_session_t *self)
{
    PQfinish (self->conn);
    self->conn = NULL;
    self->next_connect = ly_mono_msec () + S_RECONNECT_MSEC;
}

//  Gives up the connection on its way; the next one is tried after S_RECONNECT_MSEC.
static void
s_pending_drop (ly_db_session_t *self)
{
    if (self->pending)
        PQfinish (self->pending);
    self->pending = NULL;
    self->setting_up = false;
    self->next_connect = ly_mono_msec () + S_RECONNECT_MSEC;
}

//  The connection on its way failed (why: libpq's message or ours): logged once per
//  outage.
static void
s_pending_failed (ly_db_session_t *self, const char *why)
{
    if (!self->down_logged) {
        char reason [512];
        ly_warning (self->actor, "could not connect to the database as %s: %s",
                    ly_db_role_name (self->role), ly_db_message (reason, sizeof reason, why));
    }
    self->down_logged = true;
    s_pending_drop (self);
}

//  What the connection on its way waits for on its socket.
static short
s_pending_events (ly_db_session_t *self)
{
    return self->setting_up || self->polling == PGRES_POLLING_READING? POLLIN: POLLOUT;
}

//  Starts the set-up statements on the connection just made; false when it failed
//  (dropped). done is set when there are none.
static bool
s_setup_start (ly_db_session_t *self, bool *done)
{
    char *setup = self->setup? self->setup (self->arg): NULL;
    *done = !setup;
    if (!setup)
        return true;
    int sent = PQsendQuery (self->pending, setup);
    free (setup);
    if (!sent) {
        s_pending_failed (self, PQerrorMessage (self->pending));
        return false;
    }
    self->setting_up = true;
    return true;
}

//  Reads what came of the set-up statements: 1 while they run, 0 when they all
//  succeeded, -1 when one failed (logged; the connection is dropped).
static int
s_setup_read (ly_db_session_t *self)
{
    if (!PQconsumeInput (self->pending)) {
        s_pending_failed (self, PQerrorMessage (self->pending));
        return -1;
    }
    while (!PQisBusy (self->pending)) {
        PGresult *res = PQgetResult (self->pending);
        if (!res)
            return 0;
        ExecStatusType status = PQresultStatus (res);
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
            char reason [512];
            ly_error (self->actor, "could not set up a session as %s: %s", ly_db_role_name (self->role),
                      ly_db_message (reason, sizeof reason, PQresultErrorMessage (res)));
            PQclear (res);
            s_pending_drop (self);
            return -1;
        }
        PQclear (res);
    }
    return 1;
}

PGconn *
ly_db_session_try (ly_db_session_t *self)
{
    ly_db_session_check (self, NULL);
    if (self->conn)
        return self->conn;
    int64_t now = ly_mono_msec ();
    if (!self->pending) {
        if (now < self->next_connect)
            return NULL;
        char password [65], application [64], options [1024];
        const char *keys [16], *values [16];
        if (s_params (self->role, keys, values, password, application, options)) {
            s_pending_failed (self, "no database configured");
            return NULL;
        }
        self->pending = PQconnectStartParams (keys, values, 1);
        memset (password, 0, sizeof password);
        if (!self->pending || PQstatus (self->pending) == CONNECTION_BAD) {
            s_pending_failed (self, self->pending? PQerrorMessage (self->pending): "out of memory");
            return NULL;
        }
        PQsetNoticeReceiver (self->pending, s_notice, self->actor);
        self->polling = PGRES_POLLING_WRITING;      //  as libpq says to begin
        self->pending_until = now + S_CONNECT_MSEC;
    }
    //  Step the connection, then its set-up, on while its socket is ready for what it
    //  waits for
    bool ready = false;
    while (!ready) {
        struct pollfd item = { PQsocket (self->pending), s_pending_events (self), 0 };
        if (item.fd < 0) {
            s_pending_failed (self, PQerrorMessage (self->pending));
            return NULL;
        }
        if (poll (&item, 1, 0) == 0) {
            if (ly_mono_msec () >= self->pending_until)
                s_pending_failed (self, "no answer within 5 seconds");
            return NULL;
        }
        if (self->setting_up) {
            int rc = s_setup_read (self);
            if (rc < 0)
                return NULL;
            ready = rc == 0;
            continue;
        }
        self->polling = PQconnectPoll (self->pending);
        if (self->polling == PGRES_POLLING_FAILED) {
            s_pending_failed (self, PQerrorMessage (self->pending));
            return NULL;
        }
        if (self->polling == PGRES_POLLING_OK && !s_setup_start (self, &ready))
            return NULL;
    }
    self->conn = self->pending;
    self->pending = NULL;
    self->setting_up = false;
    if (self->down_logged)
        ly_info (self->actor, "connected to the database again");
    self->down_logged = false;
    return self->conn;
}

PGconn *
ly_db_session_get (ly_db_session_t *self)
{
    PGconn *conn = ly_db_session_try (self);
    struct pollfd item;
    while (!conn && ly_db_session_pending (self, &item.fd, &item.events)) {
        int64_t left = self->pending_until - ly_mono_msec ();
        if (left > 0)
            poll (&item, 1, (int) left);            //  EINTR: look again
        conn = ly_db_session_try (self);
    }
    return conn;
}

bool
ly_db_session_pending (ly_db_session_t *self, int *fd, short *events)
{
    if (!self->pending)
        return false;
    if (fd)
        *fd = PQsocket (self->pending);
    if (events)
        *events = s_pending_events (self);
    return true;
}

PGresult *
ly_db_session_read (ly_db_session_t *self, const char *prepared, const char *sql,
                    int nparams, const char *const *params)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        PGconn *conn = ly_db_session_get (self);
        if (!conn)
            return NULL;
        PGresult *res = prepared? PQexecPrepared (conn, prepared, nparams, params, NULL, NULL, 0)
                                : PQexecParams (conn, sql, nparams, NULL, params, NULL, NULL, 0);
        ExecStatusType status = PQresultStatus (res);
        if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK || attempt == 1
        ||  !ly_db_session_check (self, res))
            return res;
        PQclear (res);
    }
    return NULL;
}

bool
ly_db_session_lost (PGconn *conn, const PGresult *res)
{
    if (PQstatus (conn) != CONNECTION_OK)
        return true;
    const char *state = res? PQresultErrorField (res, PG_DIAG_SQLSTATE): NULL;
    //  An error the server did not send (no SQLSTATE) is libpq's own about the
    //  connection: "server closed the connection unexpectedly", read on the first use of
    //  a session the server ended (a restart) while the status still says CONNECTION_OK
    if (res && !state && PQresultStatus (res) == PGRES_FATAL_ERROR)
        return true;
    return state && (strncmp (state, "08", 2) == 0 || streq (state, "57P01")
                  || streq (state, "57P02") || streq (state, "57P03"));
}

bool
ly_db_session_check (ly_db_session_t *self, const PGresult *failed)
{
    if (!self->conn || !ly_db_session_lost (self->conn, failed))
        return false;
    s_session_drop (self);
    self->next_connect = 0;             //  at once: the database may well be there again
    return true;
}

void
ly_db_session_drop (ly_db_session_t *self)
{
    if (self->conn)
        s_session_drop (self);
}
