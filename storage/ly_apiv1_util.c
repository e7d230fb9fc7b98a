/*  ly_apiv1_util.c: the partner API's shared helpers (see ly_apiv1_private.h): answers,
    statements and their errors, rows as JSON, ETags, pagination and cursors, field
    validation, and the formats the API reads (UUIDs, RFC 3339, base64url). */
#include "ly_apiv1_private.h"
#include "ly_time.h"
#include "ly_jsonr.h"
#include "ly_jsonw.h"
#include "ly_log.h"

#define S_ACTOR LY_APIV1_ACTOR
#define S_PAGE_BYTES (4 << 20)     /* a list page's items, in bytes of JSON, at most */

//  --------------------------------------------------------------------------
//  Answers

char *
ly_apiv1_dump (const json_t *json)
{
    ly_jsonw_t out;
    size_t len;
    ly_jsonw_init (&out, 1024);
    ly_jsonw_json (&out, json);
    char *text = ly_jsonw_take (&out, &len);
    return text? text: json_dumps (json, JSON_COMPACT);
}

static void
s_set_json (ly_apiv1_ctx_t *ctx, unsigned status, json_t *json)
{
    ly_api_response_t *resp = ctx->resp;
    free (resp->body);
    resp->body = json? ly_apiv1_dump (json): NULL;
    resp->body_len = resp->body? strlen (resp->body): 0;
    resp->status = json && !resp->body? 500: status;
    json_decref (json);
}

static void
s_error_v (ly_apiv1_ctx_t *ctx, unsigned status, const char *code, const char *field,
           const char *format, va_list args)
{
    char message [512];
    vsnprintf (message, sizeof message, format, args);
    json_t *error = json_pack ("{s:s, s:s}", "code", code, "message", message);
    if (field)
        json_object_set_new (error, "field", json_string (field));
    ly_api_response_t *resp = ctx->resp;
    free (resp->etag);
    free (resp->location);
    free (resp->content_type);
    resp->etag = resp->location = resp->content_type = NULL;
    s_set_json (ctx, status, json_pack ("{s:o}", "error", error));
}

void
ly_apiv1_error (ly_apiv1_ctx_t *ctx, unsigned status, const char *code, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    s_error_v (ctx, status, code, NULL, format, args);
    va_end (args);
}

void
ly_apiv1_field_error (ly_apiv1_ctx_t *ctx, const char *field, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    s_error_v (ctx, 422, "invalid_field", field, format, args);
    va_end (args);
}

void
ly_apiv1_reply (ly_apiv1_ctx_t *ctx, unsigned status, json_t *json)
{
    s_set_json (ctx, status, json);
}

void
ly_apiv1_no_content (ly_apiv1_ctx_t *ctx)
{
    s_set_json (ctx, 204, NULL);
}

void
ly_apiv1_location (ly_apiv1_ctx_t *ctx, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    free (ctx->resp->location);
    if (vasprintf (&ctx->resp->location, format, args) < 0)
        ctx->resp->location = NULL;
    va_end (args);
}

bool
ly_apiv1_failed (const ly_apiv1_ctx_t *ctx)
{
    return ctx->failed || ctx->resp->status >= 400;
}

//  --------------------------------------------------------------------------
//  Statements

