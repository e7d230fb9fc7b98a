/*  ly_apiv1_layers.c: project layers, the ad-network integrations of a project
    (meta, tiktok, apple_search_ads). Settings go to project_layers.config; secrets
    (access_token) are sealed with the master key (AES-256-GCM, additional data
    "project_layers/<project_id>/<layer>", key id "master", version 1) into
    secret_ciphertext, which layers_api may write but not read. The API answers which
    secrets are set, never their values, and logs none of them. */
#include "ly_apiv1_private.h"
#include "ly_crypto.h"
#include "ly_utf8.h"

#define S_SECRET_KEY_ID "master"
#define S_SECRET_KEY_VERSION "1"
#define S_EVENT_MAP_MAX 100
#define S_PUT_TURNS 4                /* insert / update turns of a PUT racing others */

typedef struct {
    const char *name;           /* the layer */
    const char *secret;         /* the secret it needs, NULL: none */
} s_layer_t;

static const s_layer_t s_layers [] = {
    { "meta", "access_token" },
    { "tiktok", "access_token" },
    { "apple_search_ads", NULL },
};

#define S_LAYER_COLUMNS \
    "layer, enabled, config, to_jsonb (secret_names) AS secrets, secret_updated_at," \
    " created_at, updated_at, " LY_APIV1_ETAG_SQL ("updated_at")

static const s_layer_t *
s_layer_find (ly_apiv1_ctx_t *ctx, const char *name)
{
    for (size_t i = 0; i < sizeof s_layers / sizeof s_layers [0]; i++)
        if (streq (s_layers [i].name, name))
            return &s_layers [i];
    ly_apiv1_error (ctx, 404, "not_found", "no such layer; the layers are meta, tiktok and apple_search_ads");
    return NULL;
}

//  Turns the row's "secrets" (the list of secret names set) into {"name": "set"|"unset"}.
static void
s_layer_decorate (json_t *row)
{
    const char *name = json_string_value (json_object_get (row, "layer"));
    json_t *names = json_object_get (row, "secrets");
    json_t *secrets = json_object ();
    for (size_t i = 0; name && i < sizeof s_layers / sizeof s_layers [0]; i++)
        if (streq (s_layers [i].name, name) && s_layers [i].secret)
            json_object_set_new (secrets, s_layers [i].secret, json_string ("unset"));
    size_t index;
    json_t *value;
    json_array_foreach (names, index, value)
        if (json_is_string (value))
            json_object_set_new (secrets, json_string_value (value), json_string ("set"));
    json_object_set_new (row, "secrets", secrets);
}

//  --------------------------------------------------------------------------
//  Validation of a PUT body

static const char s_word [] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

static bool
s_is_api_version (const char *text)
{
    //  v<major>.<minor>, as in "v19.0"
    if (!text || text [0] != 'v')
        return false;
    size_t major = strspn (text + 1, "0123456789");
    if (major < 1 || major > 3 || text [1 + major] != '.')
        return false;
    const char *minor = text + 2 + major;
    size_t digits = strspn (minor, "0123456789");
    return digits >= 1 && digits <= 2 && minor [digits] == 0;
}

static bool
s_is_token (const char *text)
{
    size_t len = text? strlen (text): 0;
    if (len < 1 || len > 1024)
        return false;
    for (size_t i = 0; i < len; i++)
        if (text [i] <= 0x20 || text [i] >= 0x7f || text [i] == '"' || text [i] == '\\')
            return false;           //  the relay sends it in JSON and headers as it is
    return true;
}

//  Reads an optional string field that may be null; *out is NULL when absent or null.
//  -1 with 422 when it is neither a string nor null, or check refuses it.
static int
s_optional (ly_apiv1_ctx_t *ctx, const char *field, bool (*check) (const char *),
            const char *hint, const char **out)
{
    json_t *value = json_object_get (ctx->body, field);
    *out = NULL;
    if (!value || json_is_null (value))
        return 0;
    const char *text = json_string_value (value);
    if (!text || !check (text)) {
        ly_apiv1_field_error (ctx, field, "%s must be %s", field, hint);
        return -1;
    }
    *out = text;
    return 0;
}

static bool
s_is_dataset_id (const char *text)
{
    return ly_apiv1_is_charset (text, "0123456789", 30);
}

static bool
s_is_word (const char *text)
{
    return ly_apiv1_is_charset (text, s_word, 64);
}

//  A display name: 1 to 255 characters, none a control character (C0, DEL or C1);
//  jansson has checked the UTF-8.
static bool
s_is_app_name (const char *text)
{
    long characters = ly_utf8_plain_chars (text);
    return characters >= 1 && characters <= 255;
}

