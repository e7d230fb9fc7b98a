/*  ly_relay.c: the relay actor (see ly_relay.h).
    Design:
    - Claim. One statement picks due rows (status 'pending', next_attempt_at <= now (),
      oldest first, FOR UPDATE SKIP LOCKED), makes them 'in_flight' with locked_by (this
      process: host, pid and a random tag) and locked_until (the lease), and returns them
      joined with their event and their project's layer settings. Two relays never hold
      the same row. Only 'pending' rows are ever claimed, so a replay (dead -> pending)
      cannot make the relay send a delivered event again.
    - Lease. While it holds rows the relay renews its leases every third of the lease; a
      request starts only while the lease outlives the request's timeout, and every
      outcome is written WHERE locked_by = us AND status = 'in_flight', so a relay that
      lost its lease changes nothing. Every relay puts expired leases back to 'pending':
      after a kill -9 only the rows that process held are sent again, with the same
      event_id, which the networks deduplicate on. A relay that could not renew in time
      (database away, process stalled) forgets what it had not written, sends nothing
      more for those rows and gives back what is still its own.
    - Wake-up. The relay LISTENs on "layers_relay" and claims at once when notified;
      without notifications it polls every LAYERS_RELAY_POLL_MS, at once again after a
      full claim, and at the earliest retry it scheduled itself.
    - Batching. Claimed rows are grouped per destination and project (one set of
      credentials): up to 1000 events per Meta or TikTok request, one request per Apple
      token, at most S_MAX_TRANSFERS requests at once over one curl multi handle
      (keep-alive, HTTP/2 where offered). A group's secret is decrypted once and wiped
      when its last request is done.
    - Outcomes. The destination modules classify each answer into a verdict: delivered
      and dead are final; retries wait with exponential backoff and jitter while inside
      the retry window; a throttled destination is paused for that project; a rejected
      request is split in halves until the refused event stands alone and is parked.
      Outcomes are queued and written in order; while the database is away they wait.
    - One loop: zmq_poll over the pipe, the tap, the database socket (notifications) and
      curl's sockets, with the next deadline as timeout. Database statements are
      synchronous and short. */
#include "ly_relay.h"
#include "ly_actor.h"
#include "ly_apple.h"
#include "ly_config.h"
#include "ly_crypto.h"
#include "ly_db.h"
#include "ly_delivery.h"
#include "ly_httpc.h"
#include "ly_log.h"
#include "ly_meta.h"
#include "ly_metrics.h"
#include "ly_tap.h"
#include "ly_tiktok.h"
#include <openssl/crypto.h>
#include <signal.h>
#include <sys/stat.h>

#define S_ACTOR "relay"
#define S_CHANNEL "layers_relay"        /* LISTEN channel for new outbox rows */
#define S_MAX_CLAIMS 5                  /* rows held at once: this many claims' worth */
#define S_CLAIM_LAYERS 2                /* a claim takes LAYERS_RELAY_CLAIM rows this many
                                           times: with Meta and TikTok both enabled each
                                           still gets full requests */
#define S_MAX_TRANSFERS LY_HTTPC_MAX_TRANSFERS     /* requests in flight at once */
#define S_MAX_BACKOFF_MSEC (3600 * 1000)
#define S_MAX_THROTTLE_MSEC (15 * 60 * 1000)
#define S_LEASE_MARGIN_MSEC 500         /* a request must end this long before the lease */
#define S_SWEEP_MSEC (10 * 60 * 1000)   /* how often expired Apple tokens are dropped */
#define S_PRUNE_MSEC (60 * 1000)        /* how often old delivery records are looked for */
#define S_PRUNE_ROWS 5000               /* rows looked at per pass, between other work */
#define S_DB_RETRY_MSEC 1000            /* wait after a database failure */
#define S_MAX_POLL_SOCKETS 256
#define S_CLOCK_MARGIN_MSEC 25          /* a scheduled retry is claimed this much later */
#define S_STATEMENT_TIMEOUT "15s"       /* no statement of ours may take longer */
#define S_TOKEN_MAX 4096                /* bytes of an access token, at most */
#define S_STOP_DRAIN_MSEC 1500          /* on $TERM, requests in flight may end this long
                                           (the supervisor kills after 3 s) */

enum { S_DELIVERED, S_DEAD, S_SKIPPED, S_RETRIED, S_OUTCOMES };
static const char *s_outcome_names [S_OUTCOMES] = { "delivered", "dead", "skipped", "retried" };

typedef struct _self_t self_t;

//  The claimed rows of one destination and project: one set of settings and secret
typedef struct {
    ly_destination_t destination;
    char project_id [40];       /* uuid text */
    bool layer_found;           /* the project has this layer */
    bool enabled;               /* and it is enabled */
    json_t *config;             /* the layer's settings, owned */
    uint8_t *sealed;            /* the sealed secret, owned (PQfreemem), NULL: none */
    size_t sealed_len;
    char *token;                /* the access token, owned, wiped when the batch goes */
    zlistx_t *rows;             /* ly_delivery_t, owned */
    size_t count;               /* rows in the batch */
    size_t bytes;               /* their size as PostgreSQL sent them */
    size_t jobs;                /* requests not finished */
} s_batch_t;

//  One request: some of a batch's rows
typedef struct {
    self_t *self;               /* borrowed */
    s_batch_t *batch;           /* borrowed, counted in batch->jobs */
    ly_delivery_t **rows;       /* the array owned, the deliveries borrowed */
    size_t count;
    int64_t sent;               /* monotonic msec it was sent, 0: not yet */
    void *handle;               /* in self->queued or self->sending */
    bool orphaned;              /* our lease ended while it was in flight: write nothing */
} s_job_t;

//  A change to some rows, waiting to be written
typedef struct {
    int64_t *ids;               /* delivery ids, owned */
    double delay;               /* seconds until the rows' next attempt */
    size_t count;
    const char *status;         /* pending, delivered, dead or skipped (static) */
    int attempt;                /* 1 when the rows were sent, 0 else */
    long last_status;           /* HTTP status, 0: NULL */
    char *last_response;        /* owned, NULL: none */
    char *reason;               /* owned, NULL: none */
    char *fbtrace_id;           /* owned, NULL: keep */
    char *request_id;           /* owned, NULL: keep */
    bool drop_token;            /* Apple: forget the events' attribution tokens */
    bool has_record;            /* Apple: record goes to attributions */
    ly_apple_record_t record;
    bool stripped;              /* written again without what the network sent */
    int64_t give_up;            /* monotonic msec; later our lease is surely gone */
} s_outcome_t;

//  A destination paused for a project because the network said so
typedef struct {
    int64_t until;              /* monotonic msec */
    int level;                  /* consecutive throttles */
    int64_t raised;             /* monotonic msec the level last rose: an answer to a
                                   request sent before is of the same throttle */
} s_throttle_t;

struct _self_t {
    zsock_t *pipe;              /* actor pipe, borrowed */
    ly_tap_t *tap;              /* debug publisher, owned */
    ly_db_session_t *session;   /* as layers_relay, owned */
    PGconn *db;                 /* the session's connection, borrowed; NULL while down */
    ly_httpc_t *httpc;          /* curl multi, owned */
    char worker [128];          /* our locked_by: "HOST~PIDNS:PID:TAG" */
    char local [96];            /* "HOST~PIDNS:": relays whose pids we can check */
    long backoff_ms;            /* LAYERS_RELAY_BACKOFF_MS */
    long lease_ms;              /* LAYERS_RELAY_LEASE_MS */
    long timeout_ms;            /* LAYERS_RELAY_TIMEOUT_MS */
    long apple_retry_ms;        /* LAYERS_RELAY_APPLE_RETRY_MS */
    long poll_ms;               /* LAYERS_RELAY_POLL_MS */
    long claim_rows;            /* LAYERS_RELAY_CLAIM */
    size_t held_max;            /* LAYERS_RELAY_HELD_BYTES */
    size_t held_bytes;          /* size of the rows in live batches */
    double row_bytes;           /* recent average size of a claimed row */
    double retry_window;        /* LAYERS_RELAY_RETRY_WINDOW_S */
    zlistx_t *queued;           /* s_job_t waiting to be sent, owned */
    zlistx_t *sending;          /* s_job_t in flight, owned */
    zlistx_t *outcomes;         /* s_outcome_t to write, owned */
    zhashx_t *throttles;        /* "destination/project" -> s_throttle_t, owned */
    size_t rows_held;           /* rows in live batches */
    int64_t lease_until;        /* monotonic msec until which our leases surely hold */
    unsigned leases_lost;       /* times our leases ran out */
    bool claim_blocked;         /* a claim waited for room: claim when rows are let go */
    int64_t stopping;           /* monotonic msec the drain after $TERM ends, 0: none */
    int64_t next_claim;         /* monotonic msec deadlines */
    int64_t next_heartbeat;
    int64_t next_reap;
    int64_t next_sweep;
    int64_t next_prune;
    long keep_days;             /* LAYERS_RELAY_KEEP_DAYS; 0: keep every record */
    int64_t prune_cursor;       /* delivery_id up to which old records were looked at */
    int64_t next_write;
    uint64_t random;            /* xorshift state for jitter */
    bool verbose;               /* log every request */
    ly_metric_t *events [LY_DEST_COUNT][S_OUTCOMES];    /* events by outcome */
    ly_metric_t *unmapped;      /* TikTok events without a TikTok name */
    ly_metric_t *requests [LY_DEST_COUNT];              /* requests sent */
    ly_metric_t *seconds [LY_DEST_COUNT];               /* request latency */
    ly_metric_t *due [LY_DEST_COUNT];                   /* deliveries due, not claimed */
    ly_metric_t *waited [LY_DEST_COUNT];                /* how late the oldest one is */
};

static void s_job_done (void *arg, const ly_httpc_response_t *response);


//  --------------------------------------------------------------------------
//  Settings, randomness

//  value with its thousands grouped ("1,073,741,824"): a long bare run of digits in a
//  log line would be taken for a phone number and redacted (ly_log.c). Returns out.
static char *
s_grouped (long value, char out [32])
{
    char digits [24];
    int len = snprintf (digits, sizeof digits, "%ld", value < 0? -value: value);
    size_t used = 0;
    if (value < 0)
        out [used++] = '-';
    for (int i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            out [used++] = ',';
        out [used++] = digits [i];
    }
    out [used] = 0;
    return out;
}