PGresult *
ly_apiv1_exec (ly_apiv1_ctx_t *ctx, const char *sql, int nparams, const char *const *params)
{
    if (!ctx->db || ctx->failed) {
        if (!ly_apiv1_failed (ctx))
            ly_apiv1_error (ctx, 500, "internal", "no database session");
        ctx->failed = true;
        return NULL;
    }
    if (ctx->cancelled && __atomic_load_n (ctx->cancelled, __ATOMIC_SEQ_CST)) {
        ly_apiv1_error (ctx, 503, "shutting_down", "the server is shutting down; retry later");
        ctx->failed = true;
        return NULL;
    }
    PGresult *res = PQexecParams (ctx->db, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus (res);
    if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK)
        return res;

    ctx->failed = true;
    const char *state = PQresultErrorField (res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY);
    const char *constraint = PQresultErrorField (res, PG_DIAG_CONSTRAINT_NAME);
    if (!state || PQstatus (ctx->db) != CONNECTION_OK) {
        ctx->db_broken = true;
        ly_warning (S_ACTOR, "request %s: lost the database: %s", ctx->req->request_id,
                    PQerrorMessage (ctx->db));
        ly_apiv1_error (ctx, 503, "unavailable", "the database is unavailable; retry later");
    }
    else
    if (streq (state, "23505")) {
        if (constraint && streq (constraint, "members_org_email"))
            ly_apiv1_error (ctx, 409, "conflict", "a member with this email already exists");
        else
            ly_apiv1_error (ctx, 409, "conflict", "this already exists");
    }
    else
    if (streq (state, "23503"))
        ly_apiv1_error (ctx, 409, "conflict", "this refers to something that does not exist, "
                        "or something still refers to it");
    else
    if (strncmp (state, "23", 2) == 0 || strncmp (state, "22", 2) == 0)
        ly_apiv1_error (ctx, 422, "invalid", "a value is out of range or malformed%s%s",
                        constraint? ": ": "", constraint? constraint: "");
    else
    if (streq (state, "40001") || streq (state, "40P01") || streq (state, "55P03"))
        ly_apiv1_error (ctx, 409, "conflict", "a concurrent change conflicted; retry");
    else
    if (streq (state, "57014"))
        ly_apiv1_error (ctx, 503, "timeout", "the database took too long; retry later");
    else
        ly_apiv1_error (ctx, 500, "internal", "the request failed in the database");
    //  Data exceptions (class 22) may quote the value in their message: only the code.
    //  Other messages name constraints, columns and types, never values.
    if (!ctx->db_broken)
        ly_log (ctx->resp->status == 500 || ctx->resp->status == 503? LY_LOG_WARNING: LY_LOG_INFO, S_ACTOR,
                "request %s: statement failed with SQLSTATE %s: %s", ctx->req->request_id, state,
                strncmp (state, "22", 2) && primary? primary: "(message withheld)");
    PQclear (res);
    return NULL;
}

const char *
ly_apiv1_value (const PGresult *res, int row, const char *name)
{
    int col = PQfnumber (res, name);
    if (col < 0 || row >= PQntuples (res) || PQgetisnull (res, row, col))
        return NULL;
    return PQgetvalue (res, row, col);
}

//  PostgreSQL's ISO output in UTC ("2026-01-02 03:04:05.1234+00", which leaves out
//  trailing zeros of the fraction, and a zero fraction) as RFC 3339 with microseconds
//  always: "2026-01-02T03:04:05.123400Z".
static json_t *
s_timestamp (const char *text)
{
    size_t len = strlen (text);
    if (len < 22 || len > 29 || text [10] != ' ' || strcmp (text + len - 3, "+00"))
        return json_string (text);          //  not a four-digit year: as PostgreSQL says
    size_t digits = len - 22? len - 23: 0;
    if (len > 22 && text [19] != '.')
        return json_string (text);
    char out [32];
    snprintf (out, sizeof out, "%.10sT%.8s.%.*s%.*sZ", text, text + 11,
              (int) digits, text + 20, (int) (6 - digits), "000000");
    return json_string (out);
}

static json_t *
s_typed (Oid type, const char *text)
{
    switch (type) {
        case 16:                            //  bool
            return json_boolean (text [0] == 't');
        case 20: case 21: case 23:          //  int8, int2, int4
            return json_integer (strtoll (text, NULL, 10));
        case 700: case 701: case 1700:      //  float4, float8, numeric
            return json_real (strtod (text, NULL));
        case 114: case 3802: {              //  json, jsonb
            json_t *value = ly_jsonr_load (text, strlen (text), JSON_DECODE_ANY);
            return value? value: json_null ();
        }
        case 1184:                          //  timestamptz
            return s_timestamp (text);
        default:
            return json_string (text);
    }
}

json_t *
ly_apiv1_row (const PGresult *res, int row)
{
    json_t *object = json_object ();
    for (int col = 0; col < PQnfields (res); col++) {
        const char *name = PQfname (res, col);
        if (name [0] == '_')
            continue;
        json_t *value = PQgetisnull (res, row, col)? json_null ()
                      : s_typed (PQftype (res, col), PQgetvalue (res, row, col));
        if (!value)
            value = json_null ();
        const char *dot = strchr (name, '.');
        if (dot) {
            char parent [64];
            snprintf (parent, sizeof parent, "%.*s", (int) (dot - name), name);
            json_t *child = json_object_get (object, parent);
            if (!child) {
                child = json_object ();
                json_object_set_new (object, parent, child);
            }
            json_object_set_new (child, dot + 1, value);
        }
        else
            json_object_set_new (object, name, value);
    }
    return object;
}

