/*  ly_store.c: the store actor (see ly_store.h).
    Design: the loop drains every waiting request (up to S_BATCH_ROWS rows) before it
    writes, so batches grow with load and a lone request is written at once. A batch is
    one transaction in two round trips: "BEGIN; COPY" into a temporary staging table (ON
    COMMIT DELETE ROWS) with a position per row; then one statement whose data-modifying
    CTEs insert the new (project, event_id) keys, the events whose key was new (the first
    position wins), and the outbox rows, NOTIFY the relays when there are pending outbox rows, and
    return the winning positions (every other row was a duplicate): "EXECUTE ly_batch;
    COMMIT", one query string.
    When the database is down, requests are answered "unavailable" at once (the gateway
    says 503); a batch that PostgreSQL refuses for its data is retried request by request
    so one bad request cannot sink the others. */
#include "ly_store.h"
#include "ly_actor.h"
#include "ly_db.h"
#include "ly_event.h"
#include "ly_log.h"
#include "ly_metrics.h"
#include "ly_topology.h"

#define S_ACTOR "store"
#define S_BATCH_ROWS 5000           /* rows per transaction, at most */
#define S_BATCH_REQUESTS 1000       /* requests per transaction, at most */
#define S_PARTITION_MSEC (3600 * 1000)  /* how often to create partitions ahead */
#define S_EXPIRE_MSEC (60 * 1000)       /* how often to look for expired dedup keys */
#define S_EXPIRE_ROWS 5000              /* keys forgotten per call, between batches */
#define S_DEDUP_KEEP "8 days"           /* a re-sent event is recognized this long: the
                                           7-day timestamp window and a day's margin */

typedef struct {
    zframe_t *reply_to;     /* the gateway's routing id, owned */
    uint64_t request_id;    /* the gateway's request id */
    ly_msg_t *msg;          /* the EVENTS_STORE request, owned (rows, rejected) */
    uint32_t first_pos;     /* position of its first row in the batch */
    uint32_t rows;          /* rows it brought */
    uint32_t accepted;      /* rows that were new */
} s_request_t;

typedef struct {
    zsock_t *pipe;          /* actor pipe, borrowed */
    zsock_t *router;        /* "store" endpoint, owned */
    ly_tap_t *tap;          /* debug publisher, owned */
    ly_db_session_t *session;   /* as layers_store, owned */
    PGconn *db;             /* the session's connection for the batch at hand, borrowed */
    int64_t next_partition; /* monotonic msec of the next partition check */
    int64_t next_expire;    /* monotonic msec of the next dedup key expiry */
    s_request_t batch [S_BATCH_REQUESTS];   /* requests of the batch being built */
    size_t batch_size;      /* requests in batch */
    uint32_t batch_rows;    /* rows in batch */
    char *copy_sql;         /* the COPY statement, owned */
    ly_metric_t *committed; /* events written */
    ly_metric_t *duplicates;/* events already stored */
    ly_metric_t *batches;   /* transactions */
    ly_metric_t *commit_seconds;  /* batch write latency */
    bool verbose;           /* log every batch */
    bool ack_stuck;         /* an acknowledgement timed out in this flush */
} self_t;

static const char *s_insert_sql =
    "WITH fresh AS ("
    "  INSERT INTO sdk_event_ids (project_id, event_id, org_id, received_at)"
    "  SELECT DISTINCT ON (project_id, event_id) project_id, event_id, org_id, received_at"
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
        return "timestamptz";
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

//  Creates the staging table and prepares the batch statement on a new session.
static int
s_prepare_session (PGconn *db, void *arg)
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
    char *full = zsys_sprintf ("%s) ON COMMIT DELETE ROWS", ddl);
    free (ddl);
    free (columns);
    char err [1024];
    //  The batch statement is planned once per session (a statement without parameters
    //  keeps its first plan), while batches go from one row to thousands and the staging
    //  table has no statistics: a plan made for a small batch must not be quadratic for
    //  a big one. So no nested loops (hash joins, linear for any size) but the LATERAL
    //  lookup of project_layers by its key. (JIT is off for every session, ly_db.c: the
    //  disabled nested loops' cost estimates would compile every execution for half a
    //  second.)
    int rc = ly_db_exec (db, full, err, sizeof err);
    zstr_free (&full);
    if (rc == 0)
        rc = ly_db_exec (db, "SET enable_nestloop = off", err, sizeof err);
    if (rc == 0) {
        //  An attribution token is kept only for the relay to resolve: when no Apple
        //  delivery will be made for the event, it is never stored.
        char *select = s_replace_word (ly_event_copy_columns, "attribution_token",
            "CASE WHEN consent_ads IS NOT FALSE AND EXISTS (SELECT 1 FROM project_layers l"
            " WHERE l.project_id = winners.project_id AND l.layer = 'apple_search_ads'"
            " AND l.enabled) THEN attribution_token END");
        char *statement = zsys_sprintf (s_insert_sql, ly_event_copy_columns, select);
        free (select);
        char *prepare = zsys_sprintf ("PREPARE ly_batch AS %s", statement);
        zstr_free (&statement);
        rc = ly_db_exec (db, prepare, err, sizeof err);
        zstr_free (&prepare);
    }
    if (rc)
        ly_error (S_ACTOR, "could not prepare the store session: %s", err);
    return rc;
}