//  The knobs, from the environment: unset or empty is the default
typedef enum {
    S_BACKOFF, S_LEASE, S_TIMEOUT, S_RETRY_WINDOW, S_APPLE_RETRY, S_POLL, S_CLAIM,
    S_HELD, S_KEEP_DAYS, S_KNOBS
} s_knob_t;

static const struct {
    const char *name;
    long fallback, low, high;
} s_knobs [S_KNOBS] = {
    [S_BACKOFF]      = { "LAYERS_RELAY_BACKOFF_MS", 1000, 1, 3600 * 1000 },
    [S_LEASE]        = { "LAYERS_RELAY_LEASE_MS", 120000, 1000, 3600 * 1000 },
    [S_TIMEOUT]      = { "LAYERS_RELAY_TIMEOUT_MS", 30000, 100, 600 * 1000 },
    [S_RETRY_WINDOW] = { "LAYERS_RELAY_RETRY_WINDOW_S", 24 * 3600, 1, 30 * 24 * 3600 },
    [S_APPLE_RETRY]  = { "LAYERS_RELAY_APPLE_RETRY_MS", 5000, 1, 3600 * 1000 },
    [S_POLL]         = { "LAYERS_RELAY_POLL_MS", 200, 10, 60000 },
    [S_CLAIM]        = { "LAYERS_RELAY_CLAIM", 1000, 1, LY_META_MAX_EVENTS },
    [S_HELD]         = { "LAYERS_RELAY_HELD_BYTES", 64L << 20, 64L << 10, 4L << 30 },
    [S_KEEP_DAYS]    = { "LAYERS_RELAY_KEEP_DAYS", 30, 0, 36500 },
};

//  The knob's value into *value; -1 (reason in err) when it is set to something else
//  than a number in its range.
static int
s_knob_read (s_knob_t knob, long *value, char *err, size_t errlen)
{
    *value = s_knobs [knob].fallback;
    const char *text = ly_config_getenv (s_knobs [knob].name);
    if (!text || !*text)
        return 0;
    char *end = NULL;
    errno = 0;
    long number = strtol (text, &end, 10);
    if (*text < '0' || *text > '9'          //  digits only: no sign, no white space
    ||  *end || errno || number < s_knobs [knob].low || number > s_knobs [knob].high) {
        char from [32], to [32];
        snprintf (err, errlen, "%s=\"%.32s\" is not a number from %s to %s",
                  s_knobs [knob].name, text, s_grouped (s_knobs [knob].low, from),
                  s_grouped (s_knobs [knob].high, to));
        return -1;
    }
    *value = number;
    return 0;
}

int
ly_relay_settings_check (char *err, size_t errlen)
{
    long value;
    for (s_knob_t knob = 0; knob < S_KNOBS; knob++)
        if (s_knob_read (knob, &value, err, errlen))
            return -1;
    return 0;
}

//  A knob (layersd checked them all at start: a bad one here is ignored, said so)
static long
s_knob (s_knob_t knob)
{
    long value;
    char err [160];
    if (s_knob_read (knob, &value, err, sizeof err))
        ly_warning (S_ACTOR, "ignored %s", err);
    return value;
}

//  A random number in [0, 1).
static double
s_random (self_t *self)
{
    uint64_t x = self->random;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    self->random = x;
    return (double) (x >> 11) / (double) (1ULL << 53);
}

//  Seconds to wait before attempt number attempt + 1: the backoff doubled per attempt,
//  capped, the upper half of it drawn at random (jitter).
static double
s_backoff (self_t *self, int attempt)
{
    double delay = (double) self->backoff_ms;
    for (int i = 1; i < attempt && delay < S_MAX_BACKOFF_MSEC; i++)
        delay *= 2;
    if (delay > S_MAX_BACKOFF_MSEC)
        delay = S_MAX_BACKOFF_MSEC;
    return (delay / 2 + s_random (self) * delay / 2) / 1000.0;
}


//  --------------------------------------------------------------------------
//  Database session

static const char *s_claim_sql =
    "WITH due AS ("
    "  SELECT delivery_id FROM relay_deliveries"
    "   WHERE status = 'pending' AND next_attempt_at <= now ()"
    "     AND NOT (destination || '/' || project_id::text = ANY ($4::text []))"
    "   ORDER BY next_attempt_at LIMIT $1"
    "   FOR UPDATE SKIP LOCKED),"
    " c AS ("
    "  UPDATE relay_deliveries d"
    "     SET status = 'in_flight', locked_by = $2,"
    "         locked_until = now () + make_interval (secs => $3::float8), updated_at = now ()"
    "    FROM due WHERE d.delivery_id = due.delivery_id"
    "  RETURNING d.*)"
    " SELECT %s, l.project_id IS NOT NULL, coalesce (l.enabled, false),"
    "        CASE WHEN c.destination = 'tiktok'"               //  its app.app_id on iOS
    "             THEN l.config || jsonb_strip_nulls (jsonb_build_object ('app_store_id', p.app_store_id))"
    "             ELSE l.config END::text,"
    "        l.secret_ciphertext"
    "   FROM c"
    "   LEFT JOIN sdk_events e ON e.received_at = c.event_received_at"
    "        AND e.seq = c.event_seq AND e.project_id = c.project_id"
    "   LEFT JOIN project_layers l ON l.project_id = c.project_id AND l.layer = c.destination"
    "   LEFT JOIN projects p ON p.project_id = c.project_id";

static const struct {
    const char *name;
    const char *sql;
} s_statements [] = {
    { "heartbeat",
      "UPDATE relay_deliveries SET locked_until = now () + make_interval (secs => $2::float8)"
      " WHERE status = 'in_flight' AND locked_by = $1 AND locked_until > now ()" },
    { "reap",
      "WITH expired AS ("
      "  SELECT delivery_id FROM relay_deliveries"
      "   WHERE status = 'in_flight' AND locked_until < now ()"
      "   LIMIT 10000 FOR UPDATE SKIP LOCKED)"
      " UPDATE relay_deliveries d SET status = 'pending', locked_by = NULL, locked_until = NULL,"
      "        next_attempt_at = now (), reason = 'lease expired', updated_at = now ()"
      "   FROM expired WHERE d.delivery_id = expired.delivery_id" },
    { "pause",                      //  for every relay (migration 0007)
      "INSERT INTO relay_pauses (org_id, project_id, destination, paused_until)"
      " SELECT l.org_id, l.project_id, l.layer, now () + make_interval (secs => $3::float8)"
      "   FROM project_layers l WHERE l.project_id = $1::uuid AND l.layer = $2"
      " ON CONFLICT (project_id, destination) DO UPDATE"
      "   SET paused_until = greatest (relay_pauses.paused_until, EXCLUDED.paused_until)" },
    { "pauses",
      "SELECT destination || '/' || project_id::text,"
      "       ceil (extract (epoch FROM paused_until - now ()) * 1000)::bigint"
      "  FROM relay_pauses WHERE paused_until > now ()" },
    { "backlog",
      "SELECT destination, count (*), extract (epoch FROM now () - min (next_attempt_at))"
      "  FROM relay_deliveries"
      " WHERE status = 'pending' AND next_attempt_at <= now () GROUP BY destination" },
    { "prune",
      "WITH scanned AS ("
      "  SELECT delivery_id, status, created_at FROM relay_deliveries"
      "   WHERE delivery_id > $1 ORDER BY delivery_id LIMIT " LY_TEXT (S_PRUNE_ROWS) "),"
      " old AS (SELECT delivery_id, status FROM scanned"
      "          WHERE created_at < now () - make_interval (days => $2::integer)),"
      " gone AS ("
      "  DELETE FROM relay_deliveries d"
      "   WHERE d.delivery_id = ANY (ARRAY (SELECT delivery_id FROM old"
      "                                      WHERE status IN ('delivered', 'skipped')))"
      "     AND d.status IN ('delivered', 'skipped')"
      "  RETURNING 1)"
      " SELECT (SELECT max (delivery_id) FROM old), (SELECT count (*) FROM old),"
      "        (SELECT count (*) FROM scanned), (SELECT count (*) FROM gone)" },
    { "held_here",
      "SELECT DISTINCT locked_by FROM relay_deliveries"
      " WHERE status = 'in_flight' AND starts_with (locked_by, $1)" },
    { "release_gone",
      "UPDATE relay_deliveries SET status = 'pending', locked_by = NULL, locked_until = NULL,"
      "       next_attempt_at = now (), reason = 'relay gone', updated_at = now ()"
      " WHERE status = 'in_flight' AND locked_by = $1" },
    { "release",
      "UPDATE relay_deliveries SET status = 'pending', locked_until = NULL,"
      "       next_attempt_at = now (), updated_at = now ()"
      " WHERE status = 'in_flight' AND locked_by = $1" },
    { "finish",
      "UPDATE relay_deliveries d"
      "   SET status = $2::text, attempts = d.attempts + $3::integer,"
      "       next_attempt_at = now () + make_interval (secs => $9::float8),"
      "       locked_until = NULL, last_status = $4::integer, last_response = $5::text,"
      "       reason = $6::text, fbtrace_id = coalesce ($7::text, d.fbtrace_id),"
      "       request_id = coalesce ($8::text, d.request_id),"
      "       delivered_at = CASE WHEN $2::text = 'delivered' THEN now () ELSE d.delivered_at END,"
      "       updated_at = now ()"
      "  FROM unnest ($1::bigint []) AS u (id)"
      " WHERE d.delivery_id = u.id AND d.status = 'in_flight' AND d.locked_by = $10" },
    { "attribution",
      "INSERT INTO attributions (org_id, project_id, event_received_at, event_seq, event_id,"
      "        user_id, attribution, apple_org_id, campaign_id, ad_group_id, keyword_id, ad_id,"
      "        conversion_type, country_or_region, claim_type, click_date, raw)"
      " SELECT d.org_id, d.project_id, d.event_received_at, d.event_seq, d.event_id, e.user_id,"
      "        $2::boolean, $3::bigint, $4::bigint, $5::bigint, $6::bigint, $7::bigint,"
      "        $8::text, $9::text, $10::text, $11::timestamptz, $12::jsonb"
      "   FROM relay_deliveries d"
      "   LEFT JOIN sdk_events e ON e.received_at = d.event_received_at AND e.seq = d.event_seq"
      "  WHERE d.delivery_id = $1 AND d.status = 'in_flight' AND d.locked_by = $13"
      " ON CONFLICT (project_id, event_id) DO NOTHING" },
    { "drop_token",
      "UPDATE sdk_events e SET attribution_token = NULL"
      "  FROM relay_deliveries d"
      " WHERE d.delivery_id = ANY ($1::bigint []) AND e.received_at = d.event_received_at"
      "   AND e.seq = d.event_seq AND e.attribution_token IS NOT NULL" },
    { "sweep",
      "WITH old AS ("
      "  SELECT delivery_id, event_received_at, event_seq FROM relay_deliveries"
      "   WHERE status = 'dead' AND destination = 'apple_search_ads' AND reason = 'not found'"
      "     AND event_received_at < now () - interval '24 hours'"
      "   LIMIT 1000 FOR UPDATE SKIP LOCKED),"
      " dropped AS ("
      "  UPDATE sdk_events e SET attribution_token = NULL FROM old"
      "   WHERE e.received_at = old.event_received_at AND e.seq = old.event_seq"
      "     AND e.attribution_token IS NOT NULL"
      "  RETURNING 1)"
      " UPDATE relay_deliveries d SET reason = 'token expired', updated_at = now ()"
      "   FROM old WHERE d.delivery_id = old.delivery_id" },
};
#define S_STATEMENTS (sizeof s_statements / sizeof s_statements [0])

