/*  ly_apiv1.c: the partner API (/v1): the route table, the permission table, and the
    life of one request (see ly_apiv1.h). The handlers are in ly_apiv1_*.c.

    Design. One request is, in this order:
      1. authentication: the token's SHA-256 is looked up on every request (no cache,
         so a revoked token is refused at once) over a layers_auth session, which may
         read api_tokens by hash across tenants and nothing else: 401 when unknown,
         revoked or expired;
      2. routing: the route table below; 404 for an unknown path, 405 when the path
         exists with other methods;
      3. BEGIN on the layers_api session, set_config('layers.org_id', <the token's
         org>, true): the tenant comes from the token only, never from the request.
         Under it, the token's member and role are read (and last_used_at stamped once
         a minute);
      4. authorization: the route's permission against the permission table, the one
         place where roles meet routes: 403;
      5. path ids must be UUIDs (404 otherwise), query parameters must be known (400),
         a body must be application/json (415) and a JSON object (400);
      6. Idempotency-Key on POST: the key, with the request's hash, is claimed in
         api_idempotency inside the same transaction; a retry replays the stored answer;
      7. the handler, with parameterized statements only; 2xx commits, anything else
         rolls back.
    Handlers do not filter by org_id: row-level security is the filter, and a row of
    another tenant is simply not there (404). Nothing of a request body, query or
    database value is logged: one line per request with its id, method, route pattern,
    status and time. */
#include "ly_apiv1_private.h"
#include "ly_crypto.h"
#include "ly_db.h"
#include "ly_jsonr.h"
#include "ly_log.h"

#define S_ACTOR LY_APIV1_ACTOR
#define S_IDEMPOTENCY_TTL "24 hours"

//  --------------------------------------------------------------------------
//  Roles and permissions: the one table

static const struct {
    const char *role;
    int rank;
} s_roles [] = {
    { "owner",  40 },
    { "admin",  30 },
    { "editor", 20 },
    { "viewer", 10 },
};

static const struct {
    ly_apiv1_perm_t perm;
    const char *name;
    const char *role;           /* the least role that has it */
} s_permissions [LY_PERM_COUNT] = {
    { LY_PERM_READ,          "read",          "viewer" },
    { LY_PERM_CONTENT_WRITE, "content.write", "editor" },
    { LY_PERM_PROJECT_WRITE, "project.write", "admin" },
    { LY_PERM_MEMBER_WRITE,  "member.write",  "admin" },
    { LY_PERM_TOKEN_WRITE,   "token.write",   "admin" },
    { LY_PERM_ORG_WRITE,     "org.write",     "owner" },
};

int
ly_apiv1_role_rank (const char *role)
{
    for (size_t i = 0; role && i < sizeof s_roles / sizeof s_roles [0]; i++)
        if (streq (s_roles [i].role, role))
            return s_roles [i].rank;
    return 0;
}

const char *
ly_apiv1_perm_name (ly_apiv1_perm_t perm)
{
    return s_permissions [perm].name;
}

const char *
ly_apiv1_perm_role (ly_apiv1_perm_t perm)
{
    return s_permissions [perm].role;
}

static bool
s_allowed (ly_apiv1_perm_t perm, int rank)
{
    return rank > 0 && rank >= ly_apiv1_role_rank (s_permissions [perm].role);
}

bool
ly_apiv1_may_manage (int rank, int target_rank, int new_rank)
{
    int owner = ly_apiv1_role_rank ("owner");
    if (rank >= owner)
        return true;
    return target_rank < rank && new_rank < rank;
}

json_t *
ly_apiv1_role_permissions (int rank)
{
    json_t *list = json_array ();
    for (int perm = 0; perm < LY_PERM_COUNT; perm++)
        if (s_allowed ((ly_apiv1_perm_t) perm, rank))
            json_array_append_new (list, json_string (s_permissions [perm].name));
    return list;
}

//  --------------------------------------------------------------------------
//  The route table. A "{name}" segment is a parameter; one whose name ends in "_id"
//  must be a UUID (a malformed one answers 404). docs/api.md lists the same routes
//  (tests/test_api.py compares them).

#define S_BODY          1       /* a JSON object body is required */
#define S_BODY_OPTIONAL 2       /* a JSON object body may be sent */
#define S_KEYS          4       /* when it works, what SDK keys stand for changed */

typedef struct {
    const char *method;
    const char *pattern;
    ly_apiv1_perm_t perm;
    unsigned flags;
    const char *query;          /* the query parameters it takes, space-separated */
    ly_apiv1_handler_fn *handler;
} s_route_t;

#define S_PAGE "limit cursor"