//  True when the database session works (reconnecting when allowed); sets self->db.
static bool
s_db_ready (self_t *self)
{
    self->db = ly_db_session_get (self->session);
    if (self->db && ly_mono_msec () >= self->next_partition) {
        char err [512];
        if (ly_db_exec (self->db, "SELECT ly_ensure_event_partitions (3)", err, sizeof err))
            ly_warning (S_ACTOR, "could not create event partitions ahead: %s", err);
        self->next_partition = ly_mono_msec () + S_PARTITION_MSEC;
    }
    return self->db != NULL;
}

//  Forgets the session after a failure that may have broken it.
static void
s_db_failed (self_t *self)
{
    ly_db_session_check (self->session);
    self->db = NULL;
}

//  Forgets a chunk of deduplication keys older than S_DEDUP_KEEP, at most every
//  S_EXPIRE_MSEC, or after each batch while there are more: sdk_event_ids stays the size
//  of its window, and no batch waits behind one long DELETE.
static void
s_expire (self_t *self)
{
    if (!self->db || ly_mono_msec () < self->next_expire)
        return;
    self->next_expire = ly_mono_msec () + S_EXPIRE_MSEC;
    char sql [128];
    snprintf (sql, sizeof sql, "SELECT ly_expire_event_ids ('%s', %d)", S_DEDUP_KEEP, S_EXPIRE_ROWS);
    PGresult *res = PQexec (self->db, sql);
    if (PQresultStatus (res) == PGRES_TUPLES_OK) {
        long removed = atol (PQgetvalue (res, 0, 0));
        if (removed >= S_EXPIRE_ROWS)
            self->next_expire = 0;              //  more: again after the next batch
        if (removed > 0 && self->verbose)
            ly_info (S_ACTOR, "forgot %ld deduplication keys older than " S_DEDUP_KEEP, removed);
    }
    else {
        char reason [512];
        ly_warning (S_ACTOR, "could not expire deduplication keys: %s",
                    ly_db_message (reason, sizeof reason, PQresultErrorMessage (res)));
        if (PQstatus (self->db) != CONNECTION_OK)
            s_db_failed (self);
    }
    PQclear (res);
}

static void
s_self_destroy (self_t **self_p)
{
    self_t *self = *self_p;
    if (self) {
        for (size_t i = 0; i < self->batch_size; i++) {
            zframe_destroy (&self->batch [i].reply_to);
            ly_msg_destroy (&self->batch [i].msg);
        }
        zsock_destroy (&self->router);
        ly_tap_destroy (&self->tap);
        ly_db_session_destroy (&self->session);
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
    self->tap = ly_tap_new (S_ACTOR);
    self->session = ly_db_session_new (LY_DB_STORE, S_ACTOR, s_prepare_session, self);
    self->copy_sql = zsys_sprintf ("BEGIN; COPY ly_staging (pos, %s) FROM STDIN", ly_event_copy_columns);
    self->committed = ly_counter ("layers_store_events_total", "Events the store handled, by outcome",
                                  "outcome=\"stored\"");
    self->duplicates = ly_counter ("layers_store_events_total", NULL, "outcome=\"duplicate\"");
    self->batches = ly_counter ("layers_store_batches_total", "Transactions written by the store", NULL);
    self->commit_seconds = ly_histogram ("layers_store_batch_seconds", "Time to write one batch", NULL);
    if (self->router) {
        zsock_set_router_mandatory (self->router, 1);
        zsock_set_sndtimeo (self->router, 2000);
    }
    if (!self->router || !self->tap)
        s_self_destroy (&self);
    return self;
}

//  Sends one request's acknowledgement to its gateway and forgets the request.
static void
s_ack (self_t *self, s_request_t *request, const char *status)
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
    //  timeout) instead of dropping the acknowledgement; a gone gateway fails at once.
    //  Once a send timed out in this flush, the rest do not wait.
    if (request->reply_to
    &&  (self->ack_stuck? ly_send (self->router, self->tap, request->reply_to, &ack)
                        : ly_send_wait (self->router, self->tap, request->reply_to, &ack))) {
        if (zmq_errno () == EAGAIN)
            self->ack_stuck = true;
        ly_debug (S_ACTOR, "could not acknowledge request %" PRIu64 ": its gateway is %s",
                  request->request_id, self->ack_stuck? "not reading": "gone");
    }
    ly_msg_destroy (&ack);
    zframe_destroy (&request->reply_to);
    ly_msg_destroy (&request->msg);
}

