/*  ly_store.c: the store actor (see ly_store.h).
    Design: the loop drains every waiting request (up to S_BATCH_ROWS rows) before it
    writes, so batches grow with load and a lone request is written at once. A batch is
    one transaction in two round trips: "BEGIN; COPY" into a temporary staging table (ON
    COMMIT DELETE ROWS) with a position per row; then one statement whose data-modifying
    CTEs insert the new (project, event_id) keys, the events whose key was new (the first
    position wins), and the outbox rows, NOTIFY the relays when there are pending outbox rows, and
    return the winning positions (every other row was a duplicate): "EXECUTE ly_batch;
    COMMIT", one query string.
    Two sessions (writers): while a batch is written on one, the requests that arrive
    wait, and they start a second batch on the other session only once S_OVERLAP_ROWS
    rows wait (so small batches grow instead of splitting, and a busy store uses a
    second core for PostgreSQL), or once the first of them has waited S_OVERLAP_MSEC
    (the running batch is slow: a stall, a lock). The loop does not wait for a batch:
    its session's socket is polled beside the router through both round trips (and
    before them while the session connects again), and each request is acknowledged
    as soon as its COMMIT has answered. Two batches may carry the same key: the second
    waits for the first's COMMIT and then counts a duplicate; both insert keys in
    (project, event_id) order, so they cannot deadlock each other (a deadlock reported
    anyway is retried once).
    When the database is down, requests are answered "unavailable" at once (the gateway
    says 503). When it hangs rather than refuses (every session's batch has been
    running for S_STALL_MSEC), so are the requests waiting and those in the hanging
    batches, and a batch whose session has not connected within S_STALL_MSEC. A batch
    that PostgreSQL refuses for its data is retried request by request so one bad
    request cannot sink the others. Maintenance (partitions ahead, expiry of
    deduplication keys) runs on an idle session, one statement at a time, and is
    answered beside the loop like a batch: one that waits (a lock, a hang) holds its
    session only. */
#include "ly_store.h"
#include "ly_actor.h"
#include "ly_config.h"
#include "ly_db.h"
#include "ly_event.h"
#include "ly_log.h"
#include "ly_metrics.h"
#include "ly_topology.h"

#define S_ACTOR "store"
//  A staging column of epoch microseconds as timestamptz: exact while they fit a
//  double's 53 bits (years 1685-2254), which the ingest's window keeps them within
#define S_FROM_USEC(column) "to_timestamp (0) + " column " * INTERVAL '1 microsecond'"
#define S_BATCH_ROWS 5000           /* rows per transaction, at most */
#define S_BATCH_REQUESTS 1000       /* requests per transaction, at most */
#define S_WRITERS 2                 /* sessions taking turns */
#define S_UNSENT_MSEC 5000          /* an acknowledgement waits this long for its gateway */
#define S_UNSENT_MAX 10000          /* acknowledgements waiting, at most */
#define S_UNSENT_POLL_MSEC 20       /* how often they are tried again */
#define S_OVERLAP_ROWS 400          /* rows waiting before a batch starts beside another:
                                       enough to carry a batch's fixed cost (~0.5 ms of
                                       PostgreSQL time) within ~10 % */
#define S_OVERLAP_MSEC 5            /* or once the first of them waited this long (the
                                       running batch is slow: a stall, a lock) */
#define S_PING_MSEC 1000            /* a health check's "SELECT 1" waits this long */
#define S_STALL_MSEC 2000           /* every session has had its batch this long: the
                                       database hangs (stopped, a full disk, a lock held);
                                       what waits is answered "unavailable" */
#define S_FAILING_MSEC 10000        /* a batch the database refused (a full disk) this
                                       recently: not ready; failures logged once per */
#define S_PARTITION_MSEC (3600 * 1000)  /* how often to create partitions ahead */
#define S_EXPIRE_MSEC (60 * 1000)       /* how often to look for expired dedup keys */
#define S_EXPIRE_ROWS 5000              /* keys forgotten per call, between batches */
#define S_RETRY_MSEC 1000               /* maintenance that could not run, again after */
#define S_DEDUP_MARGIN 86400           /* seconds a re-sent event is recognized beyond the
                                           timestamp window (LAYERS_EVENT_MAX_AGE) */

typedef struct {
    zframe_t *reply_to;     /* the gateway's routing id, owned */
    uint64_t request_id;    /* the gateway's request id */
    ly_msg_t *msg;          /* the EVENTS_STORE request, owned (rows, rejected) */
    uint32_t first_pos;     /* position of its first row in the batch */
    uint32_t rows;          /* rows it brought */
    uint32_t accepted;      /* rows that were new */
} s_request_t;

typedef enum {
    S_IDLE,                 /* no batch */
    S_CONNECTING,           /* the session's new connection on its way, nothing sent */
    S_BEGINNING,            /* "BEGIN; COPY" sent, COPY not yet taking rows */
    S_COPYING,              /* the rows sent, the COPY's answer not yet */
    S_EXECUTING,            /* "EXECUTE ly_batch; COMMIT" sent, the statement's rows not in */
    S_COMMITTING,           /* the statement's rows in, COMMIT's answer not yet */
    S_MAINTAINING           /* no batch: a maintenance statement sent, its answer not yet */
} s_phase_t;

//  The maintenance statements, one at a time on an idle session
typedef enum {
    S_ENSURE,               /* create the months of partitions ahead */
    S_DROP,                 /* drop the months past LAYERS_EVENT_RETENTION */
    S_EXPIRE                /* forget deduplication keys older than the window, and
                               idempotency keys older than a day */
} s_chore_t;

//  One session and the batch on it.
typedef struct {
    ly_db_session_t *session;   /* as layers_store, owned */
    PGconn *db;             /* the session's connection while a batch is on it, borrowed */
    s_phase_t phase;
    size_t from, to;        /* the requests of the batch being written */
    PGresult *winners;      /* the statement's rows, kept until COMMIT answers; owned */
    ly_result_t result;     /* when idle again: LY_OK, LY_INVALID or LY_UNAVAILABLE */
    bool deadlocked;        /* PostgreSQL chose it as a deadlock's victim */
    bool stale;             /* its connection was found broken before the batch began */
    bool retried;           /* the batch was begun again on a new connection */
    char err [1024];        /* why it failed */
    s_request_t batch [S_BATCH_REQUESTS];   /* its requests */
    size_t batch_size;
    uint32_t batch_rows;
    int64_t started;        /* when the batch started, monotonic usec */
    bool answered;          /* its requests were answered "unavailable": it hangs */
    s_chore_t chore;        /* the maintenance statement sent (S_MAINTAINING) */
} s_writer_t;