void
ly_apiv1_etag (ly_apiv1_ctx_t *ctx, const PGresult *res, int row)
{
    const char *value = ly_apiv1_value (res, row, "_etag");
    free (ctx->resp->etag);
    ctx->resp->etag = value? zsys_sprintf ("\"%s\"", value): NULL;
}

bool
ly_apiv1_if_match (ly_apiv1_ctx_t *ctx, const char *etag_value)
{
    const char *header = ctx->req->if_match;
    if (!header)
        return true;
    //  A list of entity tags, or "*" (any current version: none when etag_value is NULL,
    //  RFC 9110); weak tags compare by their opaque part.
    const char *p = header;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*') {
            if (etag_value)
                return true;
            break;
        }
        if (strncmp (p, "W/", 2) == 0)
            p += 2;
        if (*p != '"')
            break;
        const char *end = strchr (p + 1, '"');
        if (!end)
            break;
        size_t len = (size_t) (end - p - 1);
        if (etag_value && len == strlen (etag_value) && memcmp (p + 1, etag_value, len) == 0)
            return true;
        p = end + 1;
    }
    ly_apiv1_error (ctx, 412, "precondition_failed",
                    "If-Match does not match the current version (ETag); fetch it again");
    return false;
}

bool
ly_apiv1_project_exists (ly_apiv1_ctx_t *ctx, const char *project_id)
{
    const char *params [] = { project_id };
    PGresult *res = ly_apiv1_exec (ctx, "SELECT 1 FROM projects WHERE project_id = $1", 1, params);
    if (!res)
        return false;
    bool found = PQntuples (res) == 1;
    PQclear (res);
    if (!found)
        ly_apiv1_error (ctx, 404, "not_found", "no such project");
    return found;
}

//  --------------------------------------------------------------------------
//  Statements built from constant fragments

void
ly_apiv1_sql_init (ly_apiv1_sql_t *q, const char *start)
{
    memset (q, 0, sizeof *q);
    q->sql = strdup (start);
}

void
ly_apiv1_sql_add (ly_apiv1_sql_t *q, const char *fragment, int count, ...)
{
    va_list args;
    va_start (args, count);
    size_t len = strlen (q->sql);
    size_t size = len + strlen (fragment) + 8 * (size_t) count + 1;
    char *sql = (char *) realloc (q->sql, size);
    assert (sql);
    q->sql = sql;
    for (const char *f = fragment; *f; f++) {
        if (f [0] == '$' && f [1] == '?') {
            assert (count > 0 && q->nparams < LY_APIV1_MAX_VALUES);
            count--;
            q->params [q->nparams++] = va_arg (args, const char *);
            len += (size_t) snprintf (sql + len, size - len, "$%d", q->nparams);
            f++;
        }
        else
            sql [len++] = *f;
    }
    sql [len] = 0;
    assert (count == 0);
    va_end (args);
}

void
ly_apiv1_sql_free (ly_apiv1_sql_t *q)
{
    free (q->sql);
    q->sql = NULL;
}

//  --------------------------------------------------------------------------
//  Query parameters and pagination

const char *
ly_apiv1_query (const ly_apiv1_ctx_t *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->query_count; i++)
        if (streq (ctx->query_names [i], name))
            return ctx->query_values [i];
    return NULL;
}

static bool
s_is_int (const char *text, size_t max_digits)
{
    size_t len = strlen (text);
    if (len == 0 || len > max_digits)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isdigit ((unsigned char) text [i]))
            return false;
    return true;
}