//  Writes requests [from, to) of the batch in one transaction. Returns LY_OK (each
//  request's accepted count set), LY_INVALID (PostgreSQL refused the data) or
//  LY_UNAVAILABLE (the database is down).
static ly_result_t
s_write (self_t *self, size_t from, size_t to)
{
    char err [1024] = "";
    ly_result_t result = LY_UNAVAILABLE;
    PGresult *res = NULL;
    if (!PQsendQuery (self->db, self->copy_sql)) {      //  "BEGIN; COPY ..."
        ly_db_message (err, sizeof err, PQerrorMessage (self->db));
        goto cleanup;
    }
    while ((res = PQgetResult (self->db)) && PQresultStatus (res) == PGRES_COMMAND_OK)
        PQclear (res);                                  //  BEGIN
    if (PQresultStatus (res) != PGRES_COPY_IN) {
        ly_db_message (err, sizeof err, res? PQresultErrorMessage (res): PQerrorMessage (self->db));
        goto rollback;
    }
    PQclear (res);
    res = NULL;
    //  Each row gets its batch position in front.
    uint32_t pos = 0;
    int sent = 1;
    for (size_t i = from; i < to && sent == 1; i++) {
        s_request_t *request = &self->batch [i];
        request->first_pos = pos;
        size_t size = 0;
        const char *rows = (const char *) ly_msg_bin (request->msg, LY_EVENTS_STORE_ROWS, &size);
        const char *end = rows + size;
        while (rows && rows < end && sent == 1) {
            const char *newline = memchr (rows, '\n', (size_t) (end - rows));
            size_t len = newline? (size_t) (newline - rows) + 1: (size_t) (end - rows);
            char prefix [16];
            int prefix_len = snprintf (prefix, sizeof prefix, "%u\t", pos++);
            sent = PQputCopyData (self->db, prefix, prefix_len);
            if (sent == 1)
                sent = PQputCopyData (self->db, rows, (int) len);
            if (sent == 1 && !newline)
                sent = PQputCopyData (self->db, "\n", 1);
            rows += len;
        }
        request->rows = pos - request->first_pos;
        request->accepted = 0;
    }
    if (sent != 1 || PQputCopyEnd (self->db, NULL) != 1) {
        ly_db_message (err, sizeof err, PQerrorMessage (self->db));
        goto rollback;
    }
    res = PQgetResult (self->db);
    if (PQresultStatus (res) != PGRES_COMMAND_OK) {
        ly_db_message (err, sizeof err, PQresultErrorMessage (res));
        result = LY_INVALID;
        goto rollback;
    }
    PQclear (res);
    while ((res = PQgetResult (self->db)))
        PQclear (res);
    //  The statement, then COMMIT: the first result is the statement's rows, the second
    //  COMMIT's; after an error PostgreSQL skips the COMMIT.
    if (!PQsendQuery (self->db, "EXECUTE ly_batch; COMMIT")) {
        ly_db_message (err, sizeof err, PQerrorMessage (self->db));
        goto rollback;
    }
    res = PQgetResult (self->db);
    PGresult *commit = res && PQresultStatus (res) == PGRES_TUPLES_OK? PQgetResult (self->db): NULL;
    PGresult *extra;
    while ((extra = PQgetResult (self->db)))
        PQclear (extra);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQresultStatus (commit) != PGRES_COMMAND_OK) {
        const PGresult *failed = PQresultStatus (res) != PGRES_TUPLES_OK? res: commit;
        ly_db_message (err, sizeof err, failed? PQresultErrorMessage (failed): PQerrorMessage (self->db));
        const char *state = PQresultErrorField (failed, PG_DIAG_SQLSTATE);
        if (state && (strncmp (state, "22", 2) == 0 || strncmp (state, "23", 2) == 0))
            result = LY_INVALID;
        PQclear (commit);
        goto rollback;
    }
    PQclear (commit);
    //  Credit each winning position to its request (requests are in position order).
    for (int row = 0; row < PQntuples (res); row++) {
        uint32_t winner = (uint32_t) strtoul (PQgetvalue (res, row, 0), NULL, 10);
        size_t lo = from, hi = to;
        while (hi - lo > 1) {
            size_t mid = (lo + hi) / 2;
            if (self->batch [mid].first_pos <= winner)
                lo = mid;
            else
                hi = mid;
        }
        self->batch [lo].accepted++;
    }
    PQclear (res);
    res = NULL;
    result = LY_OK;
    goto cleanup;