typedef struct {
    zsock_t *pipe;          /* actor pipe, borrowed */
    zsock_t *router;        /* "store" endpoint, owned */
    ly_tap_t *tap;          /* debug publisher, owned */
    s_writer_t writer [S_WRITERS];
    s_request_t waiting [S_BATCH_REQUESTS];     /* requests taken, not yet on a writer */
    size_t waiting_size;
    uint32_t waiting_rows;
    int64_t waiting_since;  /* monotonic msec the first of them was taken */
    int64_t next_partition; /* monotonic msec of the next partition check */
    int64_t next_expire;    /* monotonic msec of the next dedup key expiry */
    char *copy_sql;         /* the COPY statement, owned */
    ly_metric_t *committed; /* events written */
    ly_metric_t *duplicates;/* events already stored */
    ly_metric_t *batches;   /* transactions */
    ly_metric_t *commit_seconds;  /* batch write latency */
    ly_metric_t *beside_rows;     /* batches started beside a running one: rows waited */
    ly_metric_t *beside_wait;     /* ... the first request waited S_OVERLAP_MSEC */
    ly_metric_t *stalled;   /* requests answered "unavailable" while the database hung */
    bool verbose;           /* log every batch */
    zlistx_t *unsent;       /* s_unsent_t: acknowledgements to a gateway not connected */
    bool ack_stuck;         /* an acknowledgement timed out in this flush */
    bool wrote;             /* a batch was written since the last expiry */
    int64_t failing_since;  /* monotonic msec of the first of the batches failing in a
                               row (the database down or refusing), 0: the last wrote */
    int64_t failed_at;      /* monotonic msec the last of them failed */
    int64_t failure_logged; /* monotonic msec their last summary was logged */
    uint32_t failed_batches;    /* failed since that summary */
    uint32_t failed_requests;   /* ... their requests */
} self_t;

//  An acknowledgement for a gateway the router does not know (yet): right after the
//  store restarts, a gateway reconnects up to a few hundred ms after the ingest actors
//  whose requests the store then commits. It is sent again until S_UNSENT_MSEC.
typedef struct {
    zframe_t *reply_to;     /* the gateway's routing id, owned */
    zframe_t *ack;          /* the encoded EVENTS_ACK, owned */
    int64_t until;          /* monotonic msec to give up: the gateway is gone */
} s_unsent_t;

static void
s_unsent_destroy (s_unsent_t **self_p)
{
    if (*self_p) {
        zframe_destroy (&(*self_p)->reply_to);
        zframe_destroy (&(*self_p)->ack);
        free (*self_p);
        *self_p = NULL;
    }
}

static const char *s_insert_sql =
    "WITH fresh AS ("
    "  INSERT INTO sdk_event_ids (project_id, event_id, org_id, received_at)"
    "  SELECT DISTINCT ON (project_id, event_id) project_id, event_id, org_id,"
    "         " S_FROM_USEC ("received_at")
    "    FROM ly_staging ORDER BY project_id, event_id, pos"
    "  ON CONFLICT DO NOTHING RETURNING project_id, event_id),"
    " winners AS ("
    "  SELECT DISTINCT ON (s.project_id, s.event_id) s.*"
    "    FROM ly_staging s JOIN fresh f USING (project_id, event_id)"
    "   ORDER BY s.project_id, s.event_id, s.pos),"
    " ins AS ("
    "  INSERT INTO sdk_events (%s) SELECT %s FROM winners"
    "  RETURNING seq, received_at, org_id, project_id, event_id),"
    " due AS ("
    "  SELECT i.org_id, i.project_id, i.received_at, i.seq, i.event_id, l.layer,"
    "         CASE WHEN w.consent_ads IS FALSE THEN 'skipped' ELSE 'pending' END AS status,"
    "         CASE WHEN w.consent_ads IS FALSE THEN 'consent' END AS reason"
    "    FROM ins i JOIN winners w USING (project_id, event_id)"
    "   CROSS JOIN LATERAL (SELECT layer FROM project_layers l"
    "                        WHERE l.project_id = i.project_id AND l.enabled) l"
    "   WHERE l.layer <> 'apple_search_ads' OR w.attribution_token IS NOT NULL),"
    " outbox AS ("
    "  INSERT INTO relay_deliveries (org_id, project_id, event_received_at, event_seq,"
    "                                event_id, destination, status, reason)"
    "  SELECT * FROM due),"
    //  Wake the relays (delivered at COMMIT), only when there is something for them
    " wake AS ("
    "  SELECT pg_notify ('layers_relay', '')"
    "    FROM (SELECT 1 FROM due WHERE status = 'pending' LIMIT 1) any_row)"
    " SELECT pos FROM winners, (SELECT count (*) FROM wake) woken";

//  The staging table's type for a column of ly_event_copy_columns.
static const char *
s_column_type (const char *column)
{
    if (streq (column, "org_id") || streq (column, "project_id"))
        return "uuid";
    if (streq (column, "event_time") || streq (column, "received_at"))
        return "bigint";                //  epoch microseconds, converted in the statement
    if (streq (column, "properties"))
        return "jsonb";
    if (streq (column, "consent_ads"))
        return "boolean";
    return "text";
}

//  text with every whole-word occurrence of word replaced; caller frees.
static char *
s_replace_word (const char *text, const char *word, const char *replacement)
{
    size_t word_len = strlen (word);
    char *out = strdup ("");
    const char *rest = text;
    const char *hit;
    while ((hit = strstr (rest, word))) {
        bool whole = (hit == text || !(isalnum ((unsigned char) hit [-1]) || hit [-1] == '_'))
                  && !(isalnum ((unsigned char) hit [word_len]) || hit [word_len] == '_');
        char *longer = zsys_sprintf ("%s%.*s%s", out, (int) (hit - rest), rest,
                                     whole? replacement: word);
        free (out);
        out = longer;
        rest = hit + word_len;
    }
    char *longer = zsys_sprintf ("%s%s", out, rest);
    free (out);
    return longer;
}