//  What ties a cursor to the list that gave it: the first 16 hex digits of the
//  HMAC-SHA-256, under the master key, of the tenant, the list's path and the position,
//  so that a cursor of another list (or of the same list of another organization), or
//  one made up, is refused rather than read as a position in this one.
static void
s_cursor_tag (ly_apiv1_ctx_t *ctx, const char *position, size_t len, char tag [17])
{
    char *list = zsys_sprintf ("%s\n%s\n%.*s", ctx->org_id, ctx->req->path, (int) len, position);
    char hex [65];
    const uint8_t *key = ly_master_key ();
    if (key)
        ly_hmac_sha256_hex (key, list, strlen (list), hex);
    else
        ly_sha256_hex (list, strlen (list), hex);
    zstr_free (&list);
    snprintf (tag, 17, "%.16s", hex);
}

int
ly_apiv1_page (ly_apiv1_ctx_t *ctx, char kind, ly_apiv1_page_t *page)
{
    memset (page, 0, sizeof *page);
    page->limit = LY_APIV1_PAGE_DEFAULT;
    const char *limit = ly_apiv1_query (ctx, "limit");
    if (limit) {
        if (!s_is_int (limit, 4) || atoi (limit) < 1 || atoi (limit) > LY_APIV1_PAGE_MAX) {
            ly_apiv1_error (ctx, 400, "bad_query", "limit must be an integer from 1 to %d",
                            LY_APIV1_PAGE_MAX);
            return -1;
        }
        page->limit = atoi (limit);
    }
    snprintf (page->fetch, sizeof page->fetch, "%d", page->limit + 1);
    const char *cursor = ly_apiv1_query (ctx, "cursor");
    if (!cursor)
        return 0;
    size_t len = 0;
    char *text = strlen (cursor) <= 200? ly_apiv1_base64url_decode (cursor, &len): NULL;
    //  It ends with the tag of the list that gave it and its position (s_cursor_tag)
    char tag [17];
    char *dot = text && strlen (text) == len? strrchr (text, '.'): NULL;
    if (dot)
        s_cursor_tag (ctx, text, (size_t) (dot - text), tag);
    bool valid = dot && streq (dot + 1, tag);
    if (valid) {
        *dot = 0;
        len = (size_t) (dot - text);
    }
    valid = valid && len >= 3 && text [0] == kind && text [1] == '.';
    if (valid) {
        char *second = strchr (text + 2, '.');
        if (kind == 'd')
            valid = !second && s_is_int (text + 2, 18);
        else
        if (!second)
            valid = false;
        else {
            *second++ = 0;
            valid = s_is_int (text + 2, 18)
                 && (kind == 'c'? ly_is_uuid (second): s_is_int (second, 18));
            if (valid)
                snprintf (page->after_b, sizeof page->after_b, "%s", second);
        }
        if (valid)
            snprintf (page->after_a, sizeof page->after_a, "%s", text + 2);
    }
    free (text);
    if (!valid) {
        ly_apiv1_error (ctx, 400, "bad_cursor", "the cursor is not one this list gave");
        return -1;
    }
    page->has_cursor = true;
    return 0;
}

void
ly_apiv1_page_reply (ly_apiv1_ctx_t *ctx, const PGresult *res, char kind,
                     const ly_apiv1_page_t *page, void (*decorate) (json_t *row))
{
    json_t *data = json_array ();
    int rows = PQntuples (res);
    //  Items up to the limit, and no more than S_PAGE_BYTES of them (large items, as
    //  1 MiB of metadata each, would pass the frame to the gateway): the rest is the
    //  next page's
    int taken = 0;
    size_t bytes = 0;
    for (int row = 0; row < rows && row < page->limit; row++) {
        json_t *item = ly_apiv1_row (res, row);
        if (decorate)
            decorate (item);
        size_t size = json_dumpb (item, NULL, 0, JSON_COMPACT);
        if (taken > 0 && bytes + size > S_PAGE_BYTES) {
            json_decref (item);
            break;
        }
        bytes += size;
        json_array_append_new (data, item);
        taken++;
    }
    json_t *next = json_null ();
    const char *last = taken > 0 && taken < rows? ly_apiv1_value (res, taken - 1, "_cursor"): NULL;
    if (last) {
        char *position = zsys_sprintf ("%c.%s", kind, last);
        char tag [17];
        s_cursor_tag (ctx, position, strlen (position), tag);
        char *plain = zsys_sprintf ("%s.%s", position, tag);
        zstr_free (&position);
        char *cursor = ly_apiv1_base64url (plain, strlen (plain));
        if (cursor)
            next = json_string (cursor);
        free (cursor);
        zstr_free (&plain);
    }
    ly_apiv1_reply (ctx, 200, json_pack ("{s:o, s:o}", "data", data, "next_cursor", next));
}