//  What a new session runs first: its statements prepared, its settings, and LISTEN.
static char *
s_session_setup (void *arg)
{
    char *claim = zsys_sprintf (s_claim_sql, ly_delivery_columns);
    char *setup = zsys_sprintf ("PREPARE claim AS %s", claim);
    zstr_free (&claim);
    for (size_t i = 0; i < S_STATEMENTS; i++) {
        char *longer = zsys_sprintf ("%s; PREPARE %s AS %s", setup, s_statements [i].name,
                                     s_statements [i].sql);
        zstr_free (&setup);
        setup = longer;
    }
    //  A commit of ours lost in a crash of PostgreSQL itself only means a batch sent
    //  again with the same event_ids, as after a kill -9 of a relay: no need to wait
    //  for the WAL flush of every claim and outcome
    char *longer = zsys_sprintf ("%s; SET statement_timeout = '" S_STATEMENT_TIMEOUT "';"
                                 " SET synchronous_commit = off; LISTEN " S_CHANNEL, setup);
    zstr_free (&setup);
    return longer;
}

//  The connection, reconnecting when allowed; NULL while the database is down.
static PGconn *
s_db (self_t *self)
{
    self->db = ly_db_session_get (self->session);
    return self->db;
}

static void
s_db_failed (self_t *self, const char *what, const PGresult *res)
{
    char reason [512];
    ly_warning (S_ACTOR, "could not %s: %s", what, ly_db_message (reason, sizeof reason,
                res? PQresultErrorMessage (res): self->db? PQerrorMessage (self->db): ""));
    ly_db_session_check (self->session, res);
    self->db = NULL;
}

//  Notifications say new rows are due: claim at once.
static void
s_drain_notifies (self_t *self)
{
    if (!self->db)
        return;
    PGnotify *notify;
    while ((notify = PQnotifies (self->db))) {
        self->next_claim = ly_mono_msec ();
        PQfreemem (notify);
    }
}

//  "{1,2,3}" for a bigint [] parameter. Caller owns.
static char *
s_id_array (const int64_t *ids, size_t count)
{
    char *text = (char *) malloc (count * 21 + 3);
    if (!text)
        return NULL;
    size_t used = 0;
    text [used++] = '{';
    for (size_t i = 0; i < count; i++)
        used += (size_t) sprintf (text + used, "%s%" PRId64, i? ",": "", ids [i]);
    text [used++] = '}';
    text [used] = 0;
    return text;
}


//  --------------------------------------------------------------------------
//  Outcomes

static s_outcome_t *
s_outcome_new (self_t *self, const char *status, size_t capacity)
{
    s_outcome_t *outcome = (s_outcome_t *) calloc (1, sizeof (s_outcome_t));
    assert (outcome);
    outcome->ids = (int64_t *) calloc (capacity? capacity: 1, sizeof (int64_t));
    assert (outcome->ids);
    outcome->status = status;
    outcome->give_up = self->lease_until;
    return outcome;
}

static void
s_outcome_destroy (s_outcome_t **outcome_p)
{
    s_outcome_t *outcome = *outcome_p;
    if (outcome) {
        free (outcome->ids);
        free (outcome->last_response);
        free (outcome->reason);
        free (outcome->fbtrace_id);
        free (outcome->request_id);
        ly_apple_record_reset (&outcome->record);
        free (outcome);
        *outcome_p = NULL;
    }
}

static void
s_outcome_add (s_outcome_t *outcome, const ly_delivery_t *delivery)
{
    outcome->ids [outcome->count++] = delivery->id;
}

//  Fills what an answer tells about the rows: status, body (without the secret), ids.
static void
s_outcome_answer (s_outcome_t *outcome, ly_destination_t destination,
                  const ly_httpc_response_t *response, const ly_verdict_t *verdict,
                  const char *secret)
{
    if (!response)
        return;
    outcome->last_status = response->status;
    if (response->result != CURLE_OK && response->error) {
        char text [LY_RESPONSE_MAX];
        snprintf (text, sizeof text, "%s", response->error);
        outcome->last_response = ly_response_text (text, strlen (text), secret);
    }
    else
    if (response->body_len)
        outcome->last_response = ly_response_text (response->body, response->body_len, secret);
    if (verdict && *verdict->trace_id) {
        if (destination == LY_DEST_META)
            outcome->fbtrace_id = strdup (verdict->trace_id);
        else
        if (destination == LY_DEST_TIKTOK)
            outcome->request_id = strdup (verdict->trace_id);
    }
}

static void
s_outcome_queue (self_t *self, s_outcome_t **outcome_p, ly_destination_t destination,
                 int metric)
{
    s_outcome_t *outcome = *outcome_p;
    *outcome_p = NULL;
    if (!outcome)
        return;
    if (outcome->count == 0) {
        s_outcome_destroy (&outcome);
        return;
    }
    //  An Apple row done for good forgets its event's attribution token, but a row given
    //  up on because Apple did not know the token yet: a replay may still use it (the
    //  sweep drops it once the token's life is over)
    if (destination == LY_DEST_APPLE && !streq (outcome->status, "pending")
    &&  !(outcome->reason && streq (outcome->reason, "not found")))
        outcome->drop_token = true;
    if (metric >= 0)
        ly_metric_add (self->events [destination][metric], (double) outcome->count);
    zlistx_add_end (self->outcomes, outcome);
}

static const char *
s_param_long (char *buffer, size_t size, long value)
{
    snprintf (buffer, size, "%ld", value);
    return buffer;
}

//  Writes one outcome. LY_OK, LY_INVALID (PostgreSQL refused its data) or
//  LY_UNAVAILABLE (the database is away).
static ly_result_t
s_write (self_t *self, s_outcome_t *outcome)
{
    PGresult *res = NULL;
    char *ids = s_id_array (outcome->ids, outcome->count);
    ly_result_t result = LY_UNAVAILABLE;
    bool transaction = outcome->has_record || outcome->drop_token;
    const char *failed = "write outcomes";
    if (!ids)
        goto cleanup;
    if (transaction) {
        res = PQexec (self->db, "BEGIN");
        if (PQresultStatus (res) != PGRES_COMMAND_OK)
            goto failure;
        PQclear (res);
        res = NULL;
    }
    if (outcome->has_record) {
        const ly_apple_record_t *record = &outcome->record;
        char id [24], org [24], campaign [24], group [24], keyword [24], ad [24];
        snprintf (id, sizeof id, "%" PRId64, outcome->ids [0]);
        snprintf (org, sizeof org, "%" PRId64, record->org_id);
        snprintf (campaign, sizeof campaign, "%" PRId64, record->campaign_id);
        snprintf (group, sizeof group, "%" PRId64, record->ad_group_id);
        snprintf (keyword, sizeof keyword, "%" PRId64, record->keyword_id);
        snprintf (ad, sizeof ad, "%" PRId64, record->ad_id);
        const char *params [] = {
            id, record->attribution? "true": "false",
            record->has_org_id? org: NULL,
            record->has_campaign_id? campaign: NULL,
            record->has_ad_group_id? group: NULL,
            record->has_keyword_id? keyword: NULL,
            record->has_ad_id? ad: NULL,
            *record->conversion_type? record->conversion_type: NULL,
            *record->country_or_region? record->country_or_region: NULL,
            *record->claim_type? record->claim_type: NULL,
            *record->click_date? record->click_date: NULL,
            record->raw, self->worker
        };
        failed = "record an attribution";
        res = PQexecPrepared (self->db, "attribution", 13, params, NULL, NULL, 0);
        if (PQresultStatus (res) != PGRES_COMMAND_OK)
            goto failure;
        PQclear (res);
        res = NULL;
    }
    if (outcome->drop_token) {
        const char *params [] = { ids };
        failed = "drop attribution tokens";
        res = PQexecPrepared (self->db, "drop_token", 1, params, NULL, NULL, 0);
        if (PQresultStatus (res) != PGRES_COMMAND_OK)
            goto failure;
        PQclear (res);
        res = NULL;
    }
    char attempt [24], last_status [24], delay [32];
    snprintf (delay, sizeof delay, "%.3f", outcome->delay);
    const char *params [] = {
        ids, outcome->status, s_param_long (attempt, sizeof attempt, outcome->attempt),
        outcome->last_status? s_param_long (last_status, sizeof last_status, outcome->last_status): NULL,
        outcome->last_response, outcome->reason, outcome->fbtrace_id, outcome->request_id,
        delay, self->worker
    };
    failed = "write outcomes";
    res = PQexecPrepared (self->db, "finish", 10, params, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_COMMAND_OK)
        goto failure;
    if ((size_t) atol (PQcmdTuples (res)) < outcome->count)
        ly_info (S_ACTOR, "%zu of %zu outcomes were not ours to write any more (lease lost)",
                 outcome->count - (size_t) atol (PQcmdTuples (res)), outcome->count);
    PQclear (res);
    res = NULL;
    if (transaction) {
        res = PQexec (self->db, "COMMIT");
        if (PQresultStatus (res) != PGRES_COMMAND_OK)
            goto failure;
        PQclear (res);
        res = NULL;
    }
    result = LY_OK;
    goto cleanup;

failure:
    {
        const char *state = PQresultErrorField (res, PG_DIAG_SQLSTATE);
        bool data_error = state && (strncmp (state, "22", 2) == 0 || strncmp (state, "23", 2) == 0);
        if (data_error) {
            char reason [256];
            ly_warning (S_ACTOR, "could not %s: %s", failed,
                        ly_db_message (reason, sizeof reason, PQresultErrorMessage (res)));
            result = LY_INVALID;
        }
        else
            s_db_failed (self, failed, res);
        PQclear (res);
        res = NULL;
        if (transaction && self->db && PQstatus (self->db) == CONNECTION_OK) {
            res = PQexec (self->db, "ROLLBACK");
            PQclear (res);
            res = NULL;
        }
    }
cleanup:
    PQclear (res);
    free (ids);
    return result;
}