static bool
s_is_event_name (const char *text)
{
    return ly_apiv1_is_charset (text, "abcdefghijklmnopqrstuvwxyz0123456789_", 64);
}

typedef struct {
    int enabled;                /* -1: not given */
    json_t *config;             /* owned */
    const char *access_token;   /* borrowed from the body; NULL: not given */
} s_layer_body_t;

//  Validates the body for the layer; 0, or -1 with 422 answered.
static int
s_layer_body (ly_apiv1_ctx_t *ctx, const s_layer_t *layer, s_layer_body_t *out)
{
    static const char *meta_fields [] = { "enabled", "dataset_id", "access_token",
                                          "test_event_code", "api_version", NULL };
    static const char *tiktok_fields [] = { "enabled", "app_id", "access_token",
                                            "test_event_code", "event_map", "app_name", NULL };
    static const char *apple_fields [] = { "enabled", NULL };
    const char **fields = streq (layer->name, "meta")? meta_fields
                        : streq (layer->name, "tiktok")? tiktok_fields: apple_fields;
    memset (out, 0, sizeof *out);
    out->enabled = -1;
    const char *key;
    json_t *value;
    json_object_foreach (ctx->body, key, value) {
        int i;
        for (i = 0; fields [i] && !streq (fields [i], key); i++)
            ;
        if (!fields [i]) {
            ly_apiv1_field_error (ctx, key, "unknown field \"%.64s\" for the %s layer", key, layer->name);
            return -1;
        }
    }
    value = json_object_get (ctx->body, "enabled");
    if (value) {
        if (!json_is_boolean (value)) {
            ly_apiv1_field_error (ctx, "enabled", "enabled must be true or false");
            return -1;
        }
        out->enabled = json_is_true (value);
    }
    out->config = json_object ();
    if (layer->secret) {
        value = json_object_get (ctx->body, "access_token");
        if (value && !s_is_token (json_string_value (value))) {
            ly_apiv1_field_error (ctx, "access_token", "access_token must be a string of 1 to 1024"
                                  " visible ASCII characters, without \" or \\");
            return -1;
        }
        out->access_token = json_string_value (value);
    }
    const char *text;
    if (streq (layer->name, "meta")) {
        const char *dataset_id = json_string_value (json_object_get (ctx->body, "dataset_id"));
        if (!dataset_id || !s_is_dataset_id (dataset_id)) {
            ly_apiv1_field_error (ctx, "dataset_id", "dataset_id %s the Meta dataset (pixel) id,"
                                  " 1 to 30 digits", dataset_id? "must be": "is required:");
            return -1;
        }
        json_object_set_new (out->config, "dataset_id", json_string (dataset_id));
        if (s_optional (ctx, "test_event_code", s_is_word, "1 to 64 letters, digits, '_' or '-'", &text))
            return -1;
        if (text)
            json_object_set_new (out->config, "test_event_code", json_string (text));
        if (s_optional (ctx, "api_version", s_is_api_version, "a Graph API version such as \"v19.0\"", &text))
            return -1;
        if (text)
            json_object_set_new (out->config, "api_version", json_string (text));
    }
    else
    if (streq (layer->name, "tiktok")) {
        const char *app_id = json_string_value (json_object_get (ctx->body, "app_id"));
        if (!app_id || !s_is_word (app_id)) {
            ly_apiv1_field_error (ctx, "app_id", "app_id %s the TikTok app id, 1 to 64 letters,"
                                  " digits, '_' or '-'", app_id? "must be": "is required:");
            return -1;
        }
        json_object_set_new (out->config, "app_id", json_string (app_id));
        if (s_optional (ctx, "test_event_code", s_is_word, "1 to 64 letters, digits, '_' or '-'", &text))
            return -1;
        if (text)
            json_object_set_new (out->config, "test_event_code", json_string (text));
        value = json_object_get (ctx->body, "event_map");
        if (value && !json_is_null (value)) {
            if (!json_is_object (value) || json_object_size (value) > S_EVENT_MAP_MAX) {
                ly_apiv1_field_error (ctx, "event_map", "event_map must be an object of at most %d"
                                      " event names to TikTok events", S_EVENT_MAP_MAX);
                return -1;
            }
            const char *name;
            json_t *event;
            json_object_foreach (value, name, event) {
                const char *tiktok = json_string_value (event);
                bool not_sent = json_is_null (event) || (tiktok && *tiktok == 0);
                if (!s_is_event_name (name) || !(not_sent || s_is_word (tiktok))) {
                    ly_apiv1_field_error (ctx, "event_map", "event_map maps event names"
                                          " ([a-z0-9_]{1,64}) to TikTok event names"
                                          " (1 to 64 letters, digits, '_' or '-'),"
                                          " or to \"\" or null: not sent");
                    return -1;
                }
            }
            json_object_set (out->config, "event_map", value);
        }
        if (s_optional (ctx, "app_name", s_is_app_name, "1 to 255 characters of UTF-8 text,"
                        " no control characters", &text))
            return -1;
        if (text)
            json_object_set_new (out->config, "app_name", json_string (text));
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Handlers

void
ly_apiv1_layers_list (ly_apiv1_ctx_t *ctx)
{
    const char *params [] = { ctx->params [0] };
    if (!ly_apiv1_project_exists (ctx, params [0]))
        return;
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT " S_LAYER_COLUMNS " FROM project_layers WHERE project_id = $1 ORDER BY layer",
        1, params);
    if (!res)
        return;
    json_t *data = json_array ();
    for (int row = 0; row < PQntuples (res); row++) {
        json_t *layer = ly_apiv1_row (res, row);
        s_layer_decorate (layer);
        json_array_append_new (data, layer);
    }
    PQclear (res);
    ly_apiv1_reply (ctx, 200, json_pack ("{s:o, s:n}", "data", data, "next_cursor"));
}

void
ly_apiv1_layer_get (ly_apiv1_ctx_t *ctx)
{
    const char *params [] = { ctx->params [0], ctx->params [1] };
    if (!s_layer_find (ctx, params [1]) || !ly_apiv1_project_exists (ctx, params [0]))
        return;
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT " S_LAYER_COLUMNS " FROM project_layers WHERE project_id = $1 AND layer = $2",
        2, params);
    if (!res)
        return;
    if (PQntuples (res) == 1) {
        json_t *layer = ly_apiv1_row (res, 0);
        s_layer_decorate (layer);
        ly_apiv1_reply (ctx, 200, layer);
        ly_apiv1_etag (ctx, res, 0);
    }
    else
        ly_apiv1_error (ctx, 404, "not_found", "this layer is not set up for the project");
    PQclear (res);
}

