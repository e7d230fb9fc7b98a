/*  ly_apiv1_workspace.c: the workspace handlers of the partner API: the organization,
    the caller, roles, projects, members, API tokens and SDK keys. Tokens and keys are
    shown once, at creation; only their SHA-256 and a 12-character prefix are kept. */
#include "ly_apiv1_private.h"
#include "ly_crypto.h"
#include "ly_utf8.h"

#define S_PREFIX_LEN 12         /* the visible start of a token or key, "lya_3kT9aQ2x" */

//  --------------------------------------------------------------------------
//  Formats of workspace fields

static bool
s_is_country_code (const char *text)
{
    return ly_apiv1_is_charset (text, "0123456789", 3) && text [0] != '0';
}

static bool
s_is_app_store_id (const char *text)
{
    return ly_apiv1_is_charset (text, "0123456789", 20);
}

static bool
s_is_app_id (const char *text)
{
    return ly_apiv1_is_charset (text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789._-", 255);
}

//  An IANA zone name as its database spells them (Europe/Paris, UTC, Etc/GMT+5), not
//  what PostgreSQL takes besides: POSIX specs, whose sign is inverted (UTC+5 is five
//  hours behind UTC), other case (utc), or files of the zone directory that are no
//  zone (posix/..., localtime, Factory).
//  Names: no control characters (a newline, a bell), as layersctl takes them
#define S_PLAIN "text without control characters"
static bool
s_is_plain (const char *text)
{
    return ly_utf8_plain_chars (text) >= 0;
}

static bool
s_is_timezone (const char *text)
{
    if (!ly_apiv1_is_charset (text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                    "0123456789_+-/", 64)
    ||  !isupper ((unsigned char) text [0]) || streq (text, "Factory"))
        return false;
    if (!strpbrk (text, "0123456789"))
        return true;
    //  Digits: a POSIX spec ("UTC5", "Asia/Tokyo2": PostgreSQL takes them, the sign the
    //  other way round) unless a zone's own name: Etc/GMT-14 to Etc/GMT+12, GMT0 and the
    //  old US names
    const char *named [] = { "EST5EDT", "CST6CDT", "MST7MDT", "PST8PDT", "GMT0", "GMT+0",
                             "GMT-0", NULL };
    for (int i = 0; named [i]; i++)
        if (streq (text, named [i]))
            return true;
    const char *offset = strncmp (text, "Etc/GMT", 7) == 0? text + 7: NULL;
    if (offset && (*offset == '+' || *offset == '-'))
        offset++;
    return offset && ly_apiv1_is_charset (offset, "0123456789", 2) && *offset
        && atoi (offset) <= 14;
}

bool
ly_apiv1_is_email (const char *text)
{
    const char *at = strchr (text, '@');
    if (!at || at == text || !at [1] || strchr (at + 1, '@'))
        return false;
    //  No white space or control character, ASCII or not (a no-break space, U+2028)
    size_t len = strlen (text);
    for (size_t i = 0; i < len;) {
        size_t n = ly_utf8_sequence (text + i, len - i);
        uint32_t code = n? ly_utf8_decode (text + i, n): 0;
        if (!n || code == ' ' || ly_utf8_is_control (code) || ly_utf8_is_space (code))
            return false;
        i += n;
    }
    return len >= 3;
}

static bool
s_is_role (const char *text)
{
    return ly_apiv1_role_rank (text) > 0;
}

static bool
s_is_time (const char *text)
{
    int64_t usec;
    return ly_apiv1_rfc3339 (text, &usec) == 0;
}

//  Answers a list of rows fetched with page's LIMIT, ordered by created_at and id.
static void
s_list (ly_apiv1_ctx_t *ctx, const char *sql, int nparams, const char *const *params,
        const ly_apiv1_page_t *page, void (*decorate) (json_t *row))
{
    PGresult *res = ly_apiv1_exec (ctx, sql, nparams, params);
    if (res)
        ly_apiv1_page_reply (ctx, res, 'c', page, decorate);
    PQclear (res);
}

//  --------------------------------------------------------------------------
//  Organization, me, roles

static const ly_apiv1_field_t s_org_fields [] = {
    { "name", LY_FIELD_TEXT, 200, false, false, true, s_is_plain, S_PLAIN },
};

static const ly_apiv1_resource_t s_org = {
    "organizations", "org_id", "organization",
    "org_id, name, created_at, updated_at, " LY_APIV1_ETAG_SQL ("updated_at"),
    NULL, s_org_fields, 1, NULL, NULL
};

void
ly_apiv1_org_get (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_get (ctx, &s_org, ctx->org_id);
}

void
ly_apiv1_org_update (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_update (ctx, &s_org, ctx->org_id);
}

void
ly_apiv1_me_get (ly_apiv1_ctx_t *ctx)
{
    const char *params [] = { ctx->member_id, ctx->token_id };
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT m.org_id, m.member_id, m.email, m.display_name, m.role, $2::uuid AS token_id"
        "  FROM members m WHERE m.member_id = $1", 2, params);
    if (!res)
        return;
    if (PQntuples (res) == 1) {
        json_t *me = ly_apiv1_row (res, 0);
        json_object_set_new (me, "permissions", ly_apiv1_role_permissions (ctx->rank));
        ly_apiv1_reply (ctx, 200, me);
    }
    else
        ly_apiv1_error (ctx, 401, "unauthorized", "the token's member is gone");
    PQclear (res);
}