//  Writes the queued outcomes in order, while the database is there.
static void
s_write_outcomes (self_t *self)
{
    s_outcome_t *outcome;
    while ((outcome = (s_outcome_t *) zlistx_first (self->outcomes))) {
        if (ly_mono_msec () > outcome->give_up) {
            ly_warning (S_ACTOR, "dropped the outcome of %zu deliveries: our lease is over; "
                        "they will be sent again", outcome->count);
            zlistx_detach_cur (self->outcomes);
            s_outcome_destroy (&outcome);
            continue;
        }
        if (!s_db (self)) {
            self->next_write = ly_mono_msec () + S_DB_RETRY_MSEC;
            return;
        }
        ly_result_t result = s_write (self, outcome);
        if (result == LY_UNAVAILABLE) {
            self->next_write = ly_mono_msec () + S_DB_RETRY_MSEC;
            return;
        }
        if (result == LY_INVALID && outcome->has_record) {
            //  Apple's record did not fit: park the row without it
            outcome->has_record = false;
            outcome->status = "dead";
            free (outcome->reason);
            outcome->reason = strdup ("invalid response");
            continue;
        }
        if (result == LY_INVALID && !outcome->stripped) {
            //  Something the network sent did not fit: keep only what is ours
            outcome->stripped = true;
            free (outcome->last_response);
            free (outcome->fbtrace_id);
            free (outcome->request_id);
            outcome->last_response = outcome->fbtrace_id = outcome->request_id = NULL;
            continue;
        }
        if (result == LY_INVALID)
            ly_error (S_ACTOR, "dropped the outcome of %zu deliveries that PostgreSQL refused",
                      outcome->count);
        zlistx_detach_cur (self->outcomes);
        s_outcome_destroy (&outcome);
    }
}


//  --------------------------------------------------------------------------
//  Throttling

static void
s_throttle_key (ly_destination_t destination, const char *project_id, char key [64])
{
    snprintf (key, 64, "%s/%s", ly_destination_name (destination), project_id);
}

//  Milliseconds the destination stays paused for the project, 0 when it is not.
static int64_t
s_throttled (self_t *self, ly_destination_t destination, const char *project_id)
{
    char key [64];
    s_throttle_key (destination, project_id, key);
    s_throttle_t *throttle = (s_throttle_t *) zhashx_lookup (self->throttles, key);
    int64_t left = throttle? throttle->until - ly_mono_msec (): 0;
    return left > 0? left: 0;
}

//  The pause of a "destination/project" key, made (not paused) when there is none.
static s_throttle_t *
s_throttle_entry (self_t *self, const char *key)
{
    s_throttle_t *throttle = (s_throttle_t *) zhashx_lookup (self->throttles, key);
    if (!throttle) {
        throttle = (s_throttle_t *) calloc (1, sizeof (s_throttle_t));
        assert (throttle);
        zhashx_insert (self->throttles, key, throttle);
    }
    return throttle;
}

//  Pauses the destination for the project after a throttled answer to a request sent
//  at sent (monotonic msec); returns the pause in milliseconds. The backoff doubles per
//  consecutive throttle: answers to requests that were in flight when the last one came
//  are of that same throttle.
static int64_t
s_throttle (self_t *self, ly_destination_t destination, const char *project_id,
            long retry_after, int64_t sent)
{
    char key [64];
    s_throttle_key (destination, project_id, key);
    s_throttle_t *throttle = s_throttle_entry (self, key);
    bool again = throttle->level == 0 || sent >= throttle->raised;
    int64_t pause = self->backoff_ms;
    for (int i = again? 0: 1; i < throttle->level && pause < S_MAX_THROTTLE_MSEC; i++)
        pause *= 2;
    if (retry_after >= 0)               //  as the network asks, but never no pause at all
        pause = retry_after * 1000 < self->backoff_ms? self->backoff_ms
              : retry_after < S_MAX_THROTTLE_MSEC / 1000? (int64_t) retry_after * 1000
              : S_MAX_THROTTLE_MSEC;
    if (pause > S_MAX_THROTTLE_MSEC)
        pause = S_MAX_THROTTLE_MSEC;
    if (again && throttle->level < 30) {
        throttle->level++;
        throttle->raised = ly_mono_msec ();
    }
    int64_t until = ly_mono_msec () + pause;
    if (until > throttle->until)
        throttle->until = until;
    //  The other relays pause too (s_pauses_read): they share the network's limit
    char seconds [32];
    snprintf (seconds, sizeof seconds, "%.3f", (double) pause / 1000.0);
    const char *params [] = { project_id, ly_destination_name (destination), seconds };
    PGresult *res = s_db (self)? PQexecPrepared (self->db, "pause", 3, params, NULL, NULL, 0): NULL;
    if (res && PQresultStatus (res) != PGRES_COMMAND_OK)
        s_db_failed (self, "record a pause for the other relays", res);
    PQclear (res);
    return throttle->until - ly_mono_msec ();
}

//  Takes up the pauses other relays recorded (s_throttle), so that this one does not
//  send for a destination and project the network asked to wait.
static void
s_pauses_read (self_t *self)
{
    PGresult *res = PQexecPrepared (self->db, "pauses", 0, NULL, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK)
        s_db_failed (self, "read the pauses of the other relays", res);
    int64_t now = ly_mono_msec ();
    for (int i = 0; self->db && i < PQntuples (res); i++) {
        s_throttle_t *throttle = s_throttle_entry (self, PQgetvalue (res, i, 0));
        int64_t until = now + strtoll (PQgetvalue (res, i, 1), NULL, 10);
        if (until > throttle->until)
            throttle->until = until;
    }
    PQclear (res);
}

//  Ends the pause of the destination for the project after a request sent at sent was
//  delivered; one sent before the throttle came (in flight meanwhile) ends nothing.
static void
s_throttle_clear (self_t *self, ly_destination_t destination, const char *project_id,
                  int64_t sent)
{
    char key [64];
    s_throttle_key (destination, project_id, key);
    s_throttle_t *throttle = (s_throttle_t *) zhashx_lookup (self->throttles, key);
    if (throttle && sent >= throttle->raised)
        zhashx_delete (self->throttles, key);
}

//  The paused "destination/project" keys as a text [] parameter. Caller owns.
static char *
s_throttled_keys (self_t *self)
{
    int64_t now = ly_mono_msec ();
    size_t size = 3 + zhashx_size (self->throttles) * 66;
    char *text = (char *) malloc (size);
    assert (text);
    size_t used = 0;
    text [used++] = '{';
    zlistx_t *stale = zlistx_new ();
    for (s_throttle_t *throttle = (s_throttle_t *) zhashx_first (self->throttles); throttle;
         throttle = (s_throttle_t *) zhashx_next (self->throttles)) {
        const char *key = (const char *) zhashx_cursor (self->throttles);
        if (throttle->until > now)
            used += (size_t) snprintf (text + used, size - used, "%s%s", used > 1? ",": "", key);
        else
        if (now - throttle->until > S_MAX_THROTTLE_MSEC)
            zlistx_add_end (stale, (void *) key);
    }
    text [used++] = '}';
    text [used] = 0;
    for (const char *key = (const char *) zlistx_first (stale); key;
         key = (const char *) zlistx_next (stale))
        zhashx_delete (self->throttles, key);
    zlistx_destroy (&stale);
    return text;
}


//  --------------------------------------------------------------------------
//  Batches and jobs

static void
s_batch_destroy (self_t *self, s_batch_t **batch_p)
{
    s_batch_t *batch = *batch_p;
    if (batch) {
        assert (self->rows_held >= batch->count && self->held_bytes >= batch->bytes);
        self->rows_held -= batch->count;
        self->held_bytes -= batch->bytes;
        if (self->claim_blocked) {
            self->claim_blocked = false;
            self->next_claim = ly_mono_msec ();
        }
        ly_delivery_t *delivery;
        while ((delivery = (ly_delivery_t *) zlistx_detach (batch->rows, NULL)))
            ly_delivery_destroy (&delivery);
        zlistx_destroy (&batch->rows);
        json_decref (batch->config);
        if (batch->sealed)
            PQfreemem (batch->sealed);
        if (batch->token) {
            OPENSSL_cleanse (batch->token, strlen (batch->token));
            free (batch->token);
        }
        free (batch);
        *batch_p = NULL;
    }
}

static s_job_t *
s_job_new (self_t *self, s_batch_t *batch, ly_delivery_t **rows, size_t count)
{
    s_job_t *job = (s_job_t *) calloc (1, sizeof (s_job_t));
    assert (job);
    job->self = self;
    job->batch = batch;
    job->rows = (ly_delivery_t **) malloc ((count? count: 1) * sizeof (ly_delivery_t *));
    assert (job->rows);
    memcpy (job->rows, rows, count * sizeof (ly_delivery_t *));
    job->count = count;
    batch->jobs++;
    return job;
}

//  Frees a job (it is in no list); its batch goes with its last job.
static void
s_job_destroy (self_t *self, s_job_t **job_p)
{
    s_job_t *job = *job_p;
    if (job) {
        s_batch_t *batch = job->batch;
        assert (batch->jobs > 0);
        if (--batch->jobs == 0)
            s_batch_destroy (self, &batch);
        free (job->rows);
        free (job);
        *job_p = NULL;
    }
}

static void
s_job_queue (self_t *self, s_job_t *job, bool first)
{
    job->handle = first? zlistx_add_start (self->queued, job): zlistx_add_end (self->queued, job);
}

//  Parks or skips rows for good, with a reason and the network's answer when there
//  was one.
static void
s_settle (self_t *self, ly_destination_t destination, ly_delivery_t **rows, size_t count,
          const char *status, const char *reason, const ly_httpc_response_t *response,
          const ly_verdict_t *verdict, const char *secret)
{
    s_outcome_t *outcome = s_outcome_new (self, status, count);
    for (size_t i = 0; i < count; i++)
        s_outcome_add (outcome, rows [i]);
    outcome->reason = reason? strdup (reason): NULL;
    outcome->attempt = response? 1: 0;
    s_outcome_answer (outcome, destination, response, verdict, secret);
    int metric = streq (status, "dead")? S_DEAD: streq (status, "skipped")? S_SKIPPED: S_DELIVERED;
    s_outcome_queue (self, &outcome, destination, metric);
}