//  What a new session runs first: the staging table, and the batch statement prepared.
static char *
s_session_setup (void *arg)
{
    self_t *self = (self_t *) arg;
    self->next_partition = 0;       //  a new session checks partitions at once
    char *columns = strdup (ly_event_copy_columns);
    char *ddl = strdup ("CREATE TEMPORARY TABLE ly_staging (pos integer NOT NULL");
    char *column = strtok (columns, ", ");
    while (column) {
        char *longer = zsys_sprintf ("%s, %s %s", ddl, column, s_column_type (column));
        free (ddl);
        ddl = longer;
        column = strtok (NULL, ", ");
    }
    free (columns);
    //  An attribution token is kept only for the relay to resolve: when no Apple
    //  delivery will be made for the event, it is never stored.
    char *token = s_replace_word (ly_event_copy_columns, "attribution_token",
        "CASE WHEN consent_ads IS NOT FALSE AND EXISTS (SELECT 1 FROM project_layers l"
        " WHERE l.project_id = winners.project_id AND l.layer = 'apple_search_ads'"
        " AND l.enabled) THEN attribution_token END");
    char *event_time = s_replace_word (token, "event_time", S_FROM_USEC ("event_time"));
    char *select = s_replace_word (event_time, "received_at", S_FROM_USEC ("received_at"));
    free (token);
    free (event_time);
    char *statement = zsys_sprintf (s_insert_sql, ly_event_copy_columns, select);
    free (select);
    //  The batch statement is planned once per session (a statement without parameters
    //  keeps its first plan), while batches go from one row to thousands and the staging
    //  table has no statistics: a plan made for a small batch must not be quadratic for
    //  a big one. So no nested loops (hash joins, linear for any size) but the LATERAL
    //  lookup of project_layers by its key. (JIT is off for every session, ly_db.c: the
    //  disabled nested loops' cost estimates would compile every execution for half a
    //  second.)
    char *setup = zsys_sprintf ("%s) ON COMMIT DELETE ROWS; SET enable_nestloop = off;"
                                " PREPARE ly_batch AS %s", ddl, statement);
    free (ddl);
    zstr_free (&statement);
    return setup;
}

//  Forgets a writer's session after a failure (failed: the result, may be NULL) that
//  may have ended it.
static void
s_db_failed (s_writer_t *w, const PGresult *failed)
{
    ly_db_session_check (w->session, failed);
    w->db = NULL;
}

static void
s_self_destroy (self_t **self_p)
{
    self_t *self = *self_p;
    if (self) {
        for (size_t i = 0; i < self->waiting_size; i++) {
            zframe_destroy (&self->waiting [i].reply_to);
            ly_msg_destroy (&self->waiting [i].msg);
        }
        for (size_t k = 0; k < S_WRITERS; k++) {
            s_writer_t *w = &self->writer [k];
            for (size_t i = 0; i < w->batch_size; i++) {
                zframe_destroy (&w->batch [i].reply_to);
                ly_msg_destroy (&w->batch [i].msg);
            }
            PQclear (w->winners);
            ly_db_session_destroy (&w->session);
        }
        zlistx_destroy (&self->unsent);
        zsock_destroy (&self->router);
        ly_tap_destroy (&self->tap);
        free (self->copy_sql);
        free (self);
        *self_p = NULL;
    }
}

static self_t *
s_self_new (zsock_t *pipe)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    self->pipe = pipe;
    self->router = ly_topology_open (S_ACTOR, "store");
    self->unsent = zlistx_new ();
    zlistx_set_destructor (self->unsent, (zlistx_destructor_fn *) s_unsent_destroy);
    self->tap = ly_tap_new (S_ACTOR);
    for (size_t k = 0; k < S_WRITERS; k++)
        self->writer [k].session = ly_db_session_new (LY_DB_STORE, S_ACTOR, s_session_setup, self);
    self->copy_sql = zsys_sprintf ("BEGIN; COPY ly_staging (pos, %s) FROM STDIN", ly_event_copy_columns);
    self->committed = ly_counter ("layers_store_events_total", "Events the store handled, by outcome",
                                  "outcome=\"stored\"");
    self->duplicates = ly_counter ("layers_store_events_total", NULL, "outcome=\"duplicate\"");
    self->batches = ly_counter ("layers_store_batches_total", "Transactions written by the store", NULL);
    self->commit_seconds = ly_histogram ("layers_store_batch_seconds", "Time to write one batch", NULL);
    self->beside_rows = ly_counter ("layers_store_beside_batches_total",
                                    "Batches started while the other session was writing, by the"
                                    " rule that started them", "rule=\"rows\"");
    self->beside_wait = ly_counter ("layers_store_beside_batches_total", NULL, "rule=\"wait\"");
    self->stalled = ly_counter ("layers_store_stalled_requests_total",
                                "Requests answered unavailable because the database had not"
                                " answered the store for 2 s", NULL);
    if (self->router) {
        zsock_set_router_mandatory (self->router, 1);
        zsock_set_sndtimeo (self->router, 2000);
    }
    if (!self->router || !self->tap)
        s_self_destroy (&self);
    return self;
}

//  Sends one request's acknowledgement to its gateway, once: the routing id goes with
//  it. The request's rows stay.
static void
s_reply (self_t *self, s_request_t *request, const char *status)
{
    ly_msg_t *ack = ly_msg_new (LY_MSG_EVENTS_ACK);
    ly_msg_set_uint (ack, LY_EVENTS_ACK_REQUEST_ID, request->request_id);
    ly_msg_set_str (ack, LY_EVENTS_ACK_STATUS, status);
    bool ok = streq (status, "ok");
    ly_msg_set_uint (ack, LY_EVENTS_ACK_ACCEPTED, ok? request->accepted: 0);
    ly_msg_set_uint (ack, LY_EVENTS_ACK_DUPLICATES, ok? request->rows - request->accepted: 0);
    if (request->msg && ly_msg_has (request->msg, LY_EVENTS_STORE_REJECTED)) {
        msgpack_sbuffer sbuf;
        msgpack_sbuffer_init (&sbuf);
        msgpack_packer pk;
        msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
        msgpack_pack_object (&pk, *ly_msg_obj (request->msg, LY_EVENTS_STORE_REJECTED));
        ly_msg_set_obj (ack, LY_EVENTS_ACK_REJECTED, sbuf.data, sbuf.size);
        msgpack_sbuffer_destroy (&sbuf);
    }
    //  With ROUTER_MANDATORY a full queue to the gateway blocks (up to the send
    //  timeout) instead of dropping the acknowledgement; a gateway the router does not
    //  know fails at once, and is tried again for a while. Once a send timed out in
    //  this flush, the rest do not wait.
    if (request->reply_to) {
        ly_tap_publish (self->tap, "out", ack);
        zframe_t *frame = ly_msg_encode_frame (ack, false);
        if (frame && ly_send_frame (self->router, request->reply_to, frame,
                                    self->ack_stuck? ZFRAME_DONTWAIT: 0)) {
            if (zmq_errno () == EHOSTUNREACH && zlistx_size (self->unsent) < S_UNSENT_MAX) {
                s_unsent_t *unsent = (s_unsent_t *) zmalloc (sizeof (s_unsent_t));
                unsent->reply_to = request->reply_to;
                request->reply_to = NULL;
                unsent->ack = frame;
                frame = NULL;
                unsent->until = ly_mono_msec () + S_UNSENT_MSEC;
                zlistx_add_end (self->unsent, unsent);
            }
            else {
                if (zmq_errno () == EAGAIN)
                    self->ack_stuck = true;
                ly_debug (S_ACTOR, "could not acknowledge request " LY_REQUEST_ID_FORMAT ": its gateway is %s",
                          request->request_id, self->ack_stuck? "not reading": "gone");
            }
        }
        zframe_destroy (&frame);
    }
    ly_msg_destroy (&ack);
    zframe_destroy (&request->reply_to);
}