//  --------------------------------------------------------------------------
//  Field validation

int
ly_apiv1_fields (ly_apiv1_ctx_t *ctx, const ly_apiv1_field_t *fields, size_t count,
                 bool creating, ly_apiv1_values_t *out)
{
    memset (out, 0, sizeof *out);
    const char *key;
    json_t *value;
    json_object_foreach (ctx->body, key, value) {
        size_t i;
        for (i = 0; i < count && !streq (fields [i].name, key); i++)
            ;
        if (i == count) {
            ly_apiv1_field_error (ctx, key, "unknown field \"%.64s\"", key);
            goto refused;
        }
    }
    for (size_t i = 0; i < count; i++) {
        const ly_apiv1_field_t *field = &fields [i];
        value = json_object_get (ctx->body, field->name);
        if (!value) {
            if (creating && field->required) {
                ly_apiv1_field_error (ctx, field->name, "%s is required", field->name);
                goto refused;
            }
            continue;
        }
        char *text = NULL;
        if (json_is_null (value)) {
            if (!field->nullable) {
                ly_apiv1_field_error (ctx, field->name, "%s cannot be null", field->name);
                goto refused;
            }
        }
        else
        if (field->kind == LY_FIELD_BOOL) {
            if (!json_is_boolean (value)) {
                ly_apiv1_field_error (ctx, field->name, "%s must be true or false", field->name);
                goto refused;
            }
            text = strdup (json_is_true (value)? "true": "false");
        }
        else
        if (field->kind == LY_FIELD_OBJECT) {
            if (!json_is_object (value)) {
                ly_apiv1_field_error (ctx, field->name, "%s must be a JSON object", field->name);
                goto refused;
            }
            text = ly_apiv1_dump (value);
        }
        else {
            const char *string = json_string_value (value);
            size_t chars = string? ly_apiv1_chars (string): 0;
            if (!string) {
                ly_apiv1_field_error (ctx, field->name, "%s must be a string", field->name);
                goto refused;
            }
            if ((chars == 0 && !field->allow_empty) || chars > field->max_chars) {
                ly_apiv1_field_error (ctx, field->name, "%s must have %d to %zu characters",
                                      field->name, field->allow_empty? 0: 1, field->max_chars);
                goto refused;
            }
            if (field->check && !field->check (string)) {
                ly_apiv1_field_error (ctx, field->name, "%s must be %s", field->name,
                                      field->hint? field->hint: "well-formed");
                goto refused;
            }
            text = strdup (string);
        }
        out->columns [out->count] = field->name;
        out->values [out->count++] = text;
    }
    return 0;

refused:
    ly_apiv1_values_free (out);
    return -1;
}

void
ly_apiv1_values_free (ly_apiv1_values_t *values)
{
    for (int i = 0; i < values->count; i++)
        free (values->values [i]);
    memset (values, 0, sizeof *values);
}

char *
ly_apiv1_insert_sql (const char *table, const ly_apiv1_values_t *values, const char *returning)
{
    ly_apiv1_sql_t q;
    ly_apiv1_sql_init (&q, "INSERT INTO ");
    ly_apiv1_sql_add (&q, table, 0);
    ly_apiv1_sql_add (&q, " (", 0);
    for (int i = 0; i < values->count; i++) {
        ly_apiv1_sql_add (&q, i? ", ": "", 0);
        ly_apiv1_sql_add (&q, values->columns [i], 0);
    }
    ly_apiv1_sql_add (&q, ") VALUES (", 0);
    for (int i = 0; i < values->count; i++) {
        char number [24];
        snprintf (number, sizeof number, "%s$%d", i? ", ": "", i + 1);
        ly_apiv1_sql_add (&q, number, 0);
    }
    ly_apiv1_sql_add (&q, ") RETURNING ", 0);
    ly_apiv1_sql_add (&q, returning, 0);
    return q.sql;
}