//  Sends rows back to 'pending' for another attempt: after fixed_ms when >= 0, else
//  after the backoff of their attempt count (the highest among them: the rows of a
//  request stay together for their next one). Rows whose next attempt would fall
//  outside the retry window (or an Apple token's life) are parked instead. sent:
//  whether this counts as an attempt.
static void
s_retry (self_t *self, ly_destination_t destination, ly_delivery_t **rows, size_t count,
         const char *reason, int64_t fixed_ms, bool sent, const ly_httpc_response_t *response,
         const ly_verdict_t *verdict, const char *secret)
{
    s_outcome_t *again = s_outcome_new (self, "pending", count);
    s_outcome_t *expired = s_outcome_new (self, "dead", count);
    s_outcome_t *token_expired = s_outcome_new (self, "dead", count);
    int attempts = 0;
    for (size_t i = 0; i < count; i++)
        if (rows [i]->attempts > attempts)
            attempts = rows [i]->attempts;
    double delay = fixed_ms >= 0? (double) fixed_ms / 1000.0
                                : s_backoff (self, attempts + (sent? 1: 0));
    //  A Retry-After with a passing failure (a 503) is the least wait, up to a throttle's
    if (fixed_ms < 0 && verdict && verdict->retry_after > 0) {
        double asked = verdict->retry_after < S_MAX_THROTTLE_MSEC / 1000?
                       (double) verdict->retry_after: S_MAX_THROTTLE_MSEC / 1000.0;
        if (asked > delay)
            delay = asked;
    }
    for (size_t i = 0; i < count; i++) {
        ly_delivery_t *row = rows [i];
        if (destination == LY_DEST_APPLE && row->received_age + delay > LY_APPLE_TOKEN_LIFE)
            s_outcome_add (token_expired, row);
        else
        if (row->age + delay > self->retry_window)
            s_outcome_add (expired, row);
        else
            s_outcome_add (again, row);
    }
    bool retried = again->count > 0;
    again->delay = delay;
    again->reason = reason? strdup (reason): NULL;
    char text [128];
    snprintf (text, sizeof text, "expired: %s", reason? reason: "retries");
    expired->reason = strdup (text);
    token_expired->reason = strdup ("token expired");
    again->attempt = expired->attempt = token_expired->attempt = sent? 1: 0;
    s_outcome_answer (again, destination, response, verdict, secret);
    s_outcome_answer (expired, destination, response, verdict, secret);
    s_outcome_answer (token_expired, destination, response, verdict, secret);
    s_outcome_queue (self, &again, destination, S_RETRIED);
    s_outcome_queue (self, &expired, destination, S_DEAD);
    s_outcome_queue (self, &token_expired, destination, S_DEAD);
    if (retried) {
        //  next_attempt_at is set from the database's clock when the outcome is written,
        //  a moment from now
        int64_t at = ly_mono_msec () + (int64_t) (delay * 1000) + S_CLOCK_MARGIN_MSEC;
        if (at < self->next_claim)
            self->next_claim = at;
    }
}

//  Our leases may be over (the database was away longer than a lease): other relays
//  may hold our rows by now. Forget every decision not yet written, send nothing more,
//  let requests in flight end without writing, and give back what is still ours.
static void
s_leases_lost (self_t *self)
{
    ly_warning (S_ACTOR, "could not renew the leases of %zu deliveries in time; they will be "
                "sent again", self->rows_held);
    self->leases_lost++;
    s_job_t *job;
    while ((job = (s_job_t *) zlistx_first (self->queued))) {
        zlistx_detach_cur (self->queued);
        s_job_destroy (self, &job);
    }
    for (job = (s_job_t *) zlistx_first (self->sending); job;
         job = (s_job_t *) zlistx_next (self->sending))
        job->orphaned = true;
    s_outcome_t *outcome;
    while ((outcome = (s_outcome_t *) zlistx_first (self->outcomes))) {
        zlistx_detach_cur (self->outcomes);
        s_outcome_destroy (&outcome);
    }
    if (s_db (self)) {
        const char *params [] = { self->worker };
        PGresult *res = PQexecPrepared (self->db, "release", 1, params, NULL, NULL, 0);
        if (PQresultStatus (res) != PGRES_COMMAND_OK)
            s_db_failed (self, "release deliveries", res);
        PQclear (res);
    }
}

//  True when the rows we hold may no longer be ours (and they were given up).
static bool
s_lease_over (self_t *self)
{
    if (self->rows_held == 0 || ly_mono_msec () <= self->lease_until)
        return false;
    s_leases_lost (self);
    return true;
}

//  Renews the leases of every row we hold. 0 / -1.
static int
s_heartbeat (self_t *self)
{
    if (s_lease_over (self))
        return -1;
    int64_t started = ly_mono_msec ();
    self->next_heartbeat = started + (self->lease_ms / 3 < S_DB_RETRY_MSEC? self->lease_ms / 3
                                                                          : S_DB_RETRY_MSEC);
    if (!s_db (self))
        return -1;
    char lease [32];
    snprintf (lease, sizeof lease, "%.3f", (double) self->lease_ms / 1000.0);
    const char *params [] = { self->worker, lease };
    PGresult *res = PQexecPrepared (self->db, "heartbeat", 2, params, NULL, NULL, 0);
    int rc = PQresultStatus (res) == PGRES_COMMAND_OK? 0: -1;
    if (rc)
        s_db_failed (self, "renew leases", res);
    else {
        self->lease_until = started + self->lease_ms;
        self->next_heartbeat = started + self->lease_ms / 3;
    }
    PQclear (res);
    return rc;
}

//  Wipes the strings of a decoded secret before it is freed.
static void
s_json_cleanse (json_t *value)
{
    if (json_is_string (value))
        OPENSSL_cleanse ((char *) json_string_value (value), json_string_length (value));
    else
    if (json_is_object (value)) {
        const char *key;
        json_t *member;
        json_object_foreach (value, key, member)
            s_json_cleanse (member);
    }
    else
    if (json_is_array (value)) {
        size_t index;
        json_t *member;
        json_array_foreach (value, index, member)
            s_json_cleanse (member);
    }
}

//  Decrypts the batch's secret into batch->token. 0 / -1 with a reason.
static int
s_open_secret (self_t *self, s_batch_t *batch, char *reason, size_t size)
{
    if (!batch->sealed) {
        snprintf (reason, size, "credentials: no access token");
        return -1;
    }
    char aad [128];
    snprintf (aad, sizeof aad, "project_layers/%s/%s", batch->project_id,
              ly_destination_name (batch->destination));
    char *plain = NULL;
    size_t plain_len = 0;
    if (ly_secret_open (ly_master_key (), aad, batch->sealed, batch->sealed_len, &plain, &plain_len)) {
        ly_warning (S_ACTOR, "could not open the %s secret of project %s: wrong key or altered",
                    ly_destination_name (batch->destination), batch->project_id);
        snprintf (reason, size, "credentials: the secret does not open");
        return -1;
    }
    //  {"access_token": "..."}, or the token alone (a JSON string or bare text)
    json_error_t error;
    json_t *secrets = json_loadb (plain, plain_len, JSON_DECODE_ANY, &error);
    OPENSSL_cleanse (&error, sizeof error);
    json_t *field = json_is_object (secrets)? json_object_get (secrets, "access_token"): secrets;
    const char *token = json_string_value (field);
    if (!secrets)
        token = plain;
    else
    if (!token)
        token = "";
    size_t len = strlen (token);
    while (len && isspace ((unsigned char) token [len - 1]))
        len--;
    while (len && isspace ((unsigned char) *token))
        token++, len--;
    bool usable = len > 0 && len <= S_TOKEN_MAX;
    for (size_t i = 0; i < len && usable; i++)
        usable = token [i] > 0x20 && token [i] < 0x7F && token [i] != '"' && token [i] != '\\';
    if (usable)
        batch->token = strndup (token, len);
    s_json_cleanse (secrets);
    json_decref (secrets);
    OPENSSL_cleanse (plain, plain_len);
    free (plain);
    if (!batch->token) {
        snprintf (reason, size, "credentials: no usable access token");
        return -1;
    }
    return 0;
}

//  Rows of a batch settled before any request, grouped by status and reason so that
//  each group is written with one statement.
typedef struct {
    self_t *self;               /* borrowed */
    ly_destination_t destination;
    zhashx_t *groups;           /* "status/drop/reason" -> s_outcome_t, owned until queued */
    zlistx_t *order;            /* the same outcomes, first seen first */
    size_t capacity;            /* rows in the batch */
} s_settling_t;

static void
s_settling_add (s_settling_t *settling, ly_delivery_t *row, const char *status,
                const char *reason)
{
    char key [320];
    snprintf (key, sizeof key, "%s/%s", status, reason);
    s_outcome_t *outcome = (s_outcome_t *) zhashx_lookup (settling->groups, key);
    if (!outcome) {
        outcome = s_outcome_new (settling->self, status, settling->capacity);
        outcome->reason = strdup (reason);
        zhashx_insert (settling->groups, key, outcome);
        zlistx_add_end (settling->order, outcome);
    }
    s_outcome_add (outcome, row);
}

static void
s_settling_finish (s_settling_t *settling)
{
    for (s_outcome_t *outcome = (s_outcome_t *) zlistx_first (settling->order); outcome;
         outcome = (s_outcome_t *) zlistx_next (settling->order)) {
        int metric = streq (outcome->status, "dead")? S_DEAD: S_SKIPPED;
        s_outcome_queue (settling->self, &outcome, settling->destination, metric);
    }
    zlistx_destroy (&settling->order);
    zhashx_destroy (&settling->groups);
}