//  Seals {"access_token": ...} for the row; hex of the sealed bytes (caller frees), or
//  NULL with 500 answered.
static char *
s_seal (ly_apiv1_ctx_t *ctx, const char *project_id, const char *layer, const char *token)
{
    const uint8_t *key = ly_master_key ();
    if (!key) {
        ly_apiv1_error (ctx, 500, "internal", "no master key to seal secrets with");
        return NULL;
    }
    json_t *secrets = json_pack ("{s:s}", "access_token", token);
    char *plain = secrets? json_dumps (secrets, JSON_COMPACT): NULL;
    json_decref (secrets);
    char *aad = zsys_sprintf ("project_layers/%s/%s", project_id, layer);
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    char *hex = NULL;
    if (plain && ly_secret_seal (key, aad, plain, strlen (plain), &sealed, &sealed_len) == 0) {
        hex = (char *) malloc (sealed_len * 2 + 1);
        for (size_t i = 0; hex && i < sealed_len; i++)
            snprintf (hex + 2 * i, 3, "%02x", sealed [i]);
    }
    if (plain) {
        explicit_bzero (plain, strlen (plain));
        free (plain);
    }
    free (sealed);
    zstr_free (&aad);
    if (!hex)
        ly_apiv1_error (ctx, 500, "internal", "could not seal the secret");
    return hex;
}