void
ly_apiv1_roles_list (ly_apiv1_ctx_t *ctx)
{
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT role, rank, description FROM roles ORDER BY rank DESC", 0, NULL);
    if (!res)
        return;
    json_t *data = json_array ();
    for (int row = 0; row < PQntuples (res); row++) {
        json_t *role = ly_apiv1_row (res, row);
        int rank = ly_apiv1_role_rank (PQgetvalue (res, row, 0));
        json_object_set_new (role, "permissions", ly_apiv1_role_permissions (rank));
        json_array_append_new (data, role);
    }
    PQclear (res);
    ly_apiv1_reply (ctx, 200, json_pack ("{s:o, s:n}", "data", data, "next_cursor"));
}

//  --------------------------------------------------------------------------
//  Projects

#define S_PROJECT_COLUMNS \
    "project_id, name, timezone, default_country_code, ios_bundle_id, android_package_name," \
    " app_store_id, brand, created_at, updated_at, " LY_APIV1_ETAG_SQL ("updated_at")

static const ly_apiv1_field_t s_project_fields [] = {
    { "name", LY_FIELD_TEXT, 200, false, false, true, s_is_plain, S_PLAIN },
    { "timezone", LY_FIELD_TEXT, 64, false, false, false, s_is_timezone, "an IANA time zone name" },
    { "default_country_code", LY_FIELD_TEXT, 3, false, true, false, s_is_country_code,
      "an E.164 country calling code, digits only (\"1\", \"44\")" },
    { "ios_bundle_id", LY_FIELD_TEXT, 255, false, true, false, s_is_app_id,
      "letters, digits, '.', '_' and '-'" },
    { "android_package_name", LY_FIELD_TEXT, 255, false, true, false, s_is_app_id,
      "letters, digits, '.', '_' and '-'" },
    { "app_store_id", LY_FIELD_TEXT, 20, false, true, false, s_is_app_store_id, "1 to 20 digits" },
    { "brand", LY_FIELD_OBJECT, 0, false, false, false, NULL, NULL },
};