//  Decides every row of a fresh batch: skipped, parked at once, or into requests.
static void
s_batch_start (self_t *self, s_batch_t *batch)
{
    ly_destination_t destination = batch->destination;
    size_t count = zlistx_size (batch->rows);
    ly_delivery_t **valid = (ly_delivery_t **) calloc (count? count: 1, sizeof (ly_delivery_t *));
    assert (valid);
    size_t valid_count = 0;
    s_settling_t settling = { self, destination, zhashx_new (), zlistx_new (), count };
    time_t now = time (NULL);
    char reason [256];
    for (ly_delivery_t *row = (ly_delivery_t *) zlistx_first (batch->rows); row;
         row = (ly_delivery_t *) zlistx_next (batch->rows)) {
        if (!batch->layer_found || !batch->enabled)
            s_settling_add (&settling, row, "skipped", "disabled");
        else
        if (!row->has_event)
            s_settling_add (&settling, row, "dead", "event missing");
        else
        if (row->consent_ads == 0)
            s_settling_add (&settling, row, "skipped", "consent");
        else
        if (destination == LY_DEST_APPLE && row->received_age > LY_APPLE_TOKEN_LIFE)
            s_settling_add (&settling, row, "dead", "token expired");
        else
        if (destination == LY_DEST_APPLE && !row->attribution_token)
            s_settling_add (&settling, row, "dead", "no token");
        else
        if (destination == LY_DEST_TIKTOK && !ly_tiktok_event_name (batch->config, row->name)) {
            s_settling_add (&settling, row, "skipped", "unmapped");
            ly_metric_add (self->unmapped, 1);
        }
        else
        if (destination == LY_DEST_META && ly_meta_event_check (row, now, reason, sizeof reason))
            s_settling_add (&settling, row, "dead", reason);
        else
            valid [valid_count++] = row;
    }
    //  The layer's settings and secret, for what is left to send
    int settings = 0;
    if (valid_count && destination == LY_DEST_META)
        settings = ly_meta_settings_check (batch->config, reason, sizeof reason);
    else
    if (valid_count && destination == LY_DEST_TIKTOK)
        settings = ly_tiktok_settings_check (batch->config, reason, sizeof reason);
    if (settings == 0 && valid_count && destination != LY_DEST_APPLE)
        settings = s_open_secret (self, batch, reason, sizeof reason);
    if (settings) {
        ly_warning (S_ACTOR, "parked %zu %s events of project %s: %s", valid_count,
                    ly_destination_name (destination), batch->project_id, reason);
        for (size_t i = 0; i < valid_count; i++)
            s_settling_add (&settling, valid [i], "dead", reason);
        valid_count = 0;
    }
    s_settling_finish (&settling);
    //  Requests: one per Apple token, up to the batch size for the others
    size_t per_request = destination == LY_DEST_APPLE? 1: (size_t) self->claim_rows;
    s_job_t *hold = s_job_new (self, batch, valid, 0);     //  keeps the batch while we add
    size_t requests = (valid_count + per_request - 1) / per_request;
    for (size_t at = 0; at < valid_count; requests--) {
        size_t take = (valid_count - at + requests - 1) / requests;    //  even sizes
        s_job_queue (self, s_job_new (self, batch, valid + at, take), false);
        at += take;
    }
    free (valid);
    s_job_destroy (self, &hold);
}

//  Claims due rows and starts their batches.
static void
s_claim (self_t *self)
{
    int64_t started = ly_mono_msec ();
    self->next_claim = started + self->poll_ms;
    //  A claim takes a full claim's worth or waits for room, so that requests stay full;
    //  and no more than fits in LAYERS_RELAY_HELD_BYTES at the recent size of a row, so
    //  that large events cannot make the relay hold gigabytes
    long limit = S_CLAIM_LAYERS * self->claim_rows;
    if ((long) self->rows_held + limit > S_MAX_CLAIMS * limit || self->held_bytes >= self->held_max) {
        self->claim_blocked = true;
        return;
    }
    double fit = (double) (self->held_max - self->held_bytes) / self->row_bytes;
    if (fit < (double) limit)
        limit = fit < 1? 1: (long) fit;
    if (!s_db (self)) {
        self->next_claim = started + S_DB_RETRY_MSEC;
        return;
    }
    char limit_text [24], lease [32];
    snprintf (limit_text, sizeof limit_text, "%ld", limit);
    snprintf (lease, sizeof lease, "%.3f", (double) self->lease_ms / 1000.0);
    s_pauses_read (self);
    if (!self->db) {
        self->next_claim = started + S_DB_RETRY_MSEC;
        return;
    }
    char *throttled = s_throttled_keys (self);
    const char *params [] = { limit_text, self->worker, lease, throttled };
    PGresult *res = PQexecPrepared (self->db, "claim", 4, params, NULL, NULL, 0);
    free (throttled);
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        s_db_failed (self, "claim deliveries", res);
        PQclear (res);
        self->next_claim = started + S_DB_RETRY_MSEC;
        return;
    }
    int rows = PQntuples (res);
    assert (PQnfields (res) == LY_DELIVERY_COLUMNS + 4);    //  our own statement
    if (rows == 0) {
        PQclear (res);
        return;
    }
    if (self->rows_held == 0) {
        self->lease_until = started + self->lease_ms;
        self->next_heartbeat = started + self->lease_ms / 3;
    }
    //  Group the rows per destination and project
    size_t claimed_bytes = 0;
    zhashx_t *groups = zhashx_new ();
    zlistx_t *order = zlistx_new ();
    for (int row = 0; row < rows; row++) {
        ly_delivery_t *delivery = ly_delivery_new (res, row);
        if (!delivery) {
            //  Park it, or our heartbeats would hold it forever
            ly_warning (S_ACTOR, "could not read delivery %s; parked", PQgetvalue (res, row, 0));
            s_outcome_t *outcome = s_outcome_new (self, "dead", 1);
            outcome->ids [0] = strtoll (PQgetvalue (res, row, 0), NULL, 10);
            outcome->count = 1;
            outcome->reason = strdup ("unreadable");
            zlistx_add_end (self->outcomes, outcome);
            continue;
        }
        char key [64];
        s_throttle_key (delivery->destination, delivery->project_id, key);
        s_batch_t *batch = (s_batch_t *) zhashx_lookup (groups, key);
        if (!batch) {
            batch = (s_batch_t *) calloc (1, sizeof (s_batch_t));
            assert (batch);
            batch->destination = delivery->destination;
            snprintf (batch->project_id, sizeof batch->project_id, "%s", delivery->project_id);
            batch->rows = zlistx_new ();
            int column = LY_DELIVERY_COLUMNS;
            batch->layer_found = streq (PQgetvalue (res, row, column), "t");
            batch->enabled = streq (PQgetvalue (res, row, column + 1), "t");
            if (!PQgetisnull (res, row, column + 2))
                batch->config = json_loads (PQgetvalue (res, row, column + 2), 0, NULL);
            if (!json_is_object (batch->config)) {
                json_decref (batch->config);
                batch->config = json_object ();
            }
            if (!PQgetisnull (res, row, column + 3))
                batch->sealed = PQunescapeBytea ((const unsigned char *) PQgetvalue (res, row, column + 3),
                                                 &batch->sealed_len);
            zhashx_insert (groups, key, batch);
            zlistx_add_end (order, batch);
        }
        zlistx_add_end (batch->rows, delivery);
        size_t bytes = 0;
        for (int column = 0; column < PQnfields (res); column++)
            bytes += (size_t) PQgetlength (res, row, column);
        claimed_bytes += bytes;
        batch->bytes += bytes;
        batch->count++;
        self->rows_held++;
        self->held_bytes += bytes;
    }
    PQclear (res);
    double average = (double) claimed_bytes / rows;
    self->row_bytes = 0.5 * self->row_bytes + 0.5 * (average < 256? 256: average);
    if (self->verbose)
        ly_info (S_ACTOR, "claimed %d deliveries in %zu batches", rows, zlistx_size (order));
    for (s_batch_t *batch = (s_batch_t *) zlistx_first (order); batch;
         batch = (s_batch_t *) zlistx_next (order))
        s_batch_start (self, batch);
    zlistx_destroy (&order);
    zhashx_destroy (&groups);
    if (rows == limit)
        self->next_claim = ly_mono_msec ();     //  more may be due
}

//  Builds and starts a queued request, unless its destination is paused or our lease
//  is too short for it.
static void
s_job_send (self_t *self, s_job_t *job)
{
    s_batch_t *batch = job->batch;
    ly_destination_t destination = batch->destination;
    int64_t paused = s_throttled (self, destination, batch->project_id);
    if (paused > 0) {
        s_retry (self, destination, job->rows, job->count, "throttled", paused, false,
                 NULL, NULL, NULL);
        s_job_destroy (self, &job);
        return;
    }
    unsigned losses = self->leases_lost;
    if (self->lease_until - ly_mono_msec () < self->timeout_ms + S_LEASE_MARGIN_MSEC)
        s_heartbeat (self);
    if (self->leases_lost != losses) {
        s_job_destroy (self, &job);     //  its rows may be another relay's by now
        return;
    }
    if (self->lease_until - ly_mono_msec () < self->timeout_ms + S_LEASE_MARGIN_MSEC) {
        //  Cannot be sure to finish while the rows are ours: give them back
        s_retry (self, destination, job->rows, job->count, "lease", 0, false, NULL, NULL, NULL);
        s_job_destroy (self, &job);
        return;
    }
    ly_request_t request = { 0 };
    int rc = -1;
    if (destination == LY_DEST_META)
        rc = ly_meta_request (ly_config.meta_url, ly_config.meta_api_version, batch->config,
                              batch->token, job->rows, job->count, &request);
    else
    if (destination == LY_DEST_TIKTOK)
        rc = ly_tiktok_request (ly_config.tiktok_url, batch->config, batch->token,
                                job->rows, job->count, &request);
    else
    if (destination == LY_DEST_APPLE)
        rc = ly_apple_request (ly_config.adservices_url, job->rows [0]->attribution_token, &request);
    job->sent = ly_mono_msec ();
    if (rc == 0)
        rc = ly_httpc_post (self->httpc, request.url, &request.headers, &request.body,
                            request.len, s_job_done, job);
    ly_request_reset (&request);
    if (rc) {
        ly_warning (S_ACTOR, "could not start a %s request: out of memory",
                    ly_destination_name (destination));
        s_retry (self, destination, job->rows, job->count, "internal", -1, false, NULL, NULL, NULL);
        s_job_destroy (self, &job);
        return;
    }
    job->handle = zlistx_add_end (self->sending, job);
    ly_metric_add (self->requests [destination], 1);
}

static void
s_send_queued (self_t *self)
{
    while (zlistx_size (self->queued) && ly_httpc_active (self->httpc) < S_MAX_TRANSFERS) {
        s_job_t *job = (s_job_t *) zlistx_first (self->queued);
        zlistx_detach_cur (self->queued);
        job->handle = NULL;
        s_job_send (self, job);
    }
}

