/*  ly_bootstrap.c: the demo workspace (see ly_bootstrap.h). Keys and tokens are random,
    stored only as SHA-256 with a visible prefix, and shown once: in credentials.json. */
#include "ly_bootstrap.h"
#include "ly_config.h"
#include "ly_crypto.h"
#include "ly_db.h"
#include "ly_log.h"

#define S_PREFIX_LEN 12         /* visible part of a key or token, e.g. "lys_3kT9aQ2x" */

char *
ly_bootstrap_base_url (void)
{
    const char *host = ly_config.http_host;
    if (streq (host, "0.0.0.0") || streq (host, ""))
        host = "127.0.0.1";
    else
    if (streq (host, "::"))
        host = "::1";
    if (strchr (host, ':'))
        return zsys_sprintf ("http://[%s]:%d", host, ly_config.http_port);
    return zsys_sprintf ("http://%s:%d", host, ly_config.http_port);
}

//  Runs one parameterized statement; returns the first column of the first row (caller
//  owns) or NULL with the reason in err. For statements without rows returns "".
static char *
s_exec (PGconn *conn, const char *sql, int nparams, const char *const *params,
        char *err, size_t errlen)
{
    PGresult *res = PQexecParams (conn, sql, nparams, NULL, params, NULL, NULL, 0);
    char *value = NULL;
    if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) > 0)
        value = strdup (PQgetvalue (res, 0, 0));
    else
    if (PQresultStatus (res) == PGRES_COMMAND_OK || PQresultStatus (res) == PGRES_TUPLES_OK)
        value = strdup ("");
    else {
        char reason [512];
        snprintf (err, errlen, "could not create the demo workspace: %s",
                  ly_db_message (reason, sizeof reason, PQresultErrorMessage (res)));
    }
    PQclear (res);
    return value;
}

//  Writes text to path atomically with mode 0600. 0 / -1.
static int
s_write_private (const char *path, const char *text, char *err, size_t errlen)
{
    char *tmp = zsys_sprintf ("%s.tmp", path);
    int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = -1;
    if (fd == -1)
        snprintf (err, errlen, "could not create \"%s\": %s", tmp, strerror (errno));
    else {
        size_t len = strlen (text);
        if (fchmod (fd, 0600) || write (fd, text, len) != (ssize_t) len || fsync (fd))
            snprintf (err, errlen, "could not write \"%s\": %s", tmp, strerror (errno));
        else
        if (rename (tmp, path))
            snprintf (err, errlen, "could not rename \"%s\": %s", tmp, strerror (errno));
        else
            rc = 0;
        close (fd);
    }
    if (rc)
        unlink (tmp);
    zstr_free (&tmp);
    return rc;
}

//  The credentials of an earlier start, with base_url brought up to date when
//  LAYERS_HTTP_ADDR changed since. 0 / -1.
static int
s_refresh_base_url (const char *path, char *err, size_t errlen)
{
    json_error_t error;
    json_t *json = json_load_file (path, 0, &error);
    char *base_url = ly_bootstrap_base_url ();
    const char *old = json_string_value (json_object_get (json, "base_url"));
    int rc = 0;
    if (json_is_object (json) && (!old || !streq (old, base_url))) {
        json_object_set_new (json, "base_url", json_string (base_url));
        char *text = json_dumps (json, JSON_INDENT (2));
        char *with_newline = zsys_sprintf ("%s\n", text);
        free (text);
        rc = s_write_private (path, with_newline, err, errlen);
        explicit_bzero (with_newline, strlen (with_newline));
        zstr_free (&with_newline);
    }
    zstr_free (&base_url);
    json_decref (json);
    return rc;
}