static const s_route_t s_routes [] = {
    { "GET",    "/v1/organization", LY_PERM_READ, 0, "", ly_apiv1_org_get },
    { "PATCH",  "/v1/organization", LY_PERM_ORG_WRITE, S_BODY, "", ly_apiv1_org_update },
    { "GET",    "/v1/me", LY_PERM_READ, 0, "", ly_apiv1_me_get },
    { "GET",    "/v1/roles", LY_PERM_READ, 0, "", ly_apiv1_roles_list },

    { "GET",    "/v1/members", LY_PERM_READ, 0, S_PAGE " role", ly_apiv1_members_list },
    { "POST",   "/v1/members", LY_PERM_MEMBER_WRITE, S_BODY, "", ly_apiv1_member_create },
    { "GET",    "/v1/members/{member_id}", LY_PERM_READ, 0, "", ly_apiv1_member_get },
    { "PATCH",  "/v1/members/{member_id}", LY_PERM_MEMBER_WRITE, S_BODY, "", ly_apiv1_member_update },
    { "DELETE", "/v1/members/{member_id}", LY_PERM_MEMBER_WRITE, 0, "", ly_apiv1_member_delete },

    { "GET",    "/v1/tokens", LY_PERM_TOKEN_WRITE, 0, S_PAGE " member_id", ly_apiv1_tokens_list },
    { "POST",   "/v1/tokens", LY_PERM_TOKEN_WRITE, S_BODY_OPTIONAL, "", ly_apiv1_token_create },
    { "DELETE", "/v1/tokens/{token_id}", LY_PERM_TOKEN_WRITE, 0, "", ly_apiv1_token_delete },

    { "GET",    "/v1/projects", LY_PERM_READ, 0, S_PAGE, ly_apiv1_projects_list },
    { "POST",   "/v1/projects", LY_PERM_PROJECT_WRITE, S_BODY, "", ly_apiv1_project_create },
    { "GET",    "/v1/projects/{project_id}", LY_PERM_READ, 0, "", ly_apiv1_project_get },
    { "PATCH",  "/v1/projects/{project_id}", LY_PERM_PROJECT_WRITE, S_BODY | S_KEYS, "", ly_apiv1_project_update },
    { "DELETE", "/v1/projects/{project_id}", LY_PERM_PROJECT_WRITE, S_KEYS, "", ly_apiv1_project_delete },

    { "GET",    "/v1/projects/{project_id}/layers", LY_PERM_READ, 0, "", ly_apiv1_layers_list },
    { "GET",    "/v1/projects/{project_id}/layers/{layer}", LY_PERM_READ, 0, "", ly_apiv1_layer_get },
    { "PUT",    "/v1/projects/{project_id}/layers/{layer}", LY_PERM_PROJECT_WRITE, S_BODY, "", ly_apiv1_layer_put },
    { "DELETE", "/v1/projects/{project_id}/layers/{layer}", LY_PERM_PROJECT_WRITE, 0, "", ly_apiv1_layer_delete },

    { "GET",    "/v1/projects/{project_id}/sdk-keys", LY_PERM_READ, 0, S_PAGE, ly_apiv1_sdk_keys_list },
    { "POST",   "/v1/projects/{project_id}/sdk-keys", LY_PERM_PROJECT_WRITE, S_BODY_OPTIONAL, "", ly_apiv1_sdk_key_create },
    { "DELETE", "/v1/projects/{project_id}/sdk-keys/{key_id}", LY_PERM_PROJECT_WRITE, S_KEYS, "", ly_apiv1_sdk_key_delete },

    { "GET",    "/v1/projects/{project_id}/ads-content", LY_PERM_READ, 0, S_PAGE, ly_apiv1_project_ads_list },
    { "PUT",    "/v1/projects/{project_id}/ads-content/{ad_content_id}", LY_PERM_CONTENT_WRITE, 0, "", ly_apiv1_project_ad_link },
    { "DELETE", "/v1/projects/{project_id}/ads-content/{ad_content_id}", LY_PERM_CONTENT_WRITE, 0, "", ly_apiv1_project_ad_unlink },

    { "GET",    "/v1/projects/{project_id}/events", LY_PERM_READ, 0, S_PAGE " from to name user_id", ly_apiv1_events_list },
    { "GET",    "/v1/projects/{project_id}/deliveries", LY_PERM_READ, 0, S_PAGE " status destination", ly_apiv1_deliveries_list },
    { "POST",   "/v1/projects/{project_id}/deliveries/replay", LY_PERM_PROJECT_WRITE, S_BODY_OPTIONAL, "", ly_apiv1_deliveries_replay },

    { "GET",    "/v1/ads-content", LY_PERM_READ, 0, S_PAGE " project_id kind", ly_apiv1_ads_list },
    { "POST",   "/v1/ads-content", LY_PERM_CONTENT_WRITE, S_BODY, "", ly_apiv1_ad_create },
    { "GET",    "/v1/ads-content/{ad_content_id}", LY_PERM_READ, 0, "", ly_apiv1_ad_get },
    { "PATCH",  "/v1/ads-content/{ad_content_id}", LY_PERM_CONTENT_WRITE, S_BODY, "", ly_apiv1_ad_update },
    { "DELETE", "/v1/ads-content/{ad_content_id}", LY_PERM_CONTENT_WRITE, 0, "", ly_apiv1_ad_delete },

    { "GET",    "/v1/content/containers", LY_PERM_READ, 0, S_PAGE " project_id kind", ly_apiv1_containers_list },
    { "GET",    "/v1/content/containers/{container_id}", LY_PERM_READ, 0, "", ly_apiv1_container_get },
    { "GET",    "/v1/content/containers/{container_id}/media", LY_PERM_READ, 0, "index", ly_apiv1_container_media },
};
#define S_ROUTES (sizeof s_routes / sizeof s_routes [0])

