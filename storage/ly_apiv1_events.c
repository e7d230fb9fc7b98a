/*  ly_apiv1_events.c: a project's events (newest first by received_at and seq, with
    time, name and user_id filters; only the columns the data classification allows:
    hashes, never raw personal data, and no attribution token) and its relay deliveries
    (status and destination filters; replay of dead letters). */
#include "ly_apiv1_private.h"

#define S_REPLAY_MAX "10000"        /* dead letters set back to pending per call */
#define S_REPLAY_IDS_MAX 1000       /* delivery_ids in one replay body */

static bool
s_is_event_name (const char *text)
{
    return ly_apiv1_is_charset (text, "abcdefghijklmnopqrstuvwxyz0123456789_", 64);
}

static bool
s_is_one_of (const char *text, const char *const *words)
{
    for (; *words; words++)
        if (streq (*words, text))
            return true;
    return false;
}

static const char *const s_destinations [] = { "meta", "tiktok", "apple_search_ads", NULL };
static const char *const s_statuses [] = { "pending", "in_flight", "delivered", "dead",
                                           "skipped", NULL };

//  Reads an RFC 3339 query parameter into usec text; 0 (absent: ""), or -1 with 400.
static int
s_time_param (ly_apiv1_ctx_t *ctx, const char *name, char usec_text [24])
{
    const char *text = ly_apiv1_query (ctx, name);
    usec_text [0] = 0;
    if (!text)
        return 0;
    int64_t usec;
    if (ly_apiv1_rfc3339 (text, &usec)) {
        ly_apiv1_error (ctx, 400, "bad_query", "%s must be an RFC 3339 date-time, as in"
                        " 2026-01-31T12:00:00Z", name);
        return -1;
    }
    snprintf (usec_text, 24, "%" PRId64, usec);
    return 0;
}

void
ly_apiv1_events_list (ly_apiv1_ctx_t *ctx)
{
    const char *project_id = ctx->params [0];
    ly_apiv1_page_t page;
    char from [24], to [24];
    if (ly_apiv1_page (ctx, 'e', &page) || s_time_param (ctx, "from", from)
    ||  s_time_param (ctx, "to", to))
        return;
    const char *name = ly_apiv1_query (ctx, "name");
    const char *user_id = ly_apiv1_query (ctx, "user_id");
    if (name && !s_is_event_name (name)) {
        ly_apiv1_error (ctx, 400, "bad_query", "name must be an event name, [a-z0-9_]{1,64}");
        return;
    }
    if (user_id && (ly_apiv1_chars (user_id) < 1 || ly_apiv1_chars (user_id) > 256)) {
        ly_apiv1_error (ctx, 400, "bad_query", "user_id must have 1 to 256 characters");
        return;
    }
    if (!ly_apiv1_project_exists (ctx, project_id))
        return;
    //  Only the filters given become conditions, so the planner can prune partitions.
    ly_apiv1_sql_t q;
    ly_apiv1_sql_init (&q,
        "SELECT event_id, name, event_time, received_at, user_id,"
        "       email_sha256, phone_sha256, phone_e164_sha256, properties,"
        "       device_os AS \"device.os\", device_os_version AS \"device.os_version\","
        "       device_model AS \"device.model\", device_brand AS \"device.brand\","
        "       device_locale AS \"device.locale\", device_timezone AS \"device.timezone\","
        "       app_version AS \"app.version\", app_build AS \"app.build\","
        "       app_package AS \"app.package\","
        "       geo_country AS \"geo.country\", geo_region AS \"geo.region\","
        "       consent_ads AS \"consent.ads\", consent_att AS \"consent.att\", seq, "
        LY_APIV1_CURSOR_SQL ("received_at", "seq")
        "  FROM sdk_events");
    ly_apiv1_sql_add (&q, " WHERE project_id = $?", 1, project_id);
    if (from [0])
        ly_apiv1_sql_add (&q, " AND received_at >= " LY_APIV1_USEC_SQL ("$?"), 1, from);
    if (to [0])
        ly_apiv1_sql_add (&q, " AND received_at < " LY_APIV1_USEC_SQL ("$?"), 1, to);
    if (name)
        ly_apiv1_sql_add (&q, " AND name = $?", 1, name);
    if (user_id)
        ly_apiv1_sql_add (&q, " AND user_id = $?", 1, user_id);
    if (page.has_cursor)
        ly_apiv1_sql_add (&q, " AND (received_at, seq) < (" LY_APIV1_USEC_SQL ("$?") ", $?::bigint)",
                          2, page.after_a, page.after_b);
    ly_apiv1_sql_add (&q, " ORDER BY received_at DESC, seq DESC LIMIT $?", 1, page.fetch);
    PGresult *res = ly_apiv1_exec (ctx, q.sql, q.nparams, q.params);
    ly_apiv1_sql_free (&q);
    if (res)
        ly_apiv1_page_reply (ctx, res, 'e', &page, NULL);
    PQclear (res);
}