rollback:
    PQclear (res);
    res = NULL;
    if (PQstatus (self->db) == CONNECTION_OK && PQtransactionStatus (self->db) != PQTRANS_IDLE) {
        char ignored [256];
        ly_db_exec (self->db, "ROLLBACK", ignored, sizeof ignored);
    }
cleanup:
    PQclear (res);
    if (result != LY_OK) {
        ly_warning (S_ACTOR, "could not write %zu requests: %s", to - from, err);
        if (PQstatus (self->db) != CONNECTION_OK)
            result = LY_UNAVAILABLE;
        s_db_failed (self);
    }
    return result;
}

//  Writes the batch and acknowledges every request in it.
static void
s_flush (self_t *self)
{
    if (self->batch_size == 0)
        return;
    self->ack_stuck = false;
    int64_t started = ly_now_usec ();
    ly_result_t result = s_db_ready (self)? s_write (self, 0, self->batch_size): LY_UNAVAILABLE;
    if (result == LY_INVALID && self->batch_size > 1) {
        //  Find the request PostgreSQL refuses: write them one by one.
        for (size_t i = 0; i < self->batch_size; i++) {
            ly_result_t one = s_db_ready (self)? s_write (self, i, i + 1): LY_UNAVAILABLE;
            s_ack (self, &self->batch [i], one == LY_OK? "ok": one == LY_INVALID? "error": "unavailable");
        }
    }
    else {
        uint32_t stored = 0;
        for (size_t i = 0; i < self->batch_size; i++) {
            stored += self->batch [i].accepted;
            s_ack (self, &self->batch [i], result == LY_OK? "ok": result == LY_INVALID? "error": "unavailable");
        }
        if (result == LY_OK) {
            ly_metric_add (self->committed, stored);
            ly_metric_add (self->duplicates, self->batch_rows - stored);
            ly_metric_add (self->batches, 1);
            ly_metric_observe (self->commit_seconds, (double) (ly_now_usec () - started) / 1e6);
            if (self->verbose)
                ly_info (S_ACTOR, "wrote %zu requests, %u rows, %u new",
                         self->batch_size, self->batch_rows, stored);
        }
    }
    self->batch_size = 0;
    self->batch_rows = 0;
    s_expire (self);
}

static void
s_answer_ping (self_t *self, zframe_t *routing_id, ly_msg_t *msg)
{
    bool db_ok = s_db_ready (self);
    if (db_ok) {
        PGresult *res = PQexec (self->db, "SELECT 1");
        db_ok = PQresultStatus (res) == PGRES_TUPLES_OK;
        PQclear (res);
        if (!db_ok)
            s_db_failed (self);
    }
    ly_msg_t *reply = ly_msg_new (LY_MSG_PONG);
    ly_msg_set_uint (reply, LY_PONG_REQUEST_ID, ly_msg_uint (msg, LY_PING_REQUEST_ID));
    ly_msg_set_str (reply, LY_PONG_SENDER, S_ACTOR);
    ly_msg_set_bool (reply, LY_PONG_DB_OK, db_ok);
    ly_msg_set_str (reply, LY_PONG_DETAIL, db_ok? "database reachable": "database unreachable");
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
        s_request_t *request = &self->batch [self->batch_size++];
        request->reply_to = reply_to_len? zframe_new (reply_to, reply_to_len): NULL;
        request->request_id = ly_msg_uint (msg, LY_EVENTS_STORE_REQUEST_ID);
        size_t rows = 0;
        const char *data = (const char *) ly_msg_bin (msg, LY_EVENTS_STORE_ROWS, &rows);
        for (size_t i = 0; i < rows; i++)
            self->batch_rows += data [i] == '\n';
        request->msg = msg;
        msg = NULL;
    }
    else
        ly_warning (S_ACTOR, "unexpected %s", ly_msg_type_name (ly_msg_type (msg)));
    zframe_destroy (&routing_id);
    ly_msg_destroy (&msg);
    return true;
}

static void
s_handle_router (void *self_, zsock_t *sock)
{
    self_t *self = (self_t *) self_;
    //  Drain what is waiting, bounded, then write it as one batch.
    while (self->batch_size < S_BATCH_REQUESTS && self->batch_rows < S_BATCH_ROWS
       &&  s_take_one (self))
        ;
    s_flush (self);
}

static const char *
s_status (void *self)
{
    return ly_db_session_get (((self_t *) self)->session)? "ok": "database down";
}

void
ly_store_actor (zsock_t *pipe, void *args)
{
    self_t *self = s_self_new (pipe);
    ly_actor_ready (pipe, self != NULL);
    if (!self)
        return;
    s_db_ready (self);
    ly_actor_loop (pipe, S_ACTOR, self->tap, &self->verbose, s_status, self,
                   s_handle_router, self->router, NULL);
    s_self_destroy (&self);
}