//  Sends one request's acknowledgement (unless it was sent already) and forgets the
//  request.
static void
s_ack (self_t *self, s_request_t *request, const char *status)
{
    s_reply (self, request, status);
    ly_msg_destroy (&request->msg);
}

//  Answers every request taken and not yet on a session "unavailable".
static void
s_refuse_waiting (self_t *self)
{
    for (size_t i = 0; i < self->waiting_size; i++)
        s_ack (self, &self->waiting [i], "unavailable");
    self->waiting_size = 0;
    self->waiting_rows = 0;
}

//  Sends the acknowledgements waiting for their gateway that it now takes; forgets
//  those whose gateway stayed away.
static void
s_send_unsent (self_t *self)
{
    s_unsent_t *unsent = (s_unsent_t *) zlistx_first (self->unsent);
    while (unsent) {
        void *cursor = zlistx_cursor (self->unsent);
        bool done = ly_send_frame (self->router, unsent->reply_to, unsent->ack,
                                   ZFRAME_DONTWAIT) == 0;
        if (!done && zmq_errno () == EHOSTUNREACH && ly_mono_msec () >= unsent->until) {
            ly_debug (S_ACTOR, "dropped an acknowledgement: its gateway did not come back");
            done = true;
        }
        unsent = (s_unsent_t *) zlistx_next (self->unsent);
        if (done)
            zlistx_delete (self->unsent, cursor);
    }
}

//  Ends the batch on w with result (failed: the result that says why, or NULL for the
//  connection's own message): rolls back what is open, logs, and leaves w idle.
//  What a failed statement of a batch means: the data (SQLSTATE classes 22 and 23: a
//  row PostgreSQL refuses, found request by request), or the database (a full disk,
//  53100, and everything else: unavailable, to be sent again)
static ly_result_t
s_failure (const PGresult *res)
{
    const char *state = res? PQresultErrorField (res, PG_DIAG_SQLSTATE): NULL;
    bool data = state && (strncmp (state, "22", 2) == 0 || strncmp (state, "23", 2) == 0);
    return data? LY_INVALID: LY_UNAVAILABLE;
}

static void
s_write_end (s_writer_t *w, ly_result_t result, const PGresult *failed)
{
    if (result != LY_OK) {
        if (!w->err [0])
            ly_db_message (w->err, sizeof w->err, failed? PQresultErrorMessage (failed)
                                                        : PQerrorMessage (w->db));
        if (w->db && PQstatus (w->db) == CONNECTION_OK) {
            PGresult *rest;
            while ((rest = PQgetResult (w->db))) {
                bool copying = PQresultStatus (rest) == PGRES_COPY_IN;
                PQclear (rest);
                if (copying && PQputCopyEnd (w->db, "the store gave up the batch") != 1)
                    break;
            }
            if (PQtransactionStatus (w->db) != PQTRANS_IDLE) {
                char ignored [256];
                ly_db_exec (w->db, "ROLLBACK", ignored, sizeof ignored);
            }
        }
        if (w->db && PQstatus (w->db) != CONNECTION_OK)
            result = LY_UNAVAILABLE;
        s_db_failed (w, failed);
    }
    PQclear (w->winners);
    w->winners = NULL;
    w->result = result;
    w->phase = S_IDLE;
}

//  Goes on with w's batch while its session (re)connects (S_CONNECTING): once it is
//  connected, sends "BEGIN; COPY" (S_BEGINNING); while the database is down, leaves w
//  idle, unavailable. block: waits for the connection (at most 5 s).
static void
s_write_connect (self_t *self, s_writer_t *w, bool block)
{
    w->db = block? ly_db_session_get (w->session): ly_db_session_try (w->session);
    if (!w->db && ly_db_session_pending (w->session, NULL, NULL))
        return;                             //  on its way: its socket is polled
    if (!w->db) {
        snprintf (w->err, sizeof w->err, "the database is unreachable");
        w->result = LY_UNAVAILABLE;
        w->phase = S_IDLE;
        return;
    }
    w->phase = S_BEGINNING;
    if (!PQsendQuery (w->db, self->copy_sql)) {         //  "BEGIN; COPY ..."
        w->stale = ly_db_session_lost (w->db, NULL);
        s_write_end (w, LY_UNAVAILABLE, NULL);
    }
}

//  Starts writing requests [from, to) of w's batch: sends "BEGIN; COPY" (w is then
//  S_BEGINNING; s_write_read goes on from there), or first waits for the session's new
//  connection (S_CONNECTING) without holding the loop. When it cannot start, w is left
//  idle with the result.
static void
s_write_start (self_t *self, s_writer_t *w, size_t from, size_t to)
{
    w->from = from;
    w->to = to;
    w->err [0] = 0;
    w->started = ly_mono_usec ();
    w->answered = false;
    w->deadlocked = false;
    w->stale = false;
    w->phase = S_CONNECTING;
    s_write_connect (self, w, false);
}

//  Sends the rows of w's batch to the COPY, each with its batch position in front, and
//  ends it. False when the connection failed.
static bool
s_copy_rows (s_writer_t *w)
{
    uint32_t pos = 0;
    int sent = 1;
    for (size_t i = w->from; i < w->to && sent == 1; i++) {
        s_request_t *request = &w->batch [i];
        request->first_pos = pos;
        size_t size = 0;
        const char *rows = (const char *) ly_msg_bin (request->msg, LY_EVENTS_STORE_ROWS, &size);
        const char *end = rows + size;
        while (rows && rows < end && sent == 1) {
            const char *newline = memchr (rows, '\n', (size_t) (end - rows));
            size_t len = newline? (size_t) (newline - rows) + 1: (size_t) (end - rows);
            char prefix [16];
            int prefix_len = snprintf (prefix, sizeof prefix, "%u\t", pos++);
            sent = PQputCopyData (w->db, prefix, prefix_len);
            if (sent == 1)
                sent = PQputCopyData (w->db, rows, (int) len);
            if (sent == 1 && !newline)
                sent = PQputCopyData (w->db, "\n", 1);
            rows += len;
        }
        request->rows = pos - request->first_pos;
        request->accepted = 0;
    }
    return sent == 1 && PQputCopyEnd (w->db, NULL) == 1;
}

//  Credits each winning position of w's batch to its request (requests are in
//  position order).
static void
s_credit_winners (s_writer_t *w)
{
    for (int row = 0; row < PQntuples (w->winners); row++) {
        uint32_t winner = (uint32_t) strtoul (PQgetvalue (w->winners, row, 0), NULL, 10);
        size_t lo = w->from, hi = w->to;
        while (hi - lo > 1) {
            size_t mid = (lo + hi) / 2;
            if (w->batch [mid].first_pos <= winner)
                lo = mid;
            else
                hi = mid;
        }
        w->batch [lo].accepted++;
    }
}