char *
ly_apiv1_update_sql (const char *table, const char *key, const ly_apiv1_values_t *values,
                     const char *returning)
{
    ly_apiv1_sql_t q;
    ly_apiv1_sql_init (&q, "UPDATE ");
    ly_apiv1_sql_add (&q, table, 0);
    ly_apiv1_sql_add (&q, " SET ", 0);
    for (int i = 0; i < values->count; i++) {
        char number [24];
        ly_apiv1_sql_add (&q, i? ", ": "", 0);
        ly_apiv1_sql_add (&q, values->columns [i], 0);
        snprintf (number, sizeof number, " = $%d", i + 2);
        ly_apiv1_sql_add (&q, number, 0);
    }
    ly_apiv1_sql_add (&q, " WHERE ", 0);
    ly_apiv1_sql_add (&q, key, 0);
    ly_apiv1_sql_add (&q, " = $1 RETURNING ", 0);
    ly_apiv1_sql_add (&q, returning, 0);
    return q.sql;
}

PGresult *
ly_apiv1_exec_values (ly_apiv1_ctx_t *ctx, const char *sql, const char *id,
                      const ly_apiv1_values_t *values)
{
    const char *params [LY_APIV1_MAX_VALUES + 1];
    int n = 0;
    if (id)
        params [n++] = id;
    for (int i = 0; i < values->count; i++)
        params [n++] = values->values [i];
    return ly_apiv1_exec (ctx, sql, n, params);
}

//  --------------------------------------------------------------------------
//  Formats

size_t
ly_apiv1_chars (const char *text)
{
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *) text; *p; p++)
        if ((*p & 0xC0) != 0x80)
            chars++;
    return chars;
}

bool
ly_apiv1_is_charset (const char *text, const char *set, size_t max)
{
    size_t len = text? strlen (text): 0;
    return len >= 1 && len <= max && strspn (text, set) == len;
}

int
ly_apiv1_rfc3339 (const char *text, int64_t *usec)
{
    //  A '+' of the offset that was not percent-encoded in a query arrives as a space.
    char copy [64];
    size_t len = strlen (text);
    if (len >= 26 && len < sizeof copy && text [len - 6] == ' ') {
        memcpy (copy, text, len + 1);
        copy [len - 6] = '+';
        text = copy;
    }
    return ly_time_rfc3339 (text, len, usec);
}

static const char s_b64url [] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *
ly_apiv1_base64url (const void *data, size_t len)
{
    const uint8_t *in = (const uint8_t *) data;
    char *out = (char *) malloc (len * 4 / 3 + 4);
    if (!out)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t chunk = (uint32_t) in [i] << 16;
        if (i + 1 < len) chunk |= (uint32_t) in [i + 1] << 8;
        if (i + 2 < len) chunk |= in [i + 2];
        out [n++] = s_b64url [chunk >> 18 & 63];
        out [n++] = s_b64url [chunk >> 12 & 63];
        if (i + 1 < len) out [n++] = s_b64url [chunk >> 6 & 63];
        if (i + 2 < len) out [n++] = s_b64url [chunk & 63];
    }
    out [n] = 0;
    return out;
}

char *
ly_apiv1_base64url_decode (const char *text, size_t *len)
{
    size_t size = strlen (text);
    if (size % 4 == 1)
        return NULL;
    char *out = (char *) malloc (size * 3 / 4 + 3);
    if (!out)
        return NULL;
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < size; i++) {
        const char *at = text [i]? strchr (s_b64url, text [i]): NULL;
        if (!at) {
            free (out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t) (at - s_b64url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out [n++] = (char) (acc >> bits & 0xFF);
        }
    }
    //  The unused low bits must be zero: one text per value.
    if (bits && (acc & ((1u << bits) - 1))) {
        free (out);
        return NULL;
    }
    out [n] = 0;
    *len = n;
    return out;
}

//  --------------------------------------------------------------------------
//  Resources: one row of one table, read, created, updated and deleted the same way