//  --------------------------------------------------------------------------

struct _ly_apiv1_t {
    ly_db_session_t *auth;      /* layers_auth: token lookups, owned */
    ly_db_session_t *api;       /* layers_api: the requests' transactions, owned */
    pthread_mutex_t lock;       /* guards cancel and cancel_pid (ly_apiv1_cancel) */
    PGcancel *cancel;           /* cancels the api session's statement, owned; or NULL */
    int cancel_pid;             /* the backend cancel is for */
    bool cancelled;             /* ly_apiv1_cancel was called (atomic) */
};

static char *
s_auth_setup (void *arg)
{
    //  A token lookup is one quick statement: one that waits (a table locked by a
    //  migration) gives up rather than hold the worker
    return strdup ("SET statement_timeout = '5s'");
}

static char *
s_api_setup (void *arg)
{
    //  Timestamps are rendered in UTC (ly_apiv1_row); a request is bounded well below
    //  the gateway's 30 s deadline.
    return strdup ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD';"
                   " SET statement_timeout = '20s';"
                   " SET idle_in_transaction_session_timeout = '60s'");
}

ly_apiv1_t *
ly_apiv1_new (void)
{
    ly_apiv1_t *self = (ly_apiv1_t *) calloc (1, sizeof (ly_apiv1_t));
    if (!self)
        return NULL;
    self->auth = ly_db_session_new (LY_DB_AUTH, S_ACTOR, s_auth_setup, NULL);
    self->api = ly_db_session_new (LY_DB_API, S_ACTOR, s_api_setup, NULL);
    pthread_mutex_init (&self->lock, NULL);
    return self;
}

void
ly_apiv1_cancel (ly_apiv1_t *self)
{
    __atomic_store_n (&self->cancelled, true, __ATOMIC_SEQ_CST);
    pthread_mutex_lock (&self->lock);
    char err [256];
    if (self->cancel && !PQcancel (self->cancel, err, sizeof err))
        ly_warning (S_ACTOR, "could not cancel a statement: %s", err);
    pthread_mutex_unlock (&self->lock);
}

//  Keeps the cancel handle for the api session's connection (it changes on reconnect)
static void
s_cancel_follow (ly_apiv1_t *self, PGconn *db)
{
    int pid = PQbackendPID (db);
    pthread_mutex_lock (&self->lock);
    if (pid != self->cancel_pid || !self->cancel) {
        if (self->cancel)
            PQfreeCancel (self->cancel);
        self->cancel = PQgetCancel (db);
        self->cancel_pid = pid;
    }
    pthread_mutex_unlock (&self->lock);
}

void
ly_apiv1_destroy (ly_apiv1_t **self_p)
{
    ly_apiv1_t *self = *self_p;
    if (self) {
        ly_db_session_destroy (&self->auth);
        ly_db_session_destroy (&self->api);
        if (self->cancel)
            PQfreeCancel (self->cancel);
        pthread_mutex_destroy (&self->lock);
        free (self);
        *self_p = NULL;
    }
}

void
ly_api_response_reset (ly_api_response_t *resp)
{
    free (resp->body);
    free (resp->content_type);
    free (resp->etag);
    free (resp->location);
    free (resp->allow);
    memset (resp, 0, sizeof *resp);
}

//  --------------------------------------------------------------------------
//  Routing

//  Matches ctx->path_copy against pattern; fills ctx->params (pointing at the segments,
//  not yet terminated) and sets *bad_id when a "{..._id}" segment is not a UUID. Leaves
//  the path as it was.
static bool
s_match (ly_apiv1_ctx_t *ctx, const char *pattern, bool *bad_id)
{
    memset (ctx->params, 0, sizeof ctx->params);
    *bad_id = false;
    int nparams = 0;
    char *p = ctx->path_copy;
    const char *q = pattern;
    while (*q) {
        if (*q != '/' || *p != '/')
            return false;
        q++;
        p++;
        const char *q_end = strchr (q, '/');
        size_t q_len = q_end? (size_t) (q_end - q): strlen (q);
        char *p_end = strchr (p, '/');
        size_t p_len = p_end? (size_t) (p_end - p): strlen (p);
        if (p_len == 0)
            return false;
        if (q [0] == '{') {
            if (nparams == LY_APIV1_MAX_PATH_PARAMS)
                return false;
            bool is_id = q_len > 4 && strncmp (q + q_len - 4, "_id}", 4) == 0;
            ctx->params [nparams++] = p;
            if (p_end)
                *p_end = 0;
            if (is_id && !ly_is_uuid (p))
                *bad_id = true;
            if (p_end)
                *p_end = '/';
        }
        else
        if (q_len != p_len || memcmp (q, p, q_len))
            return false;
        q += q_len;
        p += p_len;
    }
    return *p == 0;
}