//  Reads w's answers and goes on with its batch: those that have come (block false),
//  or until the batch is done. Each phase waits for PostgreSQL without holding the
//  loop: "BEGIN; COPY" (S_BEGINNING) until COPY takes rows, which are sent; the COPY's
//  answer (S_COPYING), then "EXECUTE ly_batch; COMMIT" is sent; the statement's rows
//  (S_EXECUTING); COMMIT's answer (S_COMMITTING). Before them, the session's new
//  connection (S_CONNECTING).
static void
s_write_read (self_t *self, s_writer_t *w, bool block)
{
    if (w->phase == S_CONNECTING) {
        s_write_connect (self, w, block);
        if (!block)
            return;                         //  the socket says when to go on
    }
    if (w->phase == S_IDLE)
        return;
    if (!block && !PQconsumeInput (w->db)) {
        w->stale = w->phase == S_BEGINNING;
        s_write_end (w, LY_UNAVAILABLE, NULL);
        return;
    }
    while (w->phase != S_IDLE && (block || !PQisBusy (w->db))) {
        PGresult *res = PQgetResult (w->db);
        ExecStatusType status = PQresultStatus (res);
        if (w->phase == S_BEGINNING) {
            if (status == PGRES_COPY_IN) {
                w->phase = S_COPYING;
                if (!s_copy_rows (w))
                    s_write_end (w, LY_UNAVAILABLE, NULL);
            }
            else
            if (status != PGRES_COMMAND_OK) {               //  BEGIN's is
                w->stale = ly_db_session_lost (w->db, res);
                s_write_end (w, LY_UNAVAILABLE, res);
            }
            PQclear (res);
            continue;
        }
        if (w->phase == S_COPYING) {
            if (!res) {
                //  The end of "BEGIN; COPY". The statement, then COMMIT: the first
                //  result is the statement's rows, the second COMMIT's; after an error
                //  PostgreSQL skips the COMMIT.
                w->phase = S_EXECUTING;
                if (!PQsendQuery (w->db, "EXECUTE ly_batch; COMMIT"))
                    s_write_end (w, LY_UNAVAILABLE, NULL);
            }
            else
            if (status != PGRES_COMMAND_OK)                 //  a row refused, or a fault
                s_write_end (w, s_failure (res), res);
            PQclear (res);
            continue;
        }
        if (w->phase == S_EXECUTING) {
            if (status == PGRES_TUPLES_OK) {
                w->winners = res;
                w->phase = S_COMMITTING;
                continue;
            }
            const char *state = res? PQresultErrorField (res, PG_DIAG_SQLSTATE): NULL;
            w->deadlocked = state && streq (state, "40P01");
            s_write_end (w, s_failure (res), res);
            PQclear (res);
            return;
        }
        if (status != PGRES_COMMAND_OK) {                   //  COMMIT's answer
            s_write_end (w, LY_UNAVAILABLE, res);
            PQclear (res);
            return;
        }
        PQclear (res);
        while ((res = PQgetResult (w->db)))
            PQclear (res);
        s_credit_winners (w);
        s_write_end (w, LY_OK, NULL);
    }
}

static const char *
s_status_word (ly_result_t result)
{
    return result == LY_OK? "ok": result == LY_INVALID? "error": "unavailable";
}

//  Logs how w's batch ended: rows the database refused, at once; a batch that failed
//  for the database (down, hanging, a full disk), the first of a run of them at once,
//  then a summary every S_FAILING_MSEC, so a database that refuses for minutes does not
//  write a warning per batch; and the run's end.
static void
s_note_result (self_t *self, s_writer_t *w)
{
    int64_t now = ly_mono_msec ();
    if (w->result == LY_INVALID) {
        ly_warning (S_ACTOR, "the database refused a request's rows: %s", w->err);
        return;
    }
    if (self->failing_since && (w->result == LY_OK || now - self->failed_at >= S_FAILING_MSEC)) {
        //  A run ends with a batch written, or S_FAILING_MSEC without a failure (as
        //  readiness says)
        ly_info (S_ACTOR, "%s: batches failed from %.1f s to %.1f s ago",
                 w->result == LY_OK? "writing again": "failures stopped",
                 (double) (now - self->failing_since) / 1000,
                 (double) (now - self->failed_at) / 1000);
        self->failing_since = 0;
    }
    if (w->result == LY_OK)
        return;
    self->failed_at = now;
    self->failed_batches++;
    self->failed_requests += (uint32_t) w->batch_size;
    if (!self->failing_since) {
        self->failing_since = self->failure_logged = now;
        ly_warning (S_ACTOR, "could not write %zu requests: %s", w->batch_size, w->err);
        self->failed_batches = self->failed_requests = 0;
    }
    else
    if (now - self->failure_logged >= S_FAILING_MSEC) {
        ly_warning (S_ACTOR, "could not write %u batches (%u requests) in %.1f s, the "
                    "last: %s", self->failed_batches, self->failed_requests,
                    (double) (now - self->failure_logged) / 1000, w->err);
        self->failure_logged = now;
        self->failed_batches = self->failed_requests = 0;
    }
}

//  True while the database refuses what the store writes: a batch failed for it within
//  S_FAILING_MSEC and none was written since (it may answer "SELECT 1" meanwhile: a full
//  disk). Readiness says no then; with no batch to try, it says yes again after that.
static bool
s_writes_fail (self_t *self)
{
    return self->failing_since && ly_mono_msec () - self->failed_at < S_FAILING_MSEC;
}

//  After w's batch is done: acknowledges every request in it. A deadlock's victim is
//  written again once; a batch PostgreSQL refused for its data is written again request
//  by request (each waited for) to find the one it refuses.
static void
s_complete (self_t *self, s_writer_t *w)
{
    self->ack_stuck = false;
    if (w->stale && !w->retried) {
        //  Its connection was found broken as the batch began (the database restarted
        //  since the session was last used): nothing of it ran. Once more on a new one.
        w->retried = true;
        s_write_start (self, w, 0, w->batch_size);
        if (w->phase != S_IDLE)
            return;                         //  the loop goes on with it
    }
    if (w->deadlocked) {
        s_write_start (self, w, 0, w->batch_size);
        s_write_read (self, w, true);
    }
    if (w->result == LY_INVALID && w->batch_size > 1) {
        for (size_t i = 0; i < w->batch_size; i++) {
            s_write_start (self, w, i, i + 1);
            s_write_read (self, w, true);
            s_ack (self, &w->batch [i], s_status_word (w->result));
            s_note_result (self, w);
        }
    }
    else {
        uint32_t stored = 0;
        for (size_t i = 0; i < w->batch_size; i++) {
            stored += w->batch [i].accepted;
            s_ack (self, &w->batch [i], s_status_word (w->result));
        }
        if (w->result == LY_OK) {
            self->wrote = true;
            ly_metric_add (self->committed, stored);
            ly_metric_add (self->duplicates, w->batch_rows - stored);
            ly_metric_add (self->batches, 1);
            ly_metric_observe (self->commit_seconds, (double) (ly_mono_usec () - w->started) / 1e6);
            if (self->verbose)
                ly_info (S_ACTOR, "wrote %zu requests, %u rows, %u new",
                         w->batch_size, w->batch_rows, stored);
        }
        s_note_result (self, w);
    }
    w->batch_size = 0;
    w->batch_rows = 0;
    w->retried = false;
}