static void
s_log_verdict (self_t *self, s_job_t *job, const ly_verdict_t *verdict,
               const ly_httpc_response_t *response)
{
    const char *destination = ly_destination_name (job->batch->destination);
    char what [160];
    if (response->result != CURLE_OK)
        snprintf (what, sizeof what, "no answer (%s)", curl_easy_strerror (response->result));
    else
    if (verdict->code && verdict->subcode)
        snprintf (what, sizeof what, "HTTP %ld, code %ld subcode %ld", response->status,
                  verdict->code, verdict->subcode);
    else
    if (verdict->code)
        snprintf (what, sizeof what, "HTTP %ld, code %ld", response->status, verdict->code);
    else
        snprintf (what, sizeof what, "HTTP %ld", response->status);
    if (verdict->kind == LY_VERDICT_DELIVERED) {
        if (self->verbose)
            ly_info (S_ACTOR, "delivered %zu events to %s for project %s (%s, %.0f ms)",
                     job->count, destination, job->batch->project_id, what, response->seconds * 1000);
    }
    else
    if (verdict->kind == LY_VERDICT_DEAD)
        ly_warning (S_ACTOR, "%s refused %zu events of project %s: %s, %s; parked",
                    destination, job->count, job->batch->project_id, what, verdict->reason);
    else
    if (verdict->kind != LY_VERDICT_REJECTED || job->count == 1 || self->verbose)
        ly_info (S_ACTOR, "%s: %zu events of project %s: %s, %s (%s)", destination, job->count,
                 job->batch->project_id, what, verdict->reason? verdict->reason: "",
                 ly_verdict_name (verdict->kind));
}

//  A request ended: what its verdict means for its rows.
static void
s_job_done (void *arg, const ly_httpc_response_t *response)
{
    s_job_t *job = (s_job_t *) arg;
    self_t *self = job->self;
    s_batch_t *batch = job->batch;
    ly_destination_t destination = batch->destination;
    zlistx_delete (self->sending, job->handle);
    job->handle = NULL;
    ly_metric_observe (self->seconds [destination], response->seconds);
    if (job->orphaned) {
        s_job_destroy (self, &job);
        return;
    }

    ly_verdict_t verdict;
    ly_apple_record_t record;
    memset (&record, 0, sizeof record);
    if (destination == LY_DEST_META)
        ly_meta_classify (response, &verdict);
    else
    if (destination == LY_DEST_TIKTOK)
        ly_tiktok_classify (response, &verdict);
    else
        ly_apple_classify (response, &verdict, &record);
    s_log_verdict (self, job, &verdict, response);

    if (verdict.kind == LY_VERDICT_DELIVERED) {
        s_throttle_clear (self, destination, batch->project_id, job->sent);
        s_outcome_t *outcome = s_outcome_new (self, "delivered", job->count);
        for (size_t i = 0; i < job->count; i++)
            s_outcome_add (outcome, job->rows [i]);
        outcome->attempt = 1;
        s_outcome_answer (outcome, destination, response, &verdict, batch->token);
        if (destination == LY_DEST_APPLE) {
            outcome->has_record = true;
            outcome->record = record;
            memset (&record, 0, sizeof record);
        }
        s_outcome_queue (self, &outcome, destination, S_DELIVERED);
    }
    else
    if (verdict.kind == LY_VERDICT_RETRY)
        s_retry (self, destination, job->rows, job->count, verdict.reason, -1, true,
                 response, &verdict, batch->token);
    else
    if (verdict.kind == LY_VERDICT_THROTTLE) {
        int64_t pause = s_throttle (self, destination, batch->project_id, verdict.retry_after,
                                    job->sent);
        ly_info (S_ACTOR, "%s throttled project %s: pausing for %.1f s",
                 ly_destination_name (destination), batch->project_id, (double) pause / 1000.0);
        s_retry (self, destination, job->rows, job->count, verdict.reason, pause, true,
                 response, &verdict, batch->token);
    }
    else
    if (verdict.kind == LY_VERDICT_REJECTED && job->count > 1) {
        //  Split it: the halves go first, so the refused event is found quickly
        size_t half = job->count / 2;
        s_job_queue (self, s_job_new (self, batch, job->rows + half, job->count - half), true);
        s_job_queue (self, s_job_new (self, batch, job->rows, half), true);
    }
    else
    if (verdict.kind == LY_VERDICT_REJECTED || verdict.kind == LY_VERDICT_DEAD)
        s_settle (self, destination, job->rows, job->count, "dead", verdict.reason, response,
                  &verdict, batch->token);
    else
    if (verdict.kind == LY_VERDICT_NOT_YET) {
        ly_delivery_t *row = job->rows [0];
        if (row->attempts + 1 < LY_APPLE_MAX_ATTEMPTS)
            s_retry (self, destination, job->rows, job->count, verdict.reason,
                     self->apple_retry_ms, true, response, &verdict, NULL);
        else
            s_settle (self, destination, job->rows, job->count, "dead", verdict.reason,
                      response, &verdict, NULL);
    }
    ly_apple_record_reset (&record);
    s_job_destroy (self, &job);
}


//  --------------------------------------------------------------------------
//  Housekeeping

//  Gives back at once the rows of relays on this host (and in our pid namespace) whose
//  process is gone, a kill -9 say, rather than after their lease. A pid that lives is
//  trusted, even when reused by another process: then the lease decides.
static void
s_reap_gone (self_t *self)
{
    if (!*self->local)
        return;
    const char *params [] = { self->local };
    PGresult *res = PQexecPrepared (self->db, "held_here", 1, params, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        s_db_failed (self, "list the relays holding rows", res);
        PQclear (res);
        return;
    }
    size_t prefix = strlen (self->local);
    for (int row = 0; row < PQntuples (res) && self->db; row++) {
        const char *holder = PQgetvalue (res, row, 0);
        char *end = NULL;
        long pid = strtol (holder + prefix, &end, 10);
        if (streq (holder, self->worker) || pid <= 0 || *end != ':'
        ||  kill ((pid_t) pid, 0) == 0 || errno != ESRCH)
            continue;
        const char *release [] = { holder };
        PGresult *done = PQexecPrepared (self->db, "release_gone", 1, release, NULL, NULL, 0);
        if (PQresultStatus (done) != PGRES_COMMAND_OK)
            s_db_failed (self, "release the rows of a relay that is gone", done);
        else
        if (atol (PQcmdTuples (done)) > 0) {
            ly_info (S_ACTOR, "released %s deliveries of relay %s, which is no longer running",
                     PQcmdTuples (done), holder);
            self->next_claim = ly_mono_msec ();
        }
        PQclear (done);
    }
    PQclear (res);
}

//  The backlog for /metrics: deliveries due and not claimed, and how long past its due
//  time the oldest of them is, per destination (each relay reports the same figures).
static void
s_measure_backlog (self_t *self)
{
    PGresult *res = PQexecPrepared (self->db, "backlog", 0, NULL, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        s_db_failed (self, "measure the backlog", res);
        PQclear (res);
        return;
    }
    double due [LY_DEST_COUNT] = { 0 }, waited [LY_DEST_COUNT] = { 0 };
    for (int row = 0; row < PQntuples (res); row++) {
        ly_destination_t destination;
        if (ly_destination_parse (PQgetvalue (res, row, 0), &destination) == 0) {
            due [destination] = strtod (PQgetvalue (res, row, 1), NULL);
            waited [destination] = strtod (PQgetvalue (res, row, 2), NULL);
        }
    }
    PQclear (res);
    for (int d = 0; d < LY_DEST_COUNT; d++) {
        ly_metric_set (self->due [d], due [d]);
        ly_metric_set (self->waited [d], waited [d] > 0? waited [d]: 0);
    }
}

//  Puts every expired lease (any relay's) back to 'pending'.
static void
s_reap (self_t *self)
{
    int64_t now = ly_mono_msec ();
    long every = self->lease_ms / 2 < 5000? self->lease_ms / 2: 5000;
    self->next_reap = now + every;
    if (!s_db (self))
        return;
    PGresult *res = PQexecPrepared (self->db, "reap", 0, NULL, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_COMMAND_OK)
        s_db_failed (self, "release expired leases", res);
    else
    if (atol (PQcmdTuples (res)) > 0) {
        ly_info (S_ACTOR, "released %s deliveries whose lease expired", PQcmdTuples (res));
        self->next_claim = now;
    }
    PQclear (res);
    if (self->db)
        s_reap_gone (self);
    if (self->db)
        s_measure_backlog (self);
}

//  Deletes the records of deliveries delivered or skipped more than LAYERS_RELAY_KEEP_DAYS
//  ago, a pass of S_PRUNE_ROWS rows at a time in delivery_id order from where the last
//  pass stopped (ids grow with time, so no index on age is needed); dead and pending rows
//  stay. Passes follow each other at once while every row they see is old.
static void
s_prune (self_t *self)
{
    self->next_prune = ly_mono_msec () + S_PRUNE_MSEC;
    if (self->keep_days <= 0 || !s_db (self))
        return;
    char cursor [24], days [24];
    snprintf (cursor, sizeof cursor, "%" PRId64, self->prune_cursor);
    snprintf (days, sizeof days, "%ld", self->keep_days);
    const char *params [] = { cursor, days };
    PGresult *res = PQexecPrepared (self->db, "prune", 2, params, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        s_db_failed (self, "delete old delivery records", res);
        PQclear (res);
        return;
    }
    long old = atol (PQgetvalue (res, 0, 1));
    long scanned = atol (PQgetvalue (res, 0, 2));
    long gone = atol (PQgetvalue (res, 0, 3));
    if (!PQgetisnull (res, 0, 0))
        self->prune_cursor = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
    PQclear (res);
    if (old == scanned && scanned == S_PRUNE_ROWS)
        self->next_prune = ly_mono_msec ();     //  all old: there may be more
    if (gone > 0 && self->verbose)
        ly_info (S_ACTOR, "deleted %ld delivery records older than %ld days", gone, self->keep_days);
}

//  Drops the tokens of Apple deliveries given up on ("not found") once the token's
//  life is over.
static void
s_sweep (self_t *self)
{
    self->next_sweep = ly_mono_msec () + S_SWEEP_MSEC;
    if (!s_db (self))
        return;
    PGresult *res = PQexecPrepared (self->db, "sweep", 0, NULL, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_COMMAND_OK)
        s_db_failed (self, "drop expired attribution tokens", res);
    else
    if (atol (PQcmdTuples (res)) > 0)
        ly_info (S_ACTOR, "dropped %s expired attribution tokens", PQcmdTuples (res));
    PQclear (res);
}

//  On the way out: writes what was decided, gives back what was not.
static void
s_release (self_t *self)
{
    s_write_outcomes (self);
    if (!s_db (self))
        return;
    const char *params [] = { self->worker };
    PGresult *res = PQexecPrepared (self->db, "release", 1, params, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_COMMAND_OK)
        s_db_failed (self, "release deliveries", res);
    else
    if (atol (PQcmdTuples (res)) > 0)
        ly_info (S_ACTOR, "gave back %s deliveries in flight", PQcmdTuples (res));
    PQclear (res);
}