//  1 when the database has the organization named in the credentials file at path, 0
//  when not (or the file names none), -1 on a database error, with err set.
static int
s_org_known (PGconn *conn, const char *path, char *err, size_t errlen)
{
    json_t *json = json_load_file (path, 0, NULL);
    const char *params [] = { json_string_value (json_object_get (json, "org_id")) };
    char *found = params [0]? s_exec (conn, "SELECT EXISTS (SELECT FROM organizations WHERE "
                                      "org_id::text = $1)::text", 1, params, err, errlen)
                            : strdup ("false");
    json_decref (json);
    int known = found? streq (found, "true"): -1;
    zstr_free (&found);
    return known;
}

int
ly_bootstrap_demo (PGconn *conn, char *err, size_t errlen)
{
    char *path = zsys_sprintf ("%s/credentials.json", ly_config.data_dir);
    char *fresh = zsys_sprintf ("%s.new", path);
    //  Written before the COMMIT that made its workspace, and renamed after it: a start
    //  cut off between the two left it, and its workspace is there when it names one
    //  the database has
    if (access (path, F_OK) != 0 && access (fresh, F_OK) == 0) {
        int known = s_org_known (conn, fresh, err, errlen);
        if (known == -1) {
            zstr_free (&fresh);
            zstr_free (&path);
            return -1;
        }
        if (known && rename (fresh, path) == 0)
            ly_info ("supervisor", "%s restored from the start before, cut off as it wrote it",
                     path);
    }
    unlink (fresh);
    if (access (path, F_OK) == 0) {
        //  A database with no organization at all is a new one (its cluster removed, say):
        //  the credentials are of the one before and open nothing here
        char *empty = s_exec (conn, "SELECT (NOT EXISTS (SELECT FROM organizations))::text",
                              0, NULL, err, errlen);
        bool stale = empty && streq (empty, "true");
        int rc = empty? 0: -1;
        zstr_free (&empty);
        if (!stale) {
            rc = rc? rc: s_refresh_base_url (path, err, errlen);
            zstr_free (&fresh);
            zstr_free (&path);
            return rc;
        }
        char *old = zsys_sprintf ("%s.old", path);
        ly_warning ("supervisor", "%s is of another database (this one has no organization): "
                    "moved to %s, and a new demo workspace is made", path, old);
        if (rename (path, old)) {
            snprintf (err, errlen, "could not rename \"%s\": %s", path, strerror (errno));
            zstr_free (&old);
            zstr_free (&fresh);
            zstr_free (&path);
            return -1;
        }
        zstr_free (&old);
    }
    //  Only on a database without organizations: credentials.json removed later (or a
    //  shared database given with LAYERS_DATABASE_URL) does not make a second one.
    char *exists = s_exec (conn, "SELECT EXISTS (SELECT FROM organizations)::text", 0, NULL,
                           err, errlen);
    if (!exists || streq (exists, "true")) {
        if (exists)
            ly_info ("supervisor", "no %s, but the database has organizations: no demo "
                     "workspace made (layersctl token create makes a token)", path);
        zstr_free (&path);
        zstr_free (&fresh);
        int rc = exists? 0: -1;
        zstr_free (&exists);
        return rc;
    }
    zstr_free (&exists);
    char *sdk_key = ly_token_new ("lys_");
    char *api_token = ly_token_new ("lya_");
    char *base_url = ly_bootstrap_base_url ();
    char *org_id = NULL, *project_id = NULL, *member_id = NULL, *done = NULL;
    char sdk_hash [65], api_hash [65];
    char sdk_prefix [S_PREFIX_LEN + 1], api_prefix [S_PREFIX_LEN + 1];
    int rc = -1;
    if (!sdk_key || !api_token) {
        snprintf (err, errlen, "could not generate demo keys: no randomness");
        goto cleanup;
    }
    ly_sha256_hex (sdk_key, strlen (sdk_key), sdk_hash);
    ly_sha256_hex (api_token, strlen (api_token), api_hash);
    snprintf (sdk_prefix, sizeof sdk_prefix, "%s", sdk_key);
    snprintf (api_prefix, sizeof api_prefix, "%s", api_token);

    if (!(done = s_exec (conn, "BEGIN", 0, NULL, err, errlen)))
        goto cleanup;
    zstr_free (&done);
    if (!(org_id = s_exec (conn, "SELECT gen_random_uuid ()::text", 0, NULL, err, errlen)))
        goto rollback;
    const char *org_params [] = { org_id };
    if (!(done = s_exec (conn, "SELECT set_config ('layers.org_id', $1, true)", 1, org_params, err, errlen)))
        goto rollback;
    zstr_free (&done);
    if (!(done = s_exec (conn, "INSERT INTO organizations (org_id, name) VALUES ($1, 'Demo')",
                         1, org_params, err, errlen)))
        goto rollback;
    zstr_free (&done);
    if (!(member_id = s_exec (conn,
            "INSERT INTO members (org_id, email, display_name, role) "
            "VALUES ($1, 'demo@example.com', 'Demo owner', 'owner') RETURNING member_id",
            1, org_params, err, errlen)))
        goto rollback;
    if (!(project_id = s_exec (conn,
            "INSERT INTO projects (org_id, name) VALUES ($1, 'Demo app') RETURNING project_id",
            1, org_params, err, errlen)))
        goto rollback;
    const char *key_params [] = { org_id, project_id, sdk_prefix, sdk_hash };
    if (!(done = s_exec (conn,
            "INSERT INTO sdk_keys (org_id, project_id, name, key_prefix, key_sha256) "
            "VALUES ($1, $2, 'demo', $3, decode ($4, 'hex'))", 4, key_params, err, errlen)))
        goto rollback;
    zstr_free (&done);
    const char *token_params [] = { org_id, member_id, api_prefix, api_hash };
    if (!(done = s_exec (conn,
            "INSERT INTO api_tokens (org_id, member_id, name, token_prefix, token_sha256) "
            "VALUES ($1, $2, 'demo', $3, decode ($4, 'hex'))", 4, token_params, err, errlen)))
        goto rollback;
    zstr_free (&done);

    json_t *json = json_pack ("{s:s, s:s, s:s, s:s, s:s}", "base_url", base_url,
                              "org_id", org_id, "project_id", project_id,
                              "sdk_key", sdk_key, "api_token", api_token);
    char *text = json_dumps (json, JSON_INDENT (2));
    json_decref (json);
    char *with_newline = zsys_sprintf ("%s\n", text);
    free (text);
    //  Written aside first and renamed after the COMMIT: a crash before the COMMIT
    //  leaves no credentials that do not exist, one after it credentials.json.new,
    //  which the next start takes (above)
    int written = s_write_private (fresh, with_newline, err, errlen);
    zstr_free (&with_newline);
    if (written)
        goto rollback;
    if (!(done = s_exec (conn, "COMMIT", 0, NULL, err, errlen))) {
        unlink (fresh);
        goto cleanup;
    }
    zstr_free (&done);
    if (rename (fresh, path)) {
        snprintf (err, errlen, "could not rename \"%s\": %s", fresh, strerror (errno));
        goto cleanup;
    }
    printf ("\nLayers demo workspace created (also in %s):\n"
            "  base_url    %s\n  org_id      %s\n  project_id  %s\n"
            "  sdk_key     %s\n  api_token   %s\n\n"
            "Send a first event:\n"
            "  curl -s %s/l/events -H 'Authorization: Bearer %s' \\\n"
            "       -H 'Content-Type: application/json' \\\n"
            "       -d '{\"event_id\": \"first-1\", \"name\": \"app_open\"}'\n\n",
            path, base_url, org_id, project_id, sdk_key, api_token, base_url, sdk_key);
    fflush (stdout);
    rc = 0;
    goto cleanup;

rollback:
    PQclear (PQexec (conn, "ROLLBACK"));
cleanup:
    zstr_free (&path);
    zstr_free (&fresh);
    zstr_free (&org_id);
    zstr_free (&project_id);
    zstr_free (&member_id);
    zstr_free (&done);
    zstr_free (&base_url);
    free (sdk_key);
    free (api_token);
    return rc;
}