//  The time zone must be one PostgreSQL knows: tried in a savepoint, which is cheaper
//  than reading pg_timezone_names (every zone file) and refuses what PostgreSQL refuses.
static int
s_project_validate (ly_apiv1_ctx_t *ctx, const ly_apiv1_values_t *values)
{
    for (int i = 0; i < values->count; i++) {
        if (!streq (values->columns [i], "timezone"))
            continue;
        PGresult *res = ly_apiv1_exec (ctx, "SAVEPOINT timezone_check", 0, NULL);
        if (!res)
            return -1;
        PQclear (res);
        const char *params [] = { values->values [i] };
        res = PQexecParams (ctx->db, "SELECT now () AT TIME ZONE $1", 1, NULL, params, NULL, NULL, 0);
        bool known = PQresultStatus (res) == PGRES_TUPLES_OK;
        PQclear (res);
        res = ly_apiv1_exec (ctx, known? "RELEASE SAVEPOINT timezone_check"
                                       : "ROLLBACK TO SAVEPOINT timezone_check", 0, NULL);
        if (!res)
            return -1;
        PQclear (res);
        if (!known) {
            ly_apiv1_field_error (ctx, "timezone", "timezone must be an IANA time zone name");
            return -1;
        }
    }
    return 0;
}

static const ly_apiv1_resource_t s_project = {
    "projects", "project_id", "project", S_PROJECT_COLUMNS, "/v1/projects/%s",
    s_project_fields, sizeof s_project_fields / sizeof s_project_fields [0],
    s_project_validate, NULL
};

void
ly_apiv1_projects_list (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_page_t page;
    if (ly_apiv1_page (ctx, 'c', &page))
        return;
    const char *params [] = { page.has_cursor? page.after_a: NULL,
                              page.has_cursor? page.after_b: NULL, page.fetch };
    //  Deliberately without "WHERE org_id = ...": row-level security is the filter,
    //  and tests/test_api.py checks that no other tenant's project shows up here.
    s_list (ctx,
        "SELECT " S_PROJECT_COLUMNS ", " LY_APIV1_CURSOR_SQL ("created_at", "project_id")
        "  FROM projects"
        " WHERE ($1::bigint IS NULL OR (created_at, project_id) < (" LY_APIV1_USEC_SQL ("$1") ", $2::uuid))"
        " ORDER BY created_at DESC, project_id DESC LIMIT $3", 3, params, &page, NULL);
}

void
ly_apiv1_project_create (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_create (ctx, &s_project);
}

void
ly_apiv1_project_get (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_get (ctx, &s_project, ctx->params [0]);
}

void
ly_apiv1_project_update (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_update (ctx, &s_project, ctx->params [0]);
}

void
ly_apiv1_project_delete (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_delete (ctx, &s_project, ctx->params [0]);
}

//  --------------------------------------------------------------------------
//  Members. Besides member.write, the rank rule (ly_apiv1_may_manage): only owners
//  touch owners and admins; and the last owner can be neither removed nor demoted.

#define S_MEMBER_COLUMNS \
    "member_id, email, display_name, role, created_at, updated_at, " \
    LY_APIV1_ETAG_SQL ("updated_at")

static const ly_apiv1_field_t s_member_fields [] = {
    { "email", LY_FIELD_TEXT, 320, false, false, true, ly_apiv1_is_email, "an email address" },
    { "display_name", LY_FIELD_TEXT, 200, true, true, false, s_is_plain, S_PLAIN },
    { "role", LY_FIELD_TEXT, 16, false, false, true, s_is_role,
      "one of owner, admin, editor, viewer" },
};

static const ly_apiv1_resource_t s_member = {
    "members", "member_id", "member", S_MEMBER_COLUMNS, "/v1/members/%s",
    s_member_fields, sizeof s_member_fields / sizeof s_member_fields [0], NULL, NULL
};

static const char *
s_value_of (const ly_apiv1_values_t *values, const char *column)
{
    for (int i = 0; i < values->count; i++)
        if (streq (values->columns [i], column))
            return values->values [i];
    return NULL;
}