//  Finds the route; answers 404 or 405 and returns NULL when there is none.
static const s_route_t *
s_route (ly_apiv1_ctx_t *ctx, bool *bad_id)
{
    const char *method = ctx->req->method;
    if (streq (method, "HEAD"))
        method = "GET";
    ctx->path_copy = strdup (ctx->req->path);
    if (!ctx->path_copy) {
        ly_apiv1_error (ctx, 500, "internal", "out of memory");
        return NULL;
    }
    char allowed [64] = "";
    for (size_t i = 0; i < S_ROUTES; i++) {
        if (!s_match (ctx, s_routes [i].pattern, bad_id))
            continue;
        if (streq (s_routes [i].method, method)) {
            //  The parameters end where their segments do.
            for (int param = 0; param < LY_APIV1_MAX_PATH_PARAMS && ctx->params [param]; param++) {
                char *slash = strchr ((char *) ctx->params [param], '/');
                if (slash)
                    *slash = 0;
            }
            return &s_routes [i];
        }
        //  (HEAD is served wherever GET is)
        const char *listed = streq (s_routes [i].method, "GET")? "GET, HEAD": s_routes [i].method;
        if (strlen (allowed) + strlen (listed) + 3 < sizeof allowed)
            snprintf (allowed + strlen (allowed), sizeof allowed - strlen (allowed), "%s%s",
                      allowed [0]? ", ": "", listed);
    }
    if (allowed [0]) {
        ly_apiv1_error (ctx, 405, "method_not_allowed",
                        "this route does not accept that method; allowed: %s", allowed);
        free (ctx->resp->allow);
        ctx->resp->allow = strdup (allowed);
    }
    else
        ly_apiv1_error (ctx, 404, "not_found", "no such route");
    return NULL;
}

static int
s_hex_digit (char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

//  Percent-decodes text into a new string; NULL when malformed or when it would hold a
//  NUL byte or invalid UTF-8.
static char *
s_percent_decode (const char *text, size_t len)
{
    char *out = (char *) malloc (len + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (text [i] != '%') {
            out [n++] = text [i];
            continue;
        }
        int hi = i + 1 < len? s_hex_digit (text [i + 1]): -1;
        int lo = i + 2 < len? s_hex_digit (text [i + 2]): -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free (out);
            return NULL;
        }
        out [n++] = (char) (hi << 4 | lo);
        i += 2;
    }
    out [n] = 0;
    json_t *probe = json_stringn (out, n);      //  jansson checks the UTF-8
    if (!probe) {
        free (out);
        return NULL;
    }
    json_decref (probe);
    return out;
}

//  Decodes the query into ctx; refuses unknown, repeated or malformed parameters (400).
static int
s_parse_query (ly_apiv1_ctx_t *ctx, const s_route_t *route)
{
    const char *query = ctx->req->query;
    while (query && *query) {
        const char *end = strchr (query, '&');
        size_t len = end? (size_t) (end - query): strlen (query);
        if (len) {
            const char *eq = memchr (query, '=', len);
            size_t name_len = eq? (size_t) (eq - query): len;
            char *name = s_percent_decode (query, name_len);
            char *value = eq? s_percent_decode (eq + 1, len - name_len - 1): strdup ("");
            if (!name || !value) {
                free (name);
                free (value);
                ly_apiv1_error (ctx, 400, "bad_query", "the query string is malformed");
                return -1;
            }
            bool known = false;
            const char *allowed = route->query;
            size_t name_size = strlen (name);
            while (*allowed && !known) {
                const char *space = strchr (allowed, ' ');
                size_t word = space? (size_t) (space - allowed): strlen (allowed);
                known = word == name_size && memcmp (allowed, name, word) == 0;
                allowed += word + (space? 1: 0);
            }
            bool repeated = known && ly_apiv1_query (ctx, name);
            if (!known || repeated || ctx->query_count == LY_APIV1_MAX_QUERY) {
                if (!known)
                    ly_apiv1_error (ctx, 400, "bad_query", "this route takes no query parameter \"%.64s\"", name);
                else
                    ly_apiv1_error (ctx, 400, "bad_query", "the query parameter \"%s\" is given twice", name);
                free (name);
                free (value);
                return -1;
            }
            ctx->query_names [ctx->query_count] = name;
            ctx->query_values [ctx->query_count++] = value;
        }
        query = end? end + 1: NULL;
    }
    return 0;
}