static void s_chore_read (self_t *self, s_writer_t *w, bool block);
static void s_chore_done (self_t *self, s_writer_t *w, const PGresult *res);

//  Waits for every batch in flight and acknowledges it, and for maintenance: all
//  writers idle.
static void
s_finish_all (self_t *self)
{
    for (size_t k = 0; k < S_WRITERS; k++) {
        s_writer_t *w = &self->writer [k];
        while (w->phase == S_MAINTAINING)
            s_chore_read (self, w, true);
        if (w->phase != S_IDLE) {
            s_write_read (self, w, true);
            s_complete (self, w);
        }
    }
}

//  How long w's batch (or maintenance statement) has been running, msec.
static int64_t
s_running_msec (const s_writer_t *w)
{
    return (ly_mono_usec () - w->started) / 1000;
}

//  True when maintenance is due: partitions ahead, or, after a batch, expired
//  deduplication keys.
static bool
s_maintenance_due (self_t *self)
{
    int64_t now = ly_mono_msec ();
    return now >= self->next_partition || (self->wrote && now >= self->next_expire);
}

//  The first writer without a batch, or NULL; *busy (may be NULL) is set when another
//  has one.
static s_writer_t *
s_idle_writer (self_t *self, bool *busy)
{
    s_writer_t *idle = NULL;
    bool any_busy = false;
    for (size_t k = 0; k < S_WRITERS; k++) {
        s_writer_t *w = &self->writer [k];
        if (w->phase != S_IDLE)
            any_busy = true;
        else
        if (!idle)
            idle = w;
    }
    if (busy)
        *busy = any_busy;
    return idle;
}

//  Milliseconds until the database counts as hanging (0: it does): every session has a
//  batch, the youngest of them started S_STALL_MSEC ago. -1 while a session is idle.
static long
s_stall_in (self_t *self)
{
    int64_t shortest = INT64_MAX;
    for (size_t k = 0; k < S_WRITERS; k++) {
        s_writer_t *w = &self->writer [k];
        if (w->phase == S_IDLE)
            return -1;
        if (s_running_msec (w) < shortest)
            shortest = s_running_msec (w);
    }
    int64_t left = S_STALL_MSEC - shortest;
    return left > 0? (long) left: 0;
}

//  Milliseconds until the requests of w's batch count as held by a hanging database
//  (0: they do: the batch, or its wait for a new connection, has run S_STALL_MSEC);
//  -1 when none waits for its answer.
static long
s_batch_stall_in (s_writer_t *w)
{
    if (w->phase == S_IDLE || w->phase == S_MAINTAINING || w->answered)
        return -1;
    int64_t left = S_STALL_MSEC - s_running_msec (w);
    return left > 0? (long) left: 0;
}

//  True when a batch has been running for S_STALL_MSEC: the database may hang, and
//  nothing should wait for it with the loop held.
static bool
s_batch_hangs (self_t *self)
{
    for (size_t k = 0; k < S_WRITERS; k++) {
        s_writer_t *w = &self->writer [k];
        if (w->phase != S_IDLE && s_running_msec (w) >= S_STALL_MSEC)
            return true;
    }
    return false;
}

//  Answers "unavailable" the batches whose session has not connected within
//  S_STALL_MSEC (the database hangs): nothing of them was sent. The connection goes on.
static void
s_give_up_connecting (self_t *self)
{
    for (size_t k = 0; k < S_WRITERS; k++) {
        s_writer_t *w = &self->writer [k];
        if (w->phase != S_CONNECTING || s_batch_stall_in (w) != 0)
            continue;
        snprintf (w->err, sizeof w->err, "the database did not take a new connection "
                  "within %d ms", S_STALL_MSEC);
        ly_metric_add (self->stalled, w->batch_size);
        w->result = LY_UNAVAILABLE;
        w->phase = S_IDLE;
        s_complete (self, w);
    }
}

//  While the database hangs, answers "unavailable" (the gateway says 503, the client
//  retries later) instead of holding requests for the gateway's deadline: those of a
//  batch that has run S_STALL_MSEC, and, once every session has such a batch, those
//  that wait. A batch may still commit when the database answers again; its requests'
//  retries then count as duplicates.
static void
s_refuse_while_stalled (self_t *self)
{
    for (size_t k = 0; k < S_WRITERS; k++) {
        s_writer_t *w = &self->writer [k];
        if (w->phase == S_CONNECTING || s_batch_stall_in (w) != 0)
            continue;                       //  s_give_up_connecting's, or not yet
        for (size_t i = 0; i < w->batch_size; i++)
            if (w->batch [i].reply_to) {
                s_reply (self, &w->batch [i], "unavailable");
                ly_metric_add (self->stalled, 1);
            }
        w->answered = true;
    }
    if (s_stall_in (self) != 0)
        return;
    ly_metric_add (self->stalled, self->waiting_size);
    s_refuse_waiting (self);
}

//  Sends one maintenance statement on w, which then is S_MAINTAINING until its answer
//  (s_chore_read). Each answers a count.
static void
s_chore_send (self_t *self, s_writer_t *w, s_chore_t chore)
{
    char sql [160];
    if (chore == S_ENSURE)
        snprintf (sql, sizeof sql, "SELECT ly_ensure_event_partitions (3)");
    else
    if (chore == S_DROP)
        snprintf (sql, sizeof sql, "SELECT ly_drop_event_partitions ('%" PRId64 " seconds')",
                  ly_config.event_retention);
    else
        snprintf (sql, sizeof sql, "SELECT ly_expire_event_ids ('%" PRId64 " seconds', %d)",
                  ly_config.event_max_age + S_DEDUP_MARGIN, S_EXPIRE_ROWS);
    w->chore = chore;
    w->started = ly_mono_usec ();
    w->answered = false;
    w->phase = S_MAINTAINING;
    if (!PQsendQuery (w->db, sql))
        s_chore_done (self, w, NULL);
}