//  True when the organization keeps an owner without member_id; locks the owners.
static bool
s_other_owner (ly_apiv1_ctx_t *ctx, const char *member_id)
{
    const char *params [] = { member_id };
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT member_id FROM members WHERE role = 'owner' AND member_id <> $1 FOR UPDATE",
        1, params);
    if (!res)
        return false;
    bool other = PQntuples (res) > 0;
    PQclear (res);
    if (!other)
        ly_apiv1_error (ctx, 409, "last_owner",
                        "the organization's last owner can be neither removed nor demoted");
    return other;
}

void
ly_apiv1_members_list (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_page_t page;
    if (ly_apiv1_page (ctx, 'c', &page))
        return;
    const char *role = ly_apiv1_query (ctx, "role");
    if (role && !s_is_role (role)) {
        ly_apiv1_error (ctx, 400, "bad_query", "role must be one of owner, admin, editor, viewer");
        return;
    }
    const char *params [] = { page.has_cursor? page.after_a: NULL,
                              page.has_cursor? page.after_b: NULL, page.fetch, role };
    s_list (ctx,
        "SELECT " S_MEMBER_COLUMNS ", " LY_APIV1_CURSOR_SQL ("created_at", "member_id")
        "  FROM members"
        " WHERE ($1::bigint IS NULL OR (created_at, member_id) < (" LY_APIV1_USEC_SQL ("$1") ", $2::uuid))"
        "   AND ($4::text IS NULL OR role = $4)"
        " ORDER BY created_at DESC, member_id DESC LIMIT $3", 4, params, &page, NULL);
}

void
ly_apiv1_member_create (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_values_t values;
    if (ly_apiv1_fields (ctx, s_member_fields, 3, true, &values))
        return;
    const char *role = s_value_of (&values, "role");
    if (!ly_apiv1_may_manage (ctx->rank, 0, ly_apiv1_role_rank (role)))
        ly_apiv1_error (ctx, 403, "forbidden", "only an owner can add a member as %s", role);
    else {
        char *sql = ly_apiv1_insert_sql ("members", &values, S_MEMBER_COLUMNS);
        PGresult *res = ly_apiv1_exec_values (ctx, sql, NULL, &values);
        if (res && PQntuples (res) == 1) {
            ly_apiv1_reply (ctx, 201, ly_apiv1_row (res, 0));
            ly_apiv1_etag (ctx, res, 0);
            ly_apiv1_location (ctx, "/v1/members/%s", PQgetvalue (res, 0, 0));
        }
        PQclear (res);
        free (sql);
    }
    ly_apiv1_values_free (&values);
}

void
ly_apiv1_member_get (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_get (ctx, &s_member, ctx->params [0]);
}

//  Locks the member; its current rank, or 0 with 404 or 412 answered.
static int
s_member_lock (ly_apiv1_ctx_t *ctx, const char *member_id, char role [16])
{
    const char *params [] = { member_id };
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT role, " LY_APIV1_ETAG_SQL ("updated_at")
        "  FROM members WHERE member_id = $1 FOR UPDATE", 1, params);
    if (!res)
        return 0;
    int rank = 0;
    if (PQntuples (res) != 1)
        ly_apiv1_error (ctx, 404, "not_found", "no such member");
    else
    if (ly_apiv1_if_match (ctx, PQgetvalue (res, 0, 1))) {
        snprintf (role, 16, "%s", PQgetvalue (res, 0, 0));
        rank = ly_apiv1_role_rank (role);
        if (!rank)
            ly_apiv1_error (ctx, 500, "internal", "the member has an unknown role");
    }
    PQclear (res);
    return rank;
}