//  Checks and parses the body (415, 400).
static int
s_parse_body (ly_apiv1_ctx_t *ctx, const s_route_t *route)
{
    const ly_api_request_t *req = ctx->req;
    if (!(route->flags & (S_BODY | S_BODY_OPTIONAL))) {
        //  Nothing of a body would be read: say so rather than ignore it (an empty JSON
        //  object, which some clients send with every PUT or DELETE, is nothing, when it
        //  says it is JSON)
        bool json = ly_jsonr_content_type (req->content_type) == LY_JSONR_JSON;
        json_t *body = req->body_len && json? json_loadb (req->body, req->body_len, 0, NULL): NULL;
        bool empty = !req->body_len || (json_is_object (body) && json_object_size (body) == 0);
        json_decref (body);
        if (!empty)
            ly_apiv1_error (ctx, 400, "bad_request", "this route takes no body");
        return empty? 0: -1;
    }
    if (req->body_len == 0) {
        if (route->flags & S_BODY) {
            ly_apiv1_error (ctx, 400, "bad_request", "this route needs a JSON object body");
            return -1;
        }
        ctx->body = json_object ();
        return 0;
    }
    ly_jsonr_type_t type = ly_jsonr_content_type (req->content_type);
    if (type != LY_JSONR_JSON) {
        ly_apiv1_error (ctx, 415, "unsupported_media_type", type == LY_JSONR_NOT_UTF8
                        ? "the body must be UTF-8 (Content-Type: application/json; charset=utf-8)"
                        : "the body must be application/json");
        return -1;
    }
    json_error_t error;
    ctx->body = json_loadb (req->body, req->body_len, JSON_REJECT_DUPLICATES, &error);
    if (!ctx->body) {
        char reason [JSON_ERROR_TEXT_LENGTH];
        ly_apiv1_error (ctx, 400, "bad_json", "the body is not valid JSON: %s at position %d",
                        ly_jsonr_reason (error.text, reason, sizeof reason), error.position);
        return -1;
    }
    if (!json_is_object (ctx->body)) {
        ly_apiv1_error (ctx, 400, "bad_json", "the body must be a JSON object");
        return -1;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Authentication and the tenant

//  Looks the token up by hash; fills ctx's org, member and token ids. 0, or -1 with
//  401 or 503 answered.
static int
s_authenticate (ly_apiv1_t *self, ly_apiv1_ctx_t *ctx)
{
    const char *hash = ctx->req->token_sha256;
    if (!hash) {
        ly_apiv1_error (ctx, 401, "unauthorized",
                        "an API token is required: Authorization: Bearer <token>");
        return -1;
    }
    if (!ly_is_sha256_hex (hash, strlen (hash))) {
        ly_apiv1_error (ctx, 401, "unauthorized", "unknown, revoked or expired API token");
        return -1;
    }
    const char *params [] = { hash };
    //  last_used_at is stamped here, outside the request's transaction, at most once a
    //  minute, and never waiting for the row: a long request holding it would make the
    //  token's every other request wait (and its revocation)
    PGresult *res = ly_db_session_read (self->auth, NULL,
        "WITH found AS ("
        "  SELECT token_id, org_id, member_id, last_used_at FROM api_tokens"
        "   WHERE token_sha256 = decode ($1, 'hex') AND revoked_at IS NULL"
        "     AND (expires_at IS NULL OR expires_at > now ())),"
        " touch AS ("
        "  UPDATE api_tokens SET last_used_at = now ()"
        "   WHERE token_id IN (SELECT t.token_id FROM api_tokens t JOIN found f USING (token_id)"
        "                       WHERE f.last_used_at IS NULL"
        "                          OR f.last_used_at < now () - interval '1 minute'"
        "                         FOR UPDATE OF t SKIP LOCKED))"
        " SELECT token_id, org_id, member_id FROM found", 1, params);
    if (!res) {
        ly_apiv1_error (ctx, 503, "unavailable", "the database is unavailable; retry later");
        return -1;
    }
    int rc = -1;
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        ly_warning (S_ACTOR, "request %s: token lookup failed: %s", ctx->req->request_id,
                    PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY)
                  ? PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY): PQresultErrorMessage (res));
        ly_db_session_check (self->auth, res);
        ly_apiv1_error (ctx, 503, "unavailable", "the database is unavailable; retry later");
    }
    else
    if (PQntuples (res) != 1)
        ly_apiv1_error (ctx, 401, "unauthorized", "unknown, revoked or expired API token");
    else {
        snprintf (ctx->token_id, sizeof ctx->token_id, "%s", PQgetvalue (res, 0, 0));
        snprintf (ctx->org_id, sizeof ctx->org_id, "%s", PQgetvalue (res, 0, 1));
        snprintf (ctx->member_id, sizeof ctx->member_id, "%s", PQgetvalue (res, 0, 2));
        rc = 0;
    }
    PQclear (res);
    return rc;
}