void
ly_apiv1_deliveries_list (ly_apiv1_ctx_t *ctx)
{
    const char *project_id = ctx->params [0];
    ly_apiv1_page_t page;
    if (ly_apiv1_page (ctx, 'd', &page))
        return;
    const char *status = ly_apiv1_query (ctx, "status");
    const char *destination = ly_apiv1_query (ctx, "destination");
    if (status && !s_is_one_of (status, s_statuses)) {
        ly_apiv1_error (ctx, 400, "bad_query",
                        "status must be one of pending, in_flight, delivered, dead, skipped");
        return;
    }
    if (destination && !s_is_one_of (destination, s_destinations)) {
        ly_apiv1_error (ctx, 400, "bad_query",
                        "destination must be one of meta, tiktok, apple_search_ads");
        return;
    }
    if (!ly_apiv1_project_exists (ctx, project_id))
        return;
    ly_apiv1_sql_t q;
    ly_apiv1_sql_init (&q,
        "SELECT delivery_id, event_id, event_received_at, destination, status, attempts,"
        "       next_attempt_at, last_status, last_response, reason, fbtrace_id, request_id,"
        "       created_at, updated_at, delivered_at, delivery_id::text AS _cursor"
        "  FROM relay_deliveries");
    ly_apiv1_sql_add (&q, " WHERE project_id = $?", 1, project_id);
    if (status)
        ly_apiv1_sql_add (&q, " AND status = $?", 1, status);
    if (destination)
        ly_apiv1_sql_add (&q, " AND destination = $?", 1, destination);
    if (page.has_cursor)
        ly_apiv1_sql_add (&q, " AND delivery_id < $?::bigint", 1, page.after_a);
    ly_apiv1_sql_add (&q, " ORDER BY delivery_id DESC LIMIT $?", 1, page.fetch);
    PGresult *res = ly_apiv1_exec (ctx, q.sql, q.nparams, q.params);
    ly_apiv1_sql_free (&q);
    if (res)
        ly_apiv1_page_reply (ctx, res, 'd', &page, NULL);
    PQclear (res);
}

//  Reads the replay body: destination (optional) and delivery_ids (optional) as a
//  PostgreSQL array literal (caller frees). 0, or -1 with 422.
static int
s_replay_body (ly_apiv1_ctx_t *ctx, const char **destination, char **ids)
{
    const char *key;
    json_t *value;
    *destination = NULL;
    *ids = NULL;
    json_object_foreach (ctx->body, key, value) {
        if (!streq (key, "destination") && !streq (key, "delivery_ids")) {
            ly_apiv1_field_error (ctx, key, "unknown field \"%.64s\"", key);
            return -1;
        }
    }
    value = json_object_get (ctx->body, "destination");
    if (value && !json_is_null (value)) {
        *destination = json_string_value (value);
        if (!*destination || !s_is_one_of (*destination, s_destinations)) {
            ly_apiv1_field_error (ctx, "destination",
                                  "destination must be one of meta, tiktok, apple_search_ads");
            return -1;
        }
    }
    value = json_object_get (ctx->body, "delivery_ids");
    if (value && !json_is_null (value)) {
        size_t count = json_array_size (value);
        if (!json_is_array (value) || count < 1 || count > S_REPLAY_IDS_MAX) {
            ly_apiv1_field_error (ctx, "delivery_ids", "delivery_ids must be an array of 1 to %d"
                                  " delivery ids", S_REPLAY_IDS_MAX);
            return -1;
        }
        char *list = (char *) malloc (count * 21 + 3);
        size_t len = 0;
        list [len++] = '{';
        size_t index;
        json_t *id;
        json_array_foreach (value, index, id) {
            if (!json_is_integer (id) || json_integer_value (id) < 1) {
                free (list);
                ly_apiv1_field_error (ctx, "delivery_ids", "delivery_ids must hold positive integers");
                return -1;
            }
            len += (size_t) snprintf (list + len, 22, "%s%" JSON_INTEGER_FORMAT, index? ",": "",
                                      json_integer_value (id));
        }
        list [len++] = '}';
        list [len] = 0;
        *ids = list;
    }
    return 0;
}

void
ly_apiv1_deliveries_replay (ly_apiv1_ctx_t *ctx)
{
    const char *project_id = ctx->params [0];
    const char *destination;
    char *ids;
    if (s_replay_body (ctx, &destination, &ids))
        return;
    if (ly_apiv1_project_exists (ctx, project_id)) {
        //  Dead letters only: delivered, pending, in-flight and skipped rows are left alone.
        const char *params [] = { project_id, destination, ids };
        PGresult *res = ly_apiv1_exec (ctx,
            //  Like a new row: the retry window counts from the replay (created_at)
            "UPDATE relay_deliveries SET status = 'pending', attempts = 0,"
            "       next_attempt_at = now (), reason = 'replay', locked_by = NULL,"
            "       locked_until = NULL, created_at = now (), updated_at = now ()"
            " WHERE delivery_id IN ("
            "       SELECT delivery_id FROM relay_deliveries"
            "        WHERE project_id = $1 AND status = 'dead'"
            "          AND ($2::text IS NULL OR destination = $2)"
            "          AND ($3::bigint [] IS NULL OR delivery_id = ANY ($3::bigint []))"
            "        ORDER BY delivery_id LIMIT " S_REPLAY_MAX
            "        FOR UPDATE SKIP LOCKED)"
            "   AND status = 'dead'"
            " RETURNING delivery_id", 3, params);
        if (res) {
            json_t *replayed = json_array ();
            for (int row = 0; row < PQntuples (res); row++)
                json_array_append_new (replayed, json_integer (strtoll (PQgetvalue (res, row, 0), NULL, 10)));
            ly_apiv1_reply (ctx, 200, json_pack ("{s:i, s:o}", "replayed", PQntuples (res),
                                                 "delivery_ids", replayed));
        }
        PQclear (res);
    }
    free (ids);
}