void
ly_apiv1_member_update (ly_apiv1_ctx_t *ctx)
{
    const char *member_id = ctx->params [0];
    ly_apiv1_values_t values;
    if (ly_apiv1_fields (ctx, s_member_fields, 3, false, &values))
        return;
    char current [16] = "";
    const char *role = s_value_of (&values, "role");
    bool self = streq (member_id, ctx->member_id);
    int rank = s_member_lock (ctx, member_id, current);
    if (!rank)
        goto cleanup;
    if (json_object_get (ctx->body, "email")) {
        ly_apiv1_field_error (ctx, "email", "a member's email cannot change; add a new member");
        goto cleanup;
    }
    if (!(self && !role) && !ly_apiv1_may_manage (ctx->rank, rank, role? ly_apiv1_role_rank (role): 0)) {
        ly_apiv1_error (ctx, 403, "forbidden", "only an owner can change an admin or owner,"
                        " or give the admin or owner role");
        goto cleanup;
    }
    if (streq (current, "owner") && role && !streq (role, "owner")
    &&  !s_other_owner (ctx, member_id))
        goto cleanup;
    char *sql = values.count? ly_apiv1_update_sql ("members", "member_id", &values, S_MEMBER_COLUMNS)
                            : strdup ("SELECT " S_MEMBER_COLUMNS " FROM members WHERE member_id = $1");
    PGresult *res = ly_apiv1_exec_values (ctx, sql, member_id, &values);
    if (res && PQntuples (res) == 1) {
        ly_apiv1_reply (ctx, 200, ly_apiv1_row (res, 0));
        ly_apiv1_etag (ctx, res, 0);
    }
    PQclear (res);
    free (sql);
cleanup:
    ly_apiv1_values_free (&values);
}

void
ly_apiv1_member_delete (ly_apiv1_ctx_t *ctx)
{
    const char *member_id = ctx->params [0];
    char current [16] = "";
    int rank = s_member_lock (ctx, member_id, current);
    if (!rank)
        return;
    if (!ly_apiv1_may_manage (ctx->rank, rank, 0)) {
        ly_apiv1_error (ctx, 403, "forbidden", "only an owner can remove an admin or owner");
        return;
    }
    if (streq (current, "owner") && !s_other_owner (ctx, member_id))
        return;
    //  The member's API tokens go with it (ON DELETE CASCADE): refused at once.
    const char *params [] = { member_id };
    PGresult *res = ly_apiv1_exec (ctx, "DELETE FROM members WHERE member_id = $1", 1, params);
    if (res)
        ly_apiv1_no_content (ctx);
    PQclear (res);
}

//  --------------------------------------------------------------------------
//  API tokens

#define S_TOKEN_COLUMNS \
    "token_id, member_id, name, token_prefix, created_at, expires_at, last_used_at, revoked_at"

static const ly_apiv1_field_t s_token_fields [] = {
    { "name", LY_FIELD_TEXT, 200, true, false, false, s_is_plain, S_PLAIN },
    { "member_id", LY_FIELD_TEXT, 36, false, false, false, ly_is_uuid, "a member id (UUID)" },
    { "expires_at", LY_FIELD_TEXT, 40, false, true, false, s_is_time, "an RFC 3339 date-time" },
};

void
ly_apiv1_tokens_list (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_page_t page;
    if (ly_apiv1_page (ctx, 'c', &page))
        return;
    const char *member_id = ly_apiv1_query (ctx, "member_id");
    if (member_id && !ly_is_uuid (member_id)) {
        ly_apiv1_error (ctx, 400, "bad_query", "member_id must be a UUID");
        return;
    }
    const char *params [] = { page.has_cursor? page.after_a: NULL,
                              page.has_cursor? page.after_b: NULL, page.fetch, member_id };
    s_list (ctx,
        "SELECT " S_TOKEN_COLUMNS ", " LY_APIV1_CURSOR_SQL ("created_at", "token_id")
        "  FROM api_tokens"
        " WHERE ($1::bigint IS NULL OR (created_at, token_id) < (" LY_APIV1_USEC_SQL ("$1") ", $2::uuid))"
        "   AND ($4::uuid IS NULL OR member_id = $4)"
        " ORDER BY created_at DESC, token_id DESC LIMIT $3", 4, params, &page, NULL);
}