//  Takes the answer of w's maintenance statement (NULL: it could not be sent or read):
//  w is idle again, or has the next statement (partitions past their retention after
//  those ahead). A failure is warned, and w forgets its session (checked at its next
//  use).
static void
s_chore_done (self_t *self, s_writer_t *w, const PGresult *res)
{
    static const char *what [] = {
        [S_ENSURE] = "create event partitions ahead",
        [S_DROP] = "drop the months of events past their retention",
        [S_EXPIRE] = "expire deduplication and idempotency keys" };
    long count = -1;
    if (res && PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1)
        count = atol (PQgetvalue (res, 0, 0));
    else {
        char reason [512];
        ly_warning (S_ACTOR, "could not %s: %s", what [w->chore],
                    ly_db_message (reason, sizeof reason, res? PQresultErrorMessage (res)
                                                             : PQerrorMessage (w->db)));
    }
    w->phase = S_IDLE;
    if (w->chore == S_ENSURE && count < 0)
        self->next_partition = ly_mono_msec () + S_RETRY_MSEC;
    else
    if (w->chore == S_ENSURE && ly_config.event_retention > 0) {
        //  A month whose lock was busy goes at the next check, not sooner: its wait
        //  holds inserts back
        s_chore_send (self, w, S_DROP);
        return;
    }
    else
    if (w->chore == S_DROP && count > 0)
        ly_info (S_ACTOR, "dropped %ld month%s of events older than the retention",
                 count, count == 1? "": "s");
    else
    if (w->chore == S_EXPIRE && count >= S_EXPIRE_ROWS)
        self->next_expire = 0;              //  more: again after the next batch
    else
    if (w->chore == S_EXPIRE && count > 0 && self->verbose)
        ly_info (S_ACTOR, "forgot %ld deduplication keys older than %" PRId64 " seconds",
                 count, ly_config.event_max_age + S_DEDUP_MARGIN);
    if (count < 0)
        s_db_failed (w, res);
}

//  Reads the answer of w's maintenance statement: when it has come (block false), or
//  waiting for it.
static void
s_chore_read (self_t *self, s_writer_t *w, bool block)
{
    if (!block && !PQconsumeInput (w->db)) {
        s_chore_done (self, w, NULL);
        return;
    }
    if (!block && PQisBusy (w->db))
        return;
    PGresult *res = PQgetResult (w->db);
    PGresult *rest;
    while ((rest = PQgetResult (w->db)))
        PQclear (rest);
    s_chore_done (self, w, res);
    PQclear (res);
}

//  Starts the maintenance that is due on an idle session, if there is one: partitions
//  ahead (and past the retention) every S_PARTITION_MSEC; expired deduplication keys
//  at most every S_EXPIRE_MSEC after a batch, or after each batch while there are
//  more, so sdk_event_ids stays the size of its window and no batch waits behind one
//  long DELETE. Its statement is answered beside the loop, like a batch; none starts
//  while a batch hangs.
static void
s_maintain (self_t *self)
{
    if (!s_maintenance_due (self) || s_batch_hangs (self))
        return;
    s_writer_t *w = s_idle_writer (self, NULL);
    if (!w)
        return;
    int64_t now = ly_mono_msec ();
    w->db = ly_db_session_try (w->session);
    if (!w->db) {
        //  Batches go on meanwhile (and are answered "unavailable" while it is down)
        self->next_partition = now + S_RETRY_MSEC;
        self->next_expire = now + S_RETRY_MSEC;
        return;
    }
    if (now >= self->next_partition) {
        self->next_partition = now + S_PARTITION_MSEC;
        s_chore_send (self, w, S_ENSURE);
    }
    else {
        self->next_expire = now + S_EXPIRE_MSEC;
        self->wrote = false;
        s_chore_send (self, w, S_EXPIRE);
    }
}

//  Starts batches while requests wait: on an idle writer, and beside a busy one only
//  once S_OVERLAP_ROWS rows wait or the first has waited S_OVERLAP_MSEC.
static void
s_dispatch (self_t *self)
{
    while (self->waiting_size > 0) {
        bool busy;
        s_writer_t *idle = s_idle_writer (self, &busy);
        if (!idle || (busy && self->waiting_rows < S_OVERLAP_ROWS
                          && ly_mono_msec () - self->waiting_since < S_OVERLAP_MSEC))
            return;
        if (busy)
            ly_metric_add (self->waiting_rows >= S_OVERLAP_ROWS? self->beside_rows
                                                               : self->beside_wait, 1);
        memcpy (idle->batch, self->waiting, self->waiting_size * sizeof (s_request_t));
        idle->batch_size = self->waiting_size;
        idle->batch_rows = self->waiting_rows;
        self->waiting_size = 0;
        self->waiting_rows = 0;
        s_write_start (self, idle, 0, idle->batch_size);
        if (idle->phase == S_IDLE)
            s_complete (self, idle);        //  it could not start
    }
}

//  True when the database answers: "SELECT 1" on an idle session, waited for at most
//  S_PING_MSEC (a session that does not answer in time is dropped: it would hold the
//  next batch); with no session idle, unless a batch or maintenance has been running
//  for S_STALL_MSEC.
static bool
s_db_answers (self_t *self)
{
    s_writer_t *w = s_idle_writer (self, NULL);
    if (!w)
        return !s_batch_hangs (self);
    w->db = ly_db_session_try (w->session);
    if (!w->db)
        return false;               //  down, or a new connection not yet made
    int64_t until = ly_mono_msec () + S_PING_MSEC;
    bool sent = PQsendQuery (w->db, "SELECT 1") == 1;
    while (sent && PQisBusy (w->db)) {
        int64_t left = until - ly_mono_msec ();
        struct pollfd item = { PQsocket (w->db), POLLIN, 0 };
        if (left <= 0 || (poll (&item, 1, (int) left) < 0 && errno != EINTR)
        ||  !PQconsumeInput (w->db))
            break;
    }
    bool answered = sent && !PQisBusy (w->db), ok = false;
    PGresult *res, *failed = NULL;
    while (answered && (res = PQgetResult (w->db))) {
        ok = PQresultStatus (res) == PGRES_TUPLES_OK;
        if (!ok && !failed)
            failed = res;
        else
            PQclear (res);
    }
    if (!answered)
        ly_db_session_drop (w->session);
    else
    if (!ok)
        s_db_failed (w, failed);
    PQclear (failed);
    w->db = NULL;
    return ok;
}

static void
s_answer_ping (self_t *self, zframe_t *routing_id, ly_msg_t *msg)
{
    bool writes_fail = s_writes_fail (self);
    bool db_ok = !writes_fail && s_db_answers (self);
    ly_msg_t *reply = ly_msg_new (LY_MSG_PONG);
    ly_msg_set_uint (reply, LY_PONG_REQUEST_ID, ly_msg_uint (msg, LY_PING_REQUEST_ID));
    ly_msg_set_str (reply, LY_PONG_SENDER, S_ACTOR);
    ly_msg_set_bool (reply, LY_PONG_DB_OK, db_ok);
    ly_msg_set_str (reply, LY_PONG_DETAIL, db_ok? "the database is reachable"
                                         : writes_fail? "the database refuses writes"
                                         : "the database is unreachable");
    ly_send (self->router, self->tap, routing_id, &reply);
}