//  Opens the request's transaction with the token's tenant and reads the member's role.
//  0, or -1 with the answer set (the caller rolls back).
static int
s_begin (ly_apiv1_t *self, ly_apiv1_ctx_t *ctx)
{
    //  BEGIN on a session the database ended meanwhile (a restart) is sent again on a
    //  new one
    PGresult *res = ly_db_session_read (self->api, NULL, "BEGIN", 0, NULL);
    bool begun = PQresultStatus (res) == PGRES_COMMAND_OK;
    PQclear (res);
    ctx->db = begun? ly_db_session_get (self->api): NULL;
    if (ctx->db)
        s_cancel_follow (self, ctx->db);
    if (!ctx->db) {
        ly_apiv1_error (ctx, 503, "unavailable", "the database is unavailable; retry later");
        return -1;
    }
    const char *tenant [] = { ctx->org_id };
    res = ly_apiv1_exec (ctx, "SELECT set_config ('layers.org_id', $1, true)", 1, tenant);
    if (!res)
        return -1;
    PQclear (res);
    if (ctx->trusted) {
        //  layersctl names the member itself; read its role under the tenant.
        const char *member [] = { ctx->member_id };
        res = ly_apiv1_exec (ctx, "SELECT role FROM members WHERE member_id = $1", 1, member);
    }
    else {
        const char *token [] = { ctx->token_id };
        res = ly_apiv1_exec (ctx,
        "SELECT m.role FROM api_tokens t JOIN members m ON m.member_id = t.member_id"
        " WHERE t.token_id = $1 AND t.revoked_at IS NULL"
        "   AND (t.expires_at IS NULL OR t.expires_at > now ())", 1, token);
    }
    if (!res)
        return -1;
    int rc = -1;
    if (PQntuples (res) != 1)
        ly_apiv1_error (ctx, 401, "unauthorized", "unknown, revoked or expired API token");
    else {
        snprintf (ctx->role, sizeof ctx->role, "%s", PQgetvalue (res, 0, 0));
        ctx->rank = ly_apiv1_role_rank (ctx->role);
        rc = 0;
    }
    PQclear (res);
    return rc;
}

static void
s_end (ly_apiv1_t *self, ly_apiv1_ctx_t *ctx)
{
    if (!ctx->db)
        return;
    bool commit = !ctx->failed && ctx->resp->status >= 200 && ctx->resp->status < 400;
    PGresult *res = PQexec (ctx->db, commit? "COMMIT": "ROLLBACK");
    ExecStatusType status = PQresultStatus (res);
    if (status != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField (res, PG_DIAG_SQLSTATE);
        ly_warning (S_ACTOR, "request %s: could not %s: %s", ctx->req->request_id,
                    commit? "commit": "roll back",
                    PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY)
                  ? PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY): PQerrorMessage (ctx->db));
        if (commit) {
            if (state && (streq (state, "40001") || streq (state, "40P01")))
                ly_apiv1_error (ctx, 409, "conflict", "a concurrent change conflicted; retry");
            else
                ly_apiv1_error (ctx, 503, "unavailable", "the change could not be committed; retry later");
        }
        ly_db_session_check (self->api, res);
    }
    else
    if (commit && PQcmdStatus (res) && streq (PQcmdStatus (res), "ROLLBACK")) {
        //  COMMIT of an aborted transaction: a statement failed that we did not see.
        ly_apiv1_error (ctx, 500, "internal", "the change was rolled back");
    }
    PQclear (res);
    if (ctx->db_broken)
        ly_db_session_check (self->api, NULL);
}

//  --------------------------------------------------------------------------
//  Idempotency-Key: the first request with a key stores its answer (sealed under the
//  master key: answers may carry a new token or SDK key) in the same transaction as its
//  effect; a retry with the same method, path and body gets that answer again, one with
//  another request 422, one while the first still runs 409. Failed requests roll back,
//  key included, so they may be retried with the same key.

typedef enum { S_IDEM_NONE, S_IDEM_CLAIMED, S_IDEM_ANSWERED } s_idem_t;

static char *
s_idem_aad (const ly_apiv1_ctx_t *ctx)
{
    return zsys_sprintf ("api_idempotency/%s/%s", ctx->org_id, ctx->req->idempotency_key);
}