//  A new random credential: the secret (caller frees and wipes), its hash and prefix.
static char *
s_credential_new (const char *prefix, char hash [65], char visible [S_PREFIX_LEN + 1])
{
    char *secret = ly_token_new (prefix);
    if (!secret)
        return NULL;
    ly_sha256_hex (secret, strlen (secret), hash);
    snprintf (visible, S_PREFIX_LEN + 1, "%s", secret);
    return secret;
}

static void
s_credential_free (char **secret_p)
{
    if (*secret_p) {
        explicit_bzero (*secret_p, strlen (*secret_p));
        free (*secret_p);
        *secret_p = NULL;
    }
}

void
ly_apiv1_token_create (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_values_t values;
    if (ly_apiv1_fields (ctx, s_token_fields, 3, true, &values))
        return;
    const char *name = s_value_of (&values, "name");
    const char *member_id = s_value_of (&values, "member_id");
    const char *expires_at = s_value_of (&values, "expires_at");
    char *secret = NULL;
    char expires_usec [24] = "";
    if (!member_id)
        member_id = ctx->member_id;
    if (expires_at) {
        int64_t usec = 0;
        ly_apiv1_rfc3339 (expires_at, &usec);
        if (usec <= ly_now_usec ()) {
            ly_apiv1_field_error (ctx, "expires_at", "expires_at must be in the future");
            goto cleanup;
        }
        snprintf (expires_usec, sizeof expires_usec, "%" PRId64, usec);
    }
    const char *member [] = { member_id };
    PGresult *res = ly_apiv1_exec (ctx, "SELECT role FROM members WHERE member_id = $1", 1, member);
    if (!res)
        goto cleanup;
    int target_rank = PQntuples (res) == 1? ly_apiv1_role_rank (PQgetvalue (res, 0, 0)): 0;
    PQclear (res);
    if (!target_rank) {
        ly_apiv1_field_error (ctx, "member_id", "no such member");
        goto cleanup;
    }
    if (!streq (member_id, ctx->member_id) && !ly_apiv1_may_manage (ctx->rank, target_rank, 0)) {
        ly_apiv1_error (ctx, 403, "forbidden", "only an owner can make tokens for admins and owners");
        goto cleanup;
    }
    char hash [65], prefix [S_PREFIX_LEN + 1];
    secret = s_credential_new ("lya_", hash, prefix);
    if (!secret) {
        ly_apiv1_error (ctx, 500, "internal", "could not generate a token");
        goto cleanup;
    }
    const char *params [] = { member_id, name? name: "", prefix, hash,
                              expires_usec [0]? expires_usec: NULL };
    res = ly_apiv1_exec (ctx,
        "INSERT INTO api_tokens (member_id, name, token_prefix, token_sha256, expires_at)"
        " VALUES ($1, $2, $3, decode ($4, 'hex'), " LY_APIV1_USEC_SQL ("$5") ")"
        " RETURNING " S_TOKEN_COLUMNS, 5, params);
    if (res && PQntuples (res) == 1) {
        json_t *token = ly_apiv1_row (res, 0);
        json_object_set_new (token, "token", json_string (secret));
        ly_apiv1_reply (ctx, 201, token);
    }
    PQclear (res);
cleanup:
    s_credential_free (&secret);
    ly_apiv1_values_free (&values);
}

void
ly_apiv1_token_delete (ly_apiv1_ctx_t *ctx)
{
    const char *params [] = { ctx->params [0] };
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT t.member_id, m.role FROM api_tokens t JOIN members m ON m.member_id = t.member_id"
        " WHERE t.token_id = $1 FOR UPDATE OF t", 1, params);
    if (!res)
        return;
    bool found = PQntuples (res) == 1;
    bool own = found && streq (PQgetvalue (res, 0, 0), ctx->member_id);
    int target_rank = found? ly_apiv1_role_rank (PQgetvalue (res, 0, 1)): 0;
    PQclear (res);
    if (!found) {
        ly_apiv1_error (ctx, 404, "not_found", "no such token");
        return;
    }
    if (!own && !ly_apiv1_may_manage (ctx->rank, target_rank, 0)) {
        ly_apiv1_error (ctx, 403, "forbidden", "only an owner can revoke the tokens of admins and owners");
        return;
    }
    res = ly_apiv1_exec (ctx,
        "UPDATE api_tokens SET revoked_at = coalesce (revoked_at, now ()) WHERE token_id = $1",
        1, params);
    if (res)
        ly_apiv1_no_content (ctx);
    PQclear (res);
}