void
ly_apiv1_layer_put (ly_apiv1_ctx_t *ctx)
{
    const char *project_id = ctx->params [0];
    const s_layer_t *layer = s_layer_find (ctx, ctx->params [1]);
    if (!layer || !ly_apiv1_project_exists (ctx, project_id))
        return;
    s_layer_body_t body;
    char *sealed = NULL, *config = NULL;
    PGresult *res = NULL;
    if (s_layer_body (ctx, layer, &body))
        goto cleanup;
    res = ly_apiv1_exec (ctx,
        "SELECT $3 = ANY (secret_names), " LY_APIV1_ETAG_SQL ("updated_at")
        "  FROM project_layers WHERE project_id = $1 AND layer = $2 FOR UPDATE",
        3, (const char *[]) { project_id, layer->name, layer->secret? layer->secret: "" });
    if (!res)
        goto cleanup;
    bool exists = PQntuples (res) == 1;
    bool secret_set = exists && PQgetvalue (res, 0, 0) [0] == 't';
    if (exists? !ly_apiv1_if_match (ctx, PQgetvalue (res, 0, 1))
              : ctx->req->if_match && !ly_apiv1_if_match (ctx, NULL))
        goto cleanup;
    PQclear (res);
    res = NULL;
    if (layer->secret && !body.access_token && !secret_set) {
        ly_apiv1_field_error (ctx, layer->secret, "%s is required to set up the %s layer",
                              layer->secret, layer->name);
        goto cleanup;
    }
    if (body.access_token && !(sealed = s_seal (ctx, project_id, layer->name, body.access_token)))
        goto cleanup;
    config = ly_apiv1_dump (body.config);
    char enabled [8] = "";
    if (body.enabled >= 0)
        snprintf (enabled, sizeof enabled, "%s", body.enabled? "true": "false");
    const char *params [] = { project_id, layer->name, enabled [0]? enabled: NULL, config,
                              sealed, sealed? "{access_token}": NULL };
    //  Another request of the same moment (layersctl, another api node) may make the
    //  layer after we looked (the INSERT then does nothing: update it as if it had been
    //  there, a PUT sets or replaces), or delete it (the UPDATE then finds nothing: make
    //  it again). A few turns settle it.
    bool settled = false;
    for (int turn = 0; turn < S_PUT_TURNS && !settled; turn++) {
        PQclear (res);
        if (!exists)
            res = ly_apiv1_exec (ctx,
                "INSERT INTO project_layers (project_id, layer, enabled, config, secret_names,"
                "                            secret_ciphertext, secret_key_id, secret_key_version,"
                "                            secret_updated_at)"
                " VALUES ($1, $2, coalesce ($3::boolean, true), $4::jsonb,"
                "         coalesce ($6::text [], '{}'), decode ($5, 'hex'),"
                "         CASE WHEN $5::text IS NULL THEN NULL ELSE '" S_SECRET_KEY_ID "' END,"
                "         CASE WHEN $5::text IS NULL THEN NULL ELSE " S_SECRET_KEY_VERSION " END,"
                "         CASE WHEN $5::text IS NULL THEN NULL ELSE now () END)"
                " ON CONFLICT (project_id, layer) DO NOTHING"
                " RETURNING " S_LAYER_COLUMNS, 6, params);
        else
        if (sealed)
            res = ly_apiv1_exec (ctx,
                "UPDATE project_layers SET enabled = coalesce ($3::boolean, enabled),"
                "       config = $4::jsonb, secret_names = $6::text [],"
                "       secret_ciphertext = decode ($5, 'hex'), secret_key_id = '" S_SECRET_KEY_ID "',"
                "       secret_key_version = " S_SECRET_KEY_VERSION ", secret_updated_at = now ()"
                " WHERE project_id = $1 AND layer = $2 RETURNING " S_LAYER_COLUMNS, 6, params);
        else
            res = ly_apiv1_exec (ctx,
                "UPDATE project_layers SET enabled = coalesce ($3::boolean, enabled),"
                "       config = $4::jsonb"
                " WHERE project_id = $1 AND layer = $2 RETURNING " S_LAYER_COLUMNS, 4, params);
        if (!res)
            goto cleanup;               //  answered
        settled = PQntuples (res) == 1;
        if (!settled)
            exists = !exists;
    }
    if (!settled) {
        ly_apiv1_error (ctx, 409, "conflict", "the layer was changed by other requests while "
                        "this one set it; send it again");
        goto cleanup;
    }
    if (res && PQntuples (res) == 1) {
        json_t *row = ly_apiv1_row (res, 0);
        s_layer_decorate (row);
        ly_apiv1_reply (ctx, exists? 200: 201, row);
        ly_apiv1_etag (ctx, res, 0);
        if (!exists)
            ly_apiv1_location (ctx, "/v1/projects/%s/layers/%s", project_id, layer->name);
    }
cleanup:
    PQclear (res);
    if (body.access_token)      //  no copy of the token outlives the request
        explicit_bzero ((char *) body.access_token, strlen (body.access_token));
    json_decref (body.config);
    free (config);
    free (sealed);
}

void
ly_apiv1_layer_delete (ly_apiv1_ctx_t *ctx)
{
    const char *params [] = { ctx->params [0], ctx->params [1] };
    if (!s_layer_find (ctx, params [1]) || !ly_apiv1_project_exists (ctx, params [0]))
        return;
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT " LY_APIV1_ETAG_SQL ("updated_at")
        "  FROM project_layers WHERE project_id = $1 AND layer = $2 FOR UPDATE", 2, params);
    if (!res)
        return;
    bool found = PQntuples (res) == 1;
    bool matches = found && ly_apiv1_if_match (ctx, PQgetvalue (res, 0, 0));
    PQclear (res);
    if (!found) {
        ly_apiv1_error (ctx, 404, "not_found", "this layer is not set up for the project");
        return;
    }
    if (!matches)
        return;
    res = ly_apiv1_exec (ctx, "DELETE FROM project_layers WHERE project_id = $1 AND layer = $2",
                         2, params);
    if (res)
        ly_apiv1_no_content (ctx);
    PQclear (res);
}