static s_idem_t
s_idem_claim (ly_apiv1_ctx_t *ctx)
{
    const ly_api_request_t *req = ctx->req;
    const char *key = req->idempotency_key;
    if (!key || !streq (req->method, "POST"))
        return S_IDEM_NONE;
    size_t len = strlen (key);
    bool valid = len >= 1 && len <= 255;
    for (size_t i = 0; valid && i < len; i++)
        valid = key [i] > 0x20 && key [i] < 0x7f;
    if (!valid) {
        ly_apiv1_error (ctx, 400, "bad_idempotency_key",
                        "Idempotency-Key must be 1 to 255 visible ASCII characters");
        return S_IDEM_ANSWERED;
    }
    if (!ly_master_key ()) {
        ly_apiv1_error (ctx, 500, "internal", "no master key to keep idempotent answers with");
        return S_IDEM_ANSWERED;
    }
    //  The request is the caller's as well as its body: a stored answer (a new token,
    //  say) is replayed only to the member who asked for it, never to another member
    //  of the organization who sends the same key and body.
    char hash [65];
    size_t member_len = strlen (ctx->member_id);
    char *material = (char *) malloc (member_len + 1 + req->body_len);
    if (!material) {
        ly_apiv1_error (ctx, 500, "internal", "out of memory");
        return S_IDEM_ANSWERED;
    }
    memcpy (material, ctx->member_id, member_len);
    material [member_len] = '\n';
    if (req->body_len)
        memcpy (material + member_len + 1, req->body, req->body_len);
    ly_sha256_hex (material, member_len + 1 + req->body_len, hash);
    free (material);
    const char *expire [] = { key };
    //  This key when it expired, and a few more of the tenant's expired keys by the way.
    PGresult *res = ly_apiv1_exec (ctx,
        "DELETE FROM api_idempotency"
        " WHERE created_at < now () - interval '" S_IDEMPOTENCY_TTL "'"
        "   AND (idempotency_key = $1"
        "        OR idempotency_key IN (SELECT idempotency_key FROM api_idempotency"
        "                                WHERE created_at < now () - interval '" S_IDEMPOTENCY_TTL "'"
        "                                ORDER BY created_at LIMIT 100))", 1, expire);
    if (!res)
        return S_IDEM_ANSWERED;
    PQclear (res);
    //  A request with this key that still runs holds its claim: the insert would wait
    //  for it to end (up to its 20 s) and hold a worker meanwhile; a short lock wait
    //  tells instead, and the answer is 409, as documented
    res = ly_apiv1_exec (ctx, "SET LOCAL lock_timeout = '200ms'", 0, NULL);
    if (!res)
        return S_IDEM_ANSWERED;
    PQclear (res);
    const char *params [] = { key, req->method, req->path, hash };
    res = ly_apiv1_exec (ctx,
        "INSERT INTO api_idempotency (idempotency_key, method, path, request_sha256)"
        " VALUES ($1, $2, $3, decode ($4, 'hex'))"
        " ON CONFLICT (org_id, idempotency_key) DO NOTHING RETURNING 1", 4, params);
    if (!res) {
        if (ctx->resp->status == 409)
            ly_apiv1_error (ctx, 409, "idempotency_conflict",
                            "the Idempotency-Key is in use by a request still running; retry");
        return S_IDEM_ANSWERED;
    }
    bool claimed = PQntuples (res) == 1;
    PQclear (res);
    res = ly_apiv1_exec (ctx, "SET LOCAL lock_timeout = DEFAULT", 0, NULL);
    if (!res)
        return S_IDEM_ANSWERED;
    PQclear (res);
    if (claimed)
        return S_IDEM_CLAIMED;

    res = ly_apiv1_exec (ctx,
        "SELECT method, path, encode (request_sha256, 'hex'), response_status, response_body"
        "  FROM api_idempotency WHERE idempotency_key = $1", 1, expire);
    if (!res)
        return S_IDEM_ANSWERED;
    if (PQntuples (res) != 1)
        ly_apiv1_error (ctx, 409, "idempotency_conflict", "the Idempotency-Key is in use; retry");
    else
    if (!streq (PQgetvalue (res, 0, 0), req->method) || !streq (PQgetvalue (res, 0, 1), req->path)
    ||  !streq (PQgetvalue (res, 0, 2), hash))
        ly_apiv1_error (ctx, 422, "idempotency_mismatch",
                        "the Idempotency-Key was used for another request");
    else
    if (PQgetisnull (res, 0, 3))
        ly_apiv1_error (ctx, 409, "idempotency_conflict",
                        "a request with this Idempotency-Key is still running; retry");
    else {
        size_t sealed_len = 0;
        char *sealed = ly_apiv1_base64url_decode (PQgetvalue (res, 0, 4), &sealed_len);
        char *aad = s_idem_aad (ctx);
        char *plain = NULL;
        size_t plain_len = 0;
        json_t *stored = NULL;
        if (sealed && ly_secret_open (ly_master_key (), aad, (const uint8_t *) sealed, sealed_len,
                                      &plain, &plain_len) == 0)
            stored = json_loadb (plain, plain_len, 0, NULL);
        const char *body = json_string_value (json_object_get (stored, "body"));
        const char *location = json_string_value (json_object_get (stored, "location"));
        const char *etag = json_string_value (json_object_get (stored, "etag"));
        if (body) {
            ly_api_response_reset (ctx->resp);
            ctx->resp->status = (unsigned) atoi (PQgetvalue (res, 0, 3));
            ctx->resp->body = strdup (body);
            ctx->resp->body_len = strlen (body);
            ctx->resp->location = location? strdup (location): NULL;
            ctx->resp->etag = etag? strdup (etag): NULL;
        }
        else
            ly_apiv1_error (ctx, 500, "internal", "the stored answer of this Idempotency-Key cannot be read");
        if (plain) {
            explicit_bzero (plain, plain_len);
            free (plain);
        }
        json_decref (stored);
        zstr_free (&aad);
        free (sealed);
    }
    PQclear (res);
    return S_IDEM_ANSWERED;
}