//  --------------------------------------------------------------------------
//  SDK keys

#define S_KEY_COLUMNS \
    "key_id, project_id, name, key_prefix, created_at, last_used_at, revoked_at"

static const ly_apiv1_field_t s_key_fields [] = {
    { "name", LY_FIELD_TEXT, 200, true, false, false, s_is_plain, S_PLAIN },
};

void
ly_apiv1_sdk_keys_list (ly_apiv1_ctx_t *ctx)
{
    const char *project_id = ctx->params [0];
    ly_apiv1_page_t page;
    if (ly_apiv1_page (ctx, 'c', &page) || !ly_apiv1_project_exists (ctx, project_id))
        return;
    const char *params [] = { page.has_cursor? page.after_a: NULL,
                              page.has_cursor? page.after_b: NULL, page.fetch, project_id };
    s_list (ctx,
        "SELECT " S_KEY_COLUMNS ", " LY_APIV1_CURSOR_SQL ("created_at", "key_id")
        "  FROM sdk_keys"
        " WHERE project_id = $4"
        "   AND ($1::bigint IS NULL OR (created_at, key_id) < (" LY_APIV1_USEC_SQL ("$1") ", $2::uuid))"
        " ORDER BY created_at DESC, key_id DESC LIMIT $3", 4, params, &page, NULL);
}

void
ly_apiv1_sdk_key_create (ly_apiv1_ctx_t *ctx)
{
    const char *project_id = ctx->params [0];
    ly_apiv1_values_t values;
    if (ly_apiv1_fields (ctx, s_key_fields, 1, true, &values))
        return;
    char *secret = NULL;
    if (ly_apiv1_project_exists (ctx, project_id)) {
        const char *name = s_value_of (&values, "name");
        char hash [65], prefix [S_PREFIX_LEN + 1];
        secret = s_credential_new ("lys_", hash, prefix);
        if (!secret)
            ly_apiv1_error (ctx, 500, "internal", "could not generate a key");
        else {
            const char *params [] = { project_id, name? name: "", prefix, hash };
            PGresult *res = ly_apiv1_exec (ctx,
                "INSERT INTO sdk_keys (project_id, name, key_prefix, key_sha256)"
                " VALUES ($1, $2, $3, decode ($4, 'hex')) RETURNING " S_KEY_COLUMNS, 4, params);
            if (res && PQntuples (res) == 1) {
                json_t *key = ly_apiv1_row (res, 0);
                json_object_set_new (key, "key", json_string (secret));
                ly_apiv1_reply (ctx, 201, key);
            }
            PQclear (res);
        }
    }
    s_credential_free (&secret);
    ly_apiv1_values_free (&values);
}

void
ly_apiv1_sdk_key_delete (ly_apiv1_ctx_t *ctx)
{
    //  Revoked, not deleted: it stays listed with revoked_at. The gateway trusts a key
    //  it looked up for at most 30 seconds.
    const char *params [] = { ctx->params [0], ctx->params [1] };
    PGresult *res = ly_apiv1_exec (ctx,
        "UPDATE sdk_keys SET revoked_at = coalesce (revoked_at, now ())"
        " WHERE project_id = $1 AND key_id = $2 RETURNING key_id", 2, params);
    if (!res)
        return;
    if (PQntuples (res) == 1)
        ly_apiv1_no_content (ctx);
    else
        ly_apiv1_error (ctx, 404, "not_found", "no such SDK key");
    PQclear (res);
}