//  Takes one message from the router. Returns false when nothing was waiting.
static bool
s_take_one (self_t *self)
{
    if (!(zsock_events (self->router) & ZMQ_POLLIN))
        return false;
    zframe_t *routing_id = NULL;
    ly_msg_t *msg = ly_recv (self->router, self->tap, S_ACTOR, &routing_id);
    if (!msg)
        return true;
    if (ly_msg_type (msg) == LY_MSG_PING)
        s_answer_ping (self, routing_id, msg);
    else
    if (ly_msg_type (msg) == LY_MSG_EVENTS_STORE) {
        size_t reply_to_len = 0;
        const void *reply_to = ly_msg_bin (msg, LY_EVENTS_STORE_REPLY_TO, &reply_to_len);
        if (self->waiting_size == 0)
            self->waiting_since = ly_mono_msec ();
        s_request_t *request = &self->waiting [self->waiting_size++];
        request->reply_to = reply_to_len? zframe_new (reply_to, reply_to_len): NULL;
        request->request_id = ly_msg_uint (msg, LY_EVENTS_STORE_REQUEST_ID);
        size_t rows = 0;
        const char *data = (const char *) ly_msg_bin (msg, LY_EVENTS_STORE_ROWS, &rows);
        for (size_t i = 0; i < rows; i++)
            self->waiting_rows += data [i] == '\n';
        request->msg = msg;
        msg = NULL;
    }
    else
        ly_warning (S_ACTOR, "unexpected %s", ly_msg_type_name (ly_msg_type (msg)));
    zframe_destroy (&routing_id);
    ly_msg_destroy (&msg);
    return true;
}

//  True while more requests fit in the next batch.
static bool
s_room (self_t *self)
{
    return self->waiting_size < S_BATCH_REQUESTS && self->waiting_rows < S_BATCH_ROWS;
}

static const char *
s_status (void *self)
{
    return ly_db_session_try (((self_t *) self)->writer [0].session)? "ok": "database down";
}

//  The smaller of two poll timeouts (-1: none).
static long
s_sooner (long a, long b)
{
    return a < 0? b: b < 0? a: a < b? a: b;
}

//  How long the loop may sleep, msec (-1: until something comes): until waiting
//  requests have waited S_OVERLAP_MSEC, when they would then start a batch beside a
//  busy one, or until the database counts as hanging while they wait.
static long
s_poll_timeout (self_t *self)
{
    long timeout = zlistx_size (self->unsent)? S_UNSENT_POLL_MSEC: -1;
    if (self->waiting_size)
        timeout = s_sooner (timeout, s_stall_in (self));
    for (size_t k = 0; k < S_WRITERS; k++)
        timeout = s_sooner (timeout, s_batch_stall_in (&self->writer [k]));
    bool busy;
    if (!self->waiting_size || !s_idle_writer (self, &busy) || !busy)
        return timeout;
    int64_t left = S_OVERLAP_MSEC - (ly_mono_msec () - self->waiting_since);
    return s_sooner (timeout, left > 0? (long) left: 0);
}

//  The loop: the pipe, the tap, the router while the next batch has room, and the
//  socket of each session with a batch on it.
static void
s_loop (self_t *self)
{
    enum { PIPE, TAP, ROUTER, WRITERS };
    zmq_pollitem_t items [WRITERS + S_WRITERS];
    while (true) {
        memset (items, 0, sizeof items);
        items [PIPE].socket = zsock_resolve (self->pipe);
        items [TAP].socket = zsock_resolve (ly_tap_socket (self->tap));
        items [ROUTER].socket = zsock_resolve (self->router);
        items [PIPE].events = items [TAP].events = ZMQ_POLLIN;
        items [ROUTER].events = s_room (self)? ZMQ_POLLIN: 0;
        for (size_t k = 0; k < S_WRITERS; k++) {
            s_writer_t *w = &self->writer [k];
            zmq_pollitem_t *item = &items [WRITERS + k];
            int fd;
            short events;
            item->fd = -1;
            if (w->phase != S_IDLE && w->phase != S_CONNECTING) {
                item->fd = PQsocket (w->db);
                item->events = ZMQ_POLLIN;
            }
            else
            if (ly_db_session_pending (w->session, &fd, &events)) {
                item->fd = fd;              //  a new connection, with a batch or not
                item->events = events == POLLIN? ZMQ_POLLIN: ZMQ_POLLOUT;
            }
        }
        if (zmq_poll (items, WRITERS + S_WRITERS, s_poll_timeout (self)) == -1) {
            if (zsys_interrupted)
                break;
            continue;
        }
        if (items [PIPE].revents & ZMQ_POLLIN) {
            if (ly_actor_pipe (self->pipe, S_ACTOR, &self->verbose, s_status, self))
                break;
        }
        if (items [TAP].revents & ZMQ_POLLIN)
            ly_tap_handle (self->tap);
        for (size_t k = 0; k < S_WRITERS; k++) {
            s_writer_t *w = &self->writer [k];
            if (!items [WRITERS + k].revents)
                continue;
            if (w->phase == S_IDLE) {
                ly_db_session_try (w->session);     //  steps its new connection on
                continue;
            }
            if (w->phase == S_MAINTAINING) {
                s_chore_read (self, w, false);
                continue;
            }
            s_write_read (self, w, false);
            if (w->phase == S_IDLE)
                s_complete (self, w);
        }
        if (zlistx_size (self->unsent))
            s_send_unsent (self);
        //  Drain what is waiting, bounded, then start what can start.
        while (s_room (self) && s_take_one (self))
            ;
        s_dispatch (self);
        s_maintain (self);
        s_dispatch (self);
        s_give_up_connecting (self);
        s_refuse_while_stalled (self);
    }
    //  Write what was taken before leaving
    for (int round = 0; round < 3 && self->waiting_size; round++) {
        s_finish_all (self);
        s_dispatch (self);
    }
    s_finish_all (self);
    s_refuse_waiting (self);
}

void
ly_store_actor (zsock_t *pipe, void *args)
{
    self_t *self = s_self_new (pipe);
    ly_actor_ready (pipe, self != NULL);
    if (!self)
        return;
    //  Both sessions ready before the first batch (when the database is up), so that a
    //  second batch never waits for a connection
    for (size_t k = 0; k < S_WRITERS; k++)
        ly_db_session_get (self->writer [k].session);
    //  and the partitions ahead made
    s_maintain (self);
    s_finish_all (self);
    s_loop (self);
    s_self_destroy (&self);
}