//  --------------------------------------------------------------------------
//  The actor

static void
s_self_destroy (self_t **self_p)
{
    self_t *self = *self_p;
    if (self) {
        ly_httpc_destroy (&self->httpc);    //  aborts transfers, no callbacks
        s_job_t *job;
        if (self->sending)
            while ((job = (s_job_t *) zlistx_detach (self->sending, NULL)))
                s_job_destroy (self, &job);
        if (self->queued)
            while ((job = (s_job_t *) zlistx_detach (self->queued, NULL)))
                s_job_destroy (self, &job);
        zlistx_destroy (&self->sending);
        zlistx_destroy (&self->queued);
        s_outcome_t *outcome;
        if (self->outcomes)
            while ((outcome = (s_outcome_t *) zlistx_detach (self->outcomes, NULL)))
                s_outcome_destroy (&outcome);
        zlistx_destroy (&self->outcomes);
        zhashx_destroy (&self->throttles);
        ly_db_session_destroy (&self->session);
        ly_tap_destroy (&self->tap);
        free (self);
        *self_p = NULL;
    }
}

static void
s_throttle_free (void **item)
{
    free (*item);
    *item = NULL;
}

static self_t *
s_self_new (zsock_t *pipe)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    self->pipe = pipe;
    self->backoff_ms = s_knob (S_BACKOFF);
    self->lease_ms = s_knob (S_LEASE);
    self->timeout_ms = s_knob (S_TIMEOUT);
    if (self->timeout_ms > self->lease_ms / 3) {
        ly_warning (S_ACTOR, "LAYERS_RELAY_TIMEOUT_MS is %ld ms: a third of the lease "
                    "(LAYERS_RELAY_LEASE_MS)", self->lease_ms / 3);
        self->timeout_ms = self->lease_ms / 3;
    }
    self->retry_window = (double) s_knob (S_RETRY_WINDOW);
    self->apple_retry_ms = s_knob (S_APPLE_RETRY);
    self->poll_ms = s_knob (S_POLL);
    self->claim_rows = s_knob (S_CLAIM);
    self->held_max = (size_t) s_knob (S_HELD);
    self->keep_days = s_knob (S_KEEP_DAYS);
    self->row_bytes = 16 << 10;     //  until a claim tells: events may carry 32 KiB

    char host [64] = "";
    gethostname (host, sizeof host - 1);
    host [sizeof host - 1] = 0;
    uint8_t tag [4] = { 0 };
    FILE *urandom = fopen ("/dev/urandom", "rb");
    if (urandom) {
        if (fread (tag, 1, sizeof tag, urandom) != sizeof tag)
            memset (tag, 0, sizeof tag);
        fclose (urandom);
    }
    //  The pid namespace tells apart containers that share a host name. In hex: its
    //  ten decimal digits read as a phone number to the log scrubber, which masked it.
    struct stat pidns;
    if (stat ("/proc/self/ns/pid", &pidns) == 0)
        snprintf (self->local, sizeof self->local, "%s~%lx:", host, (unsigned long) pidns.st_ino);
    else
        snprintf (self->local, sizeof self->local, "%s~?:", host);
    snprintf (self->worker, sizeof self->worker, "%s%d:%02x%02x%02x%02x", self->local,
              (int) getpid (), tag [0], tag [1], tag [2], tag [3]);
    if (strchr (self->local, '?'))
        *self->local = 0;       //  no pid namespace to be sure of: leases only
    self->random = ((uint64_t) tag [0] << 24 | (uint64_t) tag [1] << 16 | (uint64_t) tag [2] << 8 | tag [3])
                 ^ ((uint64_t) getpid () << 32) ^ (uint64_t) ly_now_usec ();
    if (self->random == 0)
        self->random = 0x9E3779B97F4A7C15ULL;

    self->tap = ly_tap_new (S_ACTOR);
    self->httpc = ly_httpc_new (self->timeout_ms);
    self->session = ly_db_session_new (LY_DB_RELAY, S_ACTOR, s_session_setup, self);
    self->queued = zlistx_new ();
    self->sending = zlistx_new ();
    self->outcomes = zlistx_new ();
    self->throttles = zhashx_new ();
    zhashx_set_destructor (self->throttles, s_throttle_free);
    for (int d = 0; d < LY_DEST_COUNT; d++) {
        char labels [96];
        for (int o = 0; o < S_OUTCOMES; o++) {
            snprintf (labels, sizeof labels, "destination=\"%s\",outcome=\"%s\"",
                      ly_destination_name ((ly_destination_t) d), s_outcome_names [o]);
            self->events [d][o] = ly_counter ("layers_relay_events_total",
                "Events the relay finished or retried, by destination and outcome", labels);
        }
        snprintf (labels, sizeof labels, "destination=\"%s\"", ly_destination_name ((ly_destination_t) d));
        self->requests [d] = ly_counter ("layers_relay_requests_total",
            "Requests the relay sent to ad networks", labels);
        self->seconds [d] = ly_histogram ("layers_relay_request_seconds",
            "Time for an ad network to answer one request", labels);
        self->due [d] = ly_gauge ("layers_relay_due",
            "Deliveries due and not claimed by any relay (measured every few seconds)", labels);
        self->waited [d] = ly_gauge ("layers_relay_due_oldest_seconds",
            "How long past its due time the oldest unclaimed delivery is", labels);
    }
    self->unmapped = ly_counter ("layers_relay_unmapped_total",
        "Events not sent because the destination has no name for them", "destination=\"tiktok\"");
    if (!self->tap || !self->httpc) {
        s_self_destroy (&self);
        return NULL;
    }
    if (!ly_master_key ()) {
        ly_error (S_ACTOR, "no master key: the relay cannot open ad-network secrets");
        s_self_destroy (&self);
        return NULL;
    }
    return self;
}

static const char *
s_status (void *arg)
{
    self_t *self = (self_t *) arg;
    return ly_db_session_get (self->session)? "ok": "database down";
}

//  Milliseconds zmq_poll may wait: until the nearest deadline.
static long
s_poll_timeout (self_t *self)
{
    int64_t now = ly_mono_msec ();
    //  Stopping, only the requests in flight, their outcomes and our leases count
    int64_t next = self->stopping? self->stopping: self->next_claim;
    if (!self->stopping && self->next_reap < next)
        next = self->next_reap;
    if (!self->stopping && self->next_sweep < next)
        next = self->next_sweep;
    if (!self->stopping && self->keep_days > 0 && self->next_prune < next)
        next = self->next_prune;
    if (self->rows_held > 0 && self->next_heartbeat < next)
        next = self->next_heartbeat;
    if (zlistx_size (self->outcomes) && self->next_write < next)
        next = self->next_write;
    if (zlistx_size (self->queued) && ly_httpc_active (self->httpc) < S_MAX_TRANSFERS
    &&  !self->stopping)
        next = now;
    long wait = next > now? (long) (next - now): 0;
    long curl = ly_httpc_timeout (self->httpc);
    if (curl >= 0 && curl < wait)
        wait = curl;
    return wait;
}

//  Does what is due now.
static void
s_work (self_t *self)
{
    int64_t now = ly_mono_msec ();
    if (zlistx_size (self->outcomes) && now >= self->next_write)
        s_write_outcomes (self);
    if (self->stopping) {
        //  Only the requests in flight end: their rows are not sent again
        if (self->rows_held > 0 && now >= self->next_heartbeat)
            s_heartbeat (self);
        return;
    }
    if (now >= self->next_reap)
        s_reap (self);
    if (now >= self->next_sweep)
        s_sweep (self);
    if (self->keep_days > 0 && now >= self->next_prune)
        s_prune (self);
    if (self->rows_held > 0 && now >= self->next_heartbeat)
        s_heartbeat (self);
    if (now >= self->next_claim)
        s_claim (self);
    s_send_queued (self);
    if (zlistx_size (self->outcomes))
        s_write_outcomes (self);
    s_drain_notifies (self);
}

void
ly_relay_actor (zsock_t *pipe, void *args)
{
    self_t *self = s_self_new (pipe);
    ly_actor_ready (pipe, self != NULL);
    if (!self)
        return;
    ly_info (S_ACTOR, "relay %s: lease %ld ms, timeout %ld ms, first retry after %ld ms",
             self->worker, self->lease_ms, self->timeout_ms, self->backoff_ms);
    zmq_pollitem_t items [3 + S_MAX_POLL_SOCKETS];
    while (true) {
        s_work (self);
        if (self->stopping && (ly_httpc_active (self->httpc) == 0
                               || ly_mono_msec () >= self->stopping))
            break;
        memset (items, 0, 3 * sizeof (zmq_pollitem_t));
        items [0].socket = zsock_resolve (pipe);
        items [0].events = ZMQ_POLLIN;
        items [1].socket = zsock_resolve (ly_tap_socket (self->tap));
        items [1].events = ZMQ_POLLIN;
        size_t fixed = 2;
        PGconn *db = self->db;          //  the connection the poll watches
        if (db && PQsocket (db) >= 0) {
            items [fixed].fd = PQsocket (db);
            items [fixed++].events = ZMQ_POLLIN;
        }
        size_t sockets = ly_httpc_pollitems (self->httpc, items + fixed, S_MAX_POLL_SOCKETS);
        int rc = zmq_poll (items, (int) (fixed + sockets), s_poll_timeout (self));
        if (rc == -1) {
            if (errno == ETERM)
                break;
            continue;                   //  EINTR
        }
        if (items [0].revents & ZMQ_POLLIN) {
            if (ly_actor_pipe (pipe, S_ACTOR, &self->verbose, s_status, self)
            &&  !self->stopping)
                self->stopping = ly_mono_msec () + S_STOP_DRAIN_MSEC;
        }
        if (items [1].revents & ZMQ_POLLIN)
            ly_tap_handle (self->tap);
        if (fixed == 3 && items [2].revents && self->db == db) {
            if (!PQconsumeInput (db))
                s_db_failed (self, "read from the database", NULL);
            s_drain_notifies (self);
        }
        ly_httpc_process (self->httpc, items + fixed, sockets);
    }
    //  The requests still running are aborted before their rows are given back, so
    //  that no other relay sends them while ours may still be going out
    ly_httpc_destroy (&self->httpc);
    s_release (self);
    s_self_destroy (&self);
}