static void
s_idem_store (ly_apiv1_ctx_t *ctx)
{
    ly_api_response_t *resp = ctx->resp;
    if (resp->status < 200 || resp->status >= 300)
        return;     //  the transaction rolls back, and the key with it
    json_t *stored = json_pack ("{s:s%}", "body", resp->body? resp->body: "", resp->body_len);
    if (resp->location)
        json_object_set_new (stored, "location", json_string (resp->location));
    if (resp->etag)
        json_object_set_new (stored, "etag", json_string (resp->etag));
    char *plain = stored? json_dumps (stored, JSON_COMPACT): NULL;
    json_decref (stored);
    char *aad = s_idem_aad (ctx);
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    char *text = NULL;
    if (plain && ly_secret_seal (ly_master_key (), aad, plain, strlen (plain), &sealed, &sealed_len) == 0)
        text = ly_apiv1_base64url (sealed, sealed_len);
    if (!text)
        ly_apiv1_error (ctx, 500, "internal", "could not keep the answer for the Idempotency-Key");
    else {
        char status [8];
        snprintf (status, sizeof status, "%u", resp->status);
        const char *params [] = { ctx->req->idempotency_key, status, text };
        PGresult *res = ly_apiv1_exec (ctx,
            "UPDATE api_idempotency SET response_status = $2, response_body = $3,"
            "       completed_at = now () WHERE idempotency_key = $1", 3, params);
        PQclear (res);
    }
    if (plain) {
        explicit_bzero (plain, strlen (plain));
        free (plain);
    }
    free (text);
    free (sealed);
    zstr_free (&aad);
}

//  --------------------------------------------------------------------------

static void
s_serve (ly_apiv1_t *self, ly_apiv1_ctx_t *ctx, const s_route_t **route_p)
{
    if (!ctx->trusted && s_authenticate (self, ctx))
        return;
    bool bad_id = false;
    const s_route_t *route = s_route (ctx, &bad_id);
    *route_p = route;
    if (!route)
        return;
    if (s_begin (self, ctx))
        return;
    if (!s_allowed (route->perm, ctx->rank)) {
        ly_apiv1_error (ctx, 403, "forbidden", "the %s role lacks the %s permission (%s and above)",
                        ctx->role, s_permissions [route->perm].name, s_permissions [route->perm].role);
        return;
    }
    if (bad_id) {
        ly_apiv1_error (ctx, 404, "not_found", "no such resource");
        return;
    }
    if (s_parse_query (ctx, route) || s_parse_body (ctx, route))
        return;
    s_idem_t idem = s_idem_claim (ctx);
    if (idem == S_IDEM_ANSWERED)
        return;
    route->handler (ctx);
    if (!ctx->resp->status)
        ly_apiv1_error (ctx, 500, "internal", "the handler gave no answer");
    if (idem == S_IDEM_CLAIMED && !ly_apiv1_failed (ctx))
        s_idem_store (ctx);
}

static void s_handle (ly_apiv1_t *self, const ly_api_request_t *req, ly_api_response_t *resp,
                      const char *org_id, const char *member_id);

void
ly_apiv1_handle (ly_apiv1_t *self, const ly_api_request_t *req, ly_api_response_t *resp)
{
    s_handle (self, req, resp, NULL, NULL);
}

void
ly_apiv1_handle_as (ly_apiv1_t *self, const char *org_id, const char *member_id,
                    const ly_api_request_t *req, ly_api_response_t *resp)
{
    s_handle (self, req, resp, org_id, member_id);
}

static void
s_handle (ly_apiv1_t *self, const ly_api_request_t *req, ly_api_response_t *resp,
          const char *org_id, const char *member_id)
{
    int64_t started = ly_now_usec ();
    ly_apiv1_ctx_t ctx = { .req = req, .resp = resp, .cancelled = &self->cancelled };
    if (org_id && member_id) {
        ctx.trusted = true;
        snprintf (ctx.org_id, sizeof ctx.org_id, "%s", org_id);
        snprintf (ctx.member_id, sizeof ctx.member_id, "%s", member_id);
    }
    const s_route_t *route = NULL;
    s_serve (self, &ctx, &route);
    s_end (self, &ctx);
    if (!resp->status)
        ly_apiv1_error (&ctx, 500, "internal", "no answer");
    resp->keys_changed = route && (route->flags & S_KEYS) && resp->status >= 200 && resp->status < 300;

    //  One line per request: nothing the client sent but its method, and only when it
    //  is a plain token.
    const char *method = ly_apiv1_is_charset (req->method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10)
                       ? req->method: "?";
    ly_log (resp->status == 500 || resp->status == 503? LY_LOG_WARNING: LY_LOG_INFO, S_ACTOR,
            "request %s: %s %s -> %u in %.1f ms%s%s", req->request_id, method,
            route? route->pattern: "-", resp->status,
            (double) (ly_now_usec () - started) / 1000.0,
            ctx.org_id [0]? " org ": "", ctx.org_id);

    json_decref (ctx.body);
    free (ctx.path_copy);
    for (size_t i = 0; i < ctx.query_count; i++) {
        free (ctx.query_names [i]);
        free (ctx.query_values [i]);
    }
}