bool
ly_apiv1_lock (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r, const char *id)
{
    ly_apiv1_sql_t q;
    ly_apiv1_sql_init (&q, "SELECT " LY_APIV1_ETAG_SQL ("updated_at") " FROM ");
    ly_apiv1_sql_add (&q, r->table, 0);
    ly_apiv1_sql_add (&q, " WHERE ", 0);
    ly_apiv1_sql_add (&q, r->key, 0);
    ly_apiv1_sql_add (&q, " = $? FOR UPDATE", 1, id);
    PGresult *res = ly_apiv1_exec (ctx, q.sql, q.nparams, q.params);
    ly_apiv1_sql_free (&q);
    if (!res)
        return false;
    bool ok = false;
    if (PQntuples (res) != 1)
        ly_apiv1_error (ctx, 404, "not_found", "no such %s", r->what);
    else
        ok = ly_apiv1_if_match (ctx, PQgetvalue (res, 0, 0));
    PQclear (res);
    return ok;
}

//  Answers status with the one row of res (404 when there is none).
static void
s_reply_row (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r, PGresult *res, unsigned status)
{
    if (PQntuples (res) != 1) {
        ly_apiv1_error (ctx, 404, "not_found", "no such %s", r->what);
        return;
    }
    json_t *row = ly_apiv1_row (res, 0);
    if (r->decorate)
        r->decorate (row);
    ly_apiv1_reply (ctx, status, row);
    ly_apiv1_etag (ctx, res, 0);
    if (status == 201 && r->location) {
        const char *id = ly_apiv1_value (res, 0, r->key);
        ly_apiv1_location (ctx, r->location, id? id: "");
    }
}

void
ly_apiv1_resource_get (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r, const char *id)
{
    ly_apiv1_sql_t q;
    ly_apiv1_sql_init (&q, "SELECT ");
    ly_apiv1_sql_add (&q, r->columns, 0);
    ly_apiv1_sql_add (&q, " FROM ", 0);
    ly_apiv1_sql_add (&q, r->table, 0);
    ly_apiv1_sql_add (&q, " WHERE ", 0);
    ly_apiv1_sql_add (&q, r->key, 0);
    ly_apiv1_sql_add (&q, " = $?", 1, id);
    PGresult *res = ly_apiv1_exec (ctx, q.sql, q.nparams, q.params);
    ly_apiv1_sql_free (&q);
    if (res)
        s_reply_row (ctx, r, res, 200);
    PQclear (res);
}

void
ly_apiv1_resource_create (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r)
{
    ly_apiv1_values_t values;
    if (ly_apiv1_fields (ctx, r->fields, r->field_count, true, &values))
        return;
    if (!r->validate || r->validate (ctx, &values) == 0) {
        char *sql = ly_apiv1_insert_sql (r->table, &values, r->columns);
        PGresult *res = ly_apiv1_exec_values (ctx, sql, NULL, &values);
        if (res)
            s_reply_row (ctx, r, res, 201);
        PQclear (res);
        free (sql);
    }
    ly_apiv1_values_free (&values);
}

void
ly_apiv1_resource_update (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r, const char *id)
{
    ly_apiv1_values_t values;
    if (ly_apiv1_fields (ctx, r->fields, r->field_count, false, &values))
        return;
    if ((!r->validate || r->validate (ctx, &values) == 0) && ly_apiv1_lock (ctx, r, id)) {
        char *sql;
        if (values.count)
            sql = ly_apiv1_update_sql (r->table, r->key, &values, r->columns);
        else
            sql = zsys_sprintf ("SELECT %s FROM %s WHERE %s = $1", r->columns, r->table, r->key);
        PGresult *res = ly_apiv1_exec_values (ctx, sql, id, &values);
        if (res)
            s_reply_row (ctx, r, res, 200);
        PQclear (res);
        free (sql);
    }
    ly_apiv1_values_free (&values);
}

void
ly_apiv1_resource_delete (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r, const char *id)
{
    if (!ly_apiv1_lock (ctx, r, id))
        return;
    ly_apiv1_sql_t q;
    ly_apiv1_sql_init (&q, "DELETE FROM ");
    ly_apiv1_sql_add (&q, r->table, 0);
    ly_apiv1_sql_add (&q, " WHERE ", 0);
    ly_apiv1_sql_add (&q, r->key, 0);
    ly_apiv1_sql_add (&q, " = $?", 1, id);
    PGresult *res = ly_apiv1_exec (ctx, q.sql, q.nparams, q.params);
    ly_apiv1_sql_free (&q);
    if (res)
        ly_apiv1_no_content (ctx);
    PQclear (res);
}
