/*  ly_db.h: PostgreSQL sessions for each of the server's roles. The admin URL
    (LAYERS_DATABASE_URL, or the embedded cluster's socket) is used only to migrate and
    to set up roles; every actor logs in as its own least-privilege role:
      layers_api      partner API; owns nothing, no BYPASSRLS, tenant set per transaction
      layers_auth     key and token lookups by hash, nothing else
      layers_store    inserts events and the relay's queue, cross-tenant (BYPASSRLS)
      layers_relay    reads events, works the relay queue, cross-tenant (BYPASSRLS)
      layers_content  content jobs and containers; no privilege on sdk_events
    Role passwords are derived from the master key (HMAC-SHA256), so no password is
    stored anywhere. */
#ifndef LY_DB_H
#define LY_DB_H

#include "ly_prelude.h"

typedef enum {
    LY_DB_ADMIN,    /* the admin URL's own user: migrations and role set-up only */
    LY_DB_API,
    LY_DB_AUTH,
    LY_DB_STORE,
    LY_DB_RELAY,
    LY_DB_CONTENT
} ly_db_role_t;

/*  Sets the admin connection string and the master key; from main, once. */
void ly_db_init (const char *admin_url, const uint8_t master_key [32]);
const char *ly_db_role_name (ly_db_role_t role);
/*  A new session as role; NULL on failure with libpq's reason in err. Caller owns
    (PQfinish). */
PGconn *ly_db_connect (ly_db_role_t role, char *err, size_t errlen);
/*  Gives every server role LOGIN and its derived password (SCRAM-hashed client-side).
    conn is an admin session. 0 / -1. */
int ly_db_setup_roles (PGconn *conn, char *err, size_t errlen);
/*  The server options a session of ours connects with: the URL's own "options" (else
    $PGOPTIONS) and "-c jit=off" (every statement of ours is short and runs all the time,
    while JIT compiles for hundreds of milliseconds once an estimate passes
    jit_above_cost). Returns out. */
char *ly_db_options (const char *conninfo, char *out, size_t size);
/*  A libpq message (PQresultErrorMessage, PQerrorMessage) copied into out as one log
    line: without the newline (and spaces) libpq ends it with. Returns out. */
char *ly_db_message (char *out, size_t size, const char *message);
/*  Runs one statement without parameters and checks it succeeded; 0 / -1 (err). */
int ly_db_exec (PGconn *conn, const char *sql, char *err, size_t errlen);


/*  A role's session that reconnects by itself: at most once a second after a failure,
    on demand. setup (may be NULL) is called for every new connection and returns the
    statements the connection runs before it is handed out (prepared statements,
    temporary tables, SET), as one text (statements separated by ';', sent at once and
    answered without holding the caller: see ly_db_session_try), or NULL for none;
    the caller frees it. A set-up that fails drops that connection (logged). */
typedef struct _ly_db_session_t ly_db_session_t;
typedef char *(ly_db_setup_fn) (void *arg);

ly_db_session_t *ly_db_session_new (ly_db_role_t role, const char *actor,
                                    ly_db_setup_fn *setup, void *arg);
void ly_db_session_destroy (ly_db_session_t **self_p);
/*  The connected session, or NULL while the database is down (the reason was logged
    once per outage). A new connection and its set-up are waited for, at most 5 s.
    Borrowed. */
PGconn *ly_db_session_get (ly_db_session_t *self);
/*  The same without waiting: the connected session, or NULL while the database is down
    (this attempt failed, or the last one less than 1 s ago) or while a new connection
    is on its way, its set-up included (ly_db_session_pending; call again once its
    socket is ready: it is given up at a call 5 s after it began). */
PGconn *ly_db_session_try (ly_db_session_t *self);
/*  True while a new connection is on its way, with its socket and what to poll it for,
    POLLIN or POLLOUT (fd and events may be NULL). */
bool ly_db_session_pending (ly_db_session_t *self, int *fd, short *events);
/*  Runs a statement that only reads, so may run twice: prepared (the name of a
    statement the set-up prepared) or else sql, with nparams text params. A connection
    that turns out broken (the database restarted since it was last used: its first
    statement fails) is dropped and the statement run once more on a new one. The
    result (PQclear it; check its status), or NULL when the database is down. */
PGresult *ly_db_session_read (ly_db_session_t *self, const char *prepared, const char *sql,
                              int nparams, const char *const *params);
/*  After a failed statement (failed: its result, may be NULL): when the session is
    gone (ly_db_session_lost: a broken connection, or one the server ended, as after a
    restart) drops it, so that the next ly_db_session_get or _try connects again, at
    once. True when it dropped it. */
bool ly_db_session_check (ly_db_session_t *self, const PGresult *failed);
/*  True when a statement failed because its session is gone: the connection is
    broken, or res (may be NULL) says the server ended it (SQLSTATE class 08, or 57P01
    to 57P03: terminated, crash or admin shutdown, not accepting connections). */
bool ly_db_session_lost (PGconn *conn, const PGresult *res);
/*  Drops the connection whatever its state (a statement that does not answer), so the
    next ly_db_session_get reconnects. */
void ly_db_session_drop (ly_db_session_t *self);
#endif
