/*  layersctl: Layers administration from the command line. Talks to PostgreSQL with
    the admin URL (LAYERS_DATABASE_URL, or the embedded cluster of a running layersd
    under LAYERS_DATA_DIR). */
#include "ly_prelude.h"
#include "ly_config.h"
#include "ly_crypto.h"
#include "ly_db.h"
#include "ly_log.h"
#include "ly_migrate.h"
#include "ly_utf8.h"
#include "ly_pg.h"
#include "ly_apiv1.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: layersctl COMMAND [ARGS]\n"
"\n"
"Administers a Layers installation.\n"
"\n"
"Commands:\n"
"  migrate          apply pending schema migrations and set up the server's database\n"
"                   roles; prints {\"applied\": N} (a second run applies 0)\n"
"  migrate --list   list the migrations compiled into this binary\n"
"  org create NAME --owner EMAIL [--display-name NAME]\n"
"                   create an organization with its owner member (EMAIL, shown as the\n"
"                   --display-name) and an owner API token; prints {\"org_id\",\n"
"                   \"member_id\", \"token\", \"token_id\"}\n"
"                   (the token is shown this once)\n"
"  token create --org ORG_ID --member EMAIL [--name NAME]\n"
"                   a new API token for a member of the organization; prints\n"
"                   {\"token\", \"token_id\", \"member_id\", \"org_id\"}\n"
"  token revoke TOKEN_ID\n"
"                   revoke an API token at once; prints {\"token_id\", \"revoked_at\"}\n"
"  layer set PROJECT_ID meta|tiktok|apple_search_ads JSON|-\n"
"                   configure a project's layer, as PUT /v1/projects/{id}/layers/{layer}\n"
"                   (e.g. '{\"enabled\": true, \"dataset_id\": \"123\", \"access_token\": \"...\"}');\n"
"                   - reads the JSON from standard input: give a secret that way, not on\n"
"                   the command line (other users see it in ps, and it stays in the shell's\n"
"                   history); secrets are sealed with the master key and never printed\n"
"  layer get PROJECT_ID LAYER\n"
"                   show a layer's settings (secrets only as \"set\")\n"
"  deadletters PROJECT_ID [--destination D] [--limit N] [--cursor C]\n"
"                   list dead deliveries with the network's last answer, N at a time\n"
"                   (1 to 200, default 50); C is the next_cursor of the page before\n"
"  replay PROJECT_ID [--destination D] [--delivery ID ...]\n"
"                   put dead deliveries back in the queue (never delivered ones)\n"
"  help             show this help\n"
"\n"
"The database is LAYERS_DATABASE_URL (an admin account: a superuser, or an owner with\n"
"CREATEROLE); when unset, the embedded PostgreSQL of a running layersd under\n"
"LAYERS_DATA_DIR (./var). Role passwords derive from the master key\n"
"(LAYERS_MASTER_KEY_FILE, default $LAYERS_DATA_DIR/master.key): migrate with\n"
"LAYERS_DATABASE_URL creates it when missing; the other commands, and migrate on the\n"
"embedded PostgreSQL, need the server's. COMMAND --help shows this help.\n");
}

//  An admin session. Only migrate on LAYERS_DATABASE_URL (the first command of an
//  installation on its own PostgreSQL) may create the master key (and the data directory
//  that holds it); any other command needs the server's, and a
//  new one would not match the database's role passwords and sealed secrets.
static PGconn *
s_admin_connect (bool create_key)
{
    char err [1024];
    uint8_t key [32];
    if (create_key)
        zsys_dir_create ("%s", ly_config.data_dir);
    if (ly_master_key_load (ly_config.master_key_file, create_key, key, err, sizeof err)) {
        fprintf (stderr, "layersctl: %s%s\n", err, create_key? ""
                 : " (is LAYERS_DATA_DIR, or LAYERS_MASTER_KEY_FILE, the server's?)");
        return NULL;
    }
    char *url = ly_config.database_url? strdup (ly_config.database_url)
                                      : ly_pg_url_for (ly_config.data_dir);
    ly_db_init (url, key);
    ly_master_key_set (key);
    memset (key, 0, sizeof key);
    free (url);
    PGconn *conn = ly_db_connect (LY_DB_ADMIN, err, sizeof err);
    if (!conn)
        fprintf (stderr, "layersctl: %s%s\n", err, ly_config.database_url? ""
                 : " (is layersd running with this LAYERS_DATA_DIR? or set LAYERS_DATABASE_URL)");
    else
    if (!create_key && ly_migrate_key_check (conn, err, sizeof err)) {
        fprintf (stderr, "layersctl: %s\n", err);
        PQfinish (conn);
        conn = NULL;
    }
    return conn;
}

//  Runs one parameterized statement; the first column of the first row (caller owns),
//  "" for a statement without rows, NULL on failure (reason printed).
static char *
s_exec (PGconn *conn, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = PQexecParams (conn, sql, nparams, NULL, params, NULL, NULL, 0);
    char *value = NULL;
    if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) > 0)
        value = strdup (PQgetvalue (res, 0, 0));
    else
    if (PQresultStatus (res) == PGRES_TUPLES_OK || PQresultStatus (res) == PGRES_COMMAND_OK)
        value = strdup ("");
    else {
        const char *primary = PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY);
        fprintf (stderr, "layersctl: %s\n", primary? primary: PQerrorMessage (conn));
    }
    PQclear (res);
    return value;
}

//  True when the statement ran.
static bool
s_run (PGconn *conn, const char *sql, int nparams, const char *const *params)
{
    char *value = s_exec (conn, sql, nparams, params);
    free (value);
    return value != NULL;
}

//  The value of "--name VALUE" among args, or NULL.
static const char *
s_flag (int argc, char *argv [], const char *name)
{
    for (int i = 0; i + 1 < argc; i++)
        if (streq (argv [i], name))
            return argv [i + 1];
    return NULL;
}

//  True when args from first on are pairs of a known flag and its value.
static bool
s_flags_valid (int argc, char *argv [], int first, const char *const *known)
{
    for (int i = first; i < argc; i += 2) {
        bool found = false;
        for (const char *const *k = known; *k && !found; k++)
            found = streq (argv [i], *k);
        if (!found || i + 1 >= argc) {
            fprintf (stderr, "layersctl: %s \"%s\"; see layersctl --help\n",
                     found? "missing value after": "unknown argument", argv [i]);
            return false;
        }
    }
    return true;
}

static bool
s_valid_email (const char *email)
{
    return email && strlen (email) <= 320 && ly_apiv1_is_email (email);     //  as the API
}

//  Inserts a new API token for member_id of the tenant set; prints nothing. The token
//  (caller frees and wipes) and its id (caller frees), or NULL.
static char *
s_token_insert (PGconn *conn, const char *member_id, const char *name, char **token_id)
{
    char *token = ly_token_new ("lya_");
    if (!token) {
        fprintf (stderr, "layersctl: could not generate a token: no randomness\n");
        return NULL;
    }
    char hash [65], prefix [13];
    ly_sha256_hex (token, strlen (token), hash);
    snprintf (prefix, sizeof prefix, "%s", token);
    const char *params [] = { member_id, name, prefix, hash };
    *token_id = s_exec (conn,
        "INSERT INTO api_tokens (member_id, name, token_prefix, token_sha256)"
        " VALUES ($1, $2, $3, decode ($4, 'hex')) RETURNING token_id", 4, params);
    if (!*token_id) {
        explicit_bzero (token, strlen (token));
        free (token);
        return NULL;
    }
    return token;
}

static void
s_print_json (json_t *json)
{
    char *text = json_dumps (json, JSON_INDENT (2));
    if (text)
        printf ("%s\n", text);
    free (text);
    json_decref (json);
}

//  Whether text (a name, NULL: not given) is valid UTF-8 of min to 200 characters
//  without control characters, as the database and the partner API take it; if not,
//  says so naming what.
static bool
s_name_valid (const char *what, const char *text, size_t min)
{
    if (!text)
        return true;
    long chars = ly_utf8_plain_chars (text);
    if (chars >= (long) min && chars <= 200)
        return true;
    fprintf (stderr, "layersctl: %s must be %s 200 characters of UTF-8 text without "
             "control characters\n", what, min? "1 to": "at most");
    return false;
}

//  org create NAME --owner EMAIL [--display-name NAME]
static int
s_org (int argc, char *argv [])
{
    static const char *const known [] = { "--owner", "--display-name", NULL };
    if (argc < 2 || !streq (argv [0], "create") || argv [1][0] == '-') {
        fprintf (stderr, "layersctl: usage: org create NAME --owner EMAIL [--display-name NAME]\n");
        return 2;
    }
    const char *name = argv [1];
    if (!s_flags_valid (argc, argv, 2, known))
        return 2;
    const char *owner = s_flag (argc - 2, argv + 2, "--owner");
    const char *display = s_flag (argc - 2, argv + 2, "--display-name");
    if (!s_name_valid ("the organization name", name, 1)
    ||  !s_name_valid ("--display-name", display, 0))
        return 2;
    if (!s_valid_email (owner)) {
        fprintf (stderr, "layersctl: --owner needs the owner's email address\n");
        return 2;
    }
    PGconn *conn = s_admin_connect (false);
    if (!conn)
        return 1;
    int rc = 1;
    char *org_id = NULL, *member_id = NULL, *token = NULL, *token_id = NULL;
    if (!s_run (conn, "BEGIN", 0, NULL))
        goto cleanup;
    //  The tenant first, then the rows under it (docs/schema.md): the statements work
    //  for an admin that is not a superuser too.
    if (!(org_id = s_exec (conn, "SELECT gen_random_uuid ()::text", 0, NULL)))
        goto rollback;
    const char *tenant [] = { org_id };
    const char *org [] = { org_id, name };
    const char *member [] = { org_id, owner, display };
    if (!s_run (conn, "SELECT set_config ('layers.org_id', $1, true)", 1, tenant)
    ||  !s_run (conn, "INSERT INTO organizations (org_id, name) VALUES ($1, $2)", 2, org)
    ||  !(member_id = s_exec (conn, "INSERT INTO members (org_id, email, display_name, role)"
                                    " VALUES ($1, $2, $3, 'owner') RETURNING member_id", 3, member))
    ||  !(token = s_token_insert (conn, member_id, "owner", &token_id))
    ||  !s_run (conn, "COMMIT", 0, NULL))
        goto rollback;
    s_print_json (json_pack ("{s:s, s:s, s:s, s:s}", "org_id", org_id, "member_id", member_id,
                             "token", token, "token_id", token_id));
    rc = 0;
    goto cleanup;
rollback:
    PQclear (PQexec (conn, "ROLLBACK"));
cleanup:
    if (token) {
        explicit_bzero (token, strlen (token));
        free (token);
    }
    free (org_id);
    free (member_id);
    free (token_id);
    PQfinish (conn);
    return rc;
}

//  token create --org ORG_ID --member EMAIL [--name NAME] | token revoke TOKEN_ID
static int
s_token (int argc, char *argv [])
{
    static const char *const known [] = { "--org", "--member", "--name", NULL };
    bool create = argc >= 1 && streq (argv [0], "create");
    bool revoke = argc == 2 && streq (argv [0], "revoke");
    if (!create && !revoke) {
        fprintf (stderr, "layersctl: usage: token create --org ORG_ID --member EMAIL [--name NAME]"
                 " | token revoke TOKEN_ID\n");
        return 2;
    }
    const char *org_id = NULL, *email = NULL, *name = NULL;
    if (create) {
        if (!s_flags_valid (argc, argv, 1, known))
            return 2;
        org_id = s_flag (argc - 1, argv + 1, "--org");
        email = s_flag (argc - 1, argv + 1, "--member");
        name = s_flag (argc - 1, argv + 1, "--name");
        if (!ly_is_uuid (org_id) || !email) {
            fprintf (stderr, "layersctl: token create needs --org ORG_ID (a UUID) and --member EMAIL\n");
            return 2;
        }
        if (!s_name_valid ("--name", name, 0))
            return 2;
    }
    else
    if (!ly_is_uuid (argv [1])) {
        fprintf (stderr, "layersctl: token revoke needs a token id (a UUID)\n");
        return 2;
    }
    PGconn *conn = s_admin_connect (false);
    if (!conn)
        return 1;
    int rc = 1;
    char *member_id = NULL, *token = NULL, *token_id = NULL, *revoked_at = NULL;
    if (!s_run (conn, "BEGIN", 0, NULL))
        goto cleanup;
    if (create) {
        const char *tenant [] = { org_id };
        const char *who [] = { org_id, email };
        if (!s_run (conn, "SELECT set_config ('layers.org_id', $1, true)", 1, tenant)
        ||  !(member_id = s_exec (conn, "SELECT member_id FROM members"
                                        " WHERE org_id = $1 AND lower (email COLLATE \"und-x-icu\")"
                                        "       = lower ($2::text COLLATE \"und-x-icu\")", 2, who)))
            goto rollback;
        if (!member_id [0]) {
            char *org = s_exec (conn, "SELECT org_id FROM organizations WHERE org_id = $1", 1, tenant);
            if (org && !org [0])
                fprintf (stderr, "layersctl: there is no organization %s\n", org_id);
            else
            if (org)
                fprintf (stderr, "layersctl: the organization has no member \"%s\"\n", email);
            free (org);
            goto rollback;
        }
        if (!(token = s_token_insert (conn, member_id, name? name: "", &token_id))
        ||  !s_run (conn, "COMMIT", 0, NULL))
            goto rollback;
        s_print_json (json_pack ("{s:s, s:s, s:s, s:s}", "token", token, "token_id", token_id,
                                 "member_id", member_id, "org_id", org_id));
    }
    else {
        //  Any tenant's token: as the owner role, which bypasses row-level security.
        const char *params [] = { argv [1] };
        if (!s_run (conn, "SET LOCAL ROLE layers_owner", 0, NULL)
        ||  !(revoked_at = s_exec (conn,
                "UPDATE api_tokens SET revoked_at = coalesce (revoked_at, now ())"
                " WHERE token_id = $1"
                " RETURNING to_char (revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                1, params)))
            goto rollback;
        if (!revoked_at [0]) {
            fprintf (stderr, "layersctl: no token \"%s\"\n", argv [1]);
            goto rollback;
        }
        if (!s_run (conn, "COMMIT", 0, NULL))
            goto rollback;
        s_print_json (json_pack ("{s:s, s:s}", "token_id", argv [1], "revoked_at", revoked_at));
    }
    rc = 0;
    goto cleanup;
rollback:
    PQclear (PQexec (conn, "ROLLBACK"));
cleanup:
    if (token) {
        explicit_bzero (token, strlen (token));
        free (token);
    }
    free (member_id);
    free (token_id);
    free (revoked_at);
    PQfinish (conn);
    return rc;
}

static int
s_migrate (int argc, char *argv [])
{
    if (argc > 0 && streq (argv [0], "--list")) {
        for (size_t i = 0; i < ly_migrate_count (); i++)
            printf ("%s\n", ly_migrate_name (i));
        return 0;
    }
    if (argc > 0) {
        fprintf (stderr, "layersctl: migrate takes no argument but --list\n");
        return 2;
    }
    //  The embedded PostgreSQL is layersd's, made with its master key: a key made here
    //  (a mistyped LAYERS_DATA_DIR) could only leave a stray directory behind
    PGconn *conn = s_admin_connect (ly_config.database_url != NULL);
    if (!conn)
        return 1;
    char err [2048];
    int applied = 0;
    int rc = 0;
    if (ly_migrate_run (conn, &applied, err, sizeof err)
    ||  ly_migrate_key_check (conn, err, sizeof err)
    ||  ly_db_setup_roles (conn, err, sizeof err)) {
        fprintf (stderr, "layersctl: %s\n", err);
        rc = 1;
    }
    else
        printf ("{\"applied\": %d}\n", applied);
    PQfinish (conn);
    return rc;
}

//  Runs one partner API request as an owner of the project's organization, with the
//  API's own validation, tenancy and sealing. Prints the answer; 0 for 2xx, 2 when the
//  API refuses what the arguments say (400, 422: bad arguments), else 1.
static int
s_api_as_owner (const char *project_id, const char *method, const char *path,
                const char *query, const char *body)
{
    if (!ly_is_uuid (project_id)) {
        fprintf (stderr, "layersctl: PROJECT_ID must be a project's id (a UUID), not \"%s\"\n",
                 project_id);
        return 2;
    }
    PGconn *conn = s_admin_connect (false);
    if (!conn)
        return 1;
    //  The admin sees every tenant: find the project's organization and an owner.
    const char *params [] = { project_id };
    PGresult *res = PQexecParams (conn,
        "SELECT p.org_id, m.member_id FROM projects p"
        "  JOIN members m ON m.org_id = p.org_id AND m.role = 'owner'"
        " WHERE p.project_id::text = $1 ORDER BY m.created_at LIMIT 1",
        1, NULL, params, NULL, NULL, 0);
    int rc = 1;
    if (PQresultStatus (res) != PGRES_TUPLES_OK)
        fprintf (stderr, "layersctl: %s", PQresultErrorMessage (res));
    else
    if (PQntuples (res) != 1)
        fprintf (stderr, "layersctl: no project %s\n", project_id);
    else {
        char org_id [40], member_id [40];
        snprintf (org_id, sizeof org_id, "%s", PQgetvalue (res, 0, 0));
        snprintf (member_id, sizeof member_id, "%s", PQgetvalue (res, 0, 1));
        ly_apiv1_t *api = ly_apiv1_new ();
        ly_api_request_t request = {
            .method = method, .path = path, .query = query? query: "",
            .content_type = "application/json", .request_id = "layersctl",
            .body = body? body: "", .body_len = body? strlen (body): 0,
        };
        ly_api_response_t response = { 0 };
        ly_apiv1_handle_as (api, org_id, member_id, &request, &response);
        FILE *out = response.status >= 200 && response.status < 300? stdout: stderr;
        if (out == stderr)
            fprintf (stderr, "layersctl: %u ", response.status);
        fprintf (out, "%.*s\n", (int) response.body_len, response.body? response.body: "");
        rc = out == stdout? 0: response.status == 400 || response.status == 422? 2: 1;
        ly_api_response_reset (&response);
        ly_apiv1_destroy (&api);
    }
    PQclear (res);
    PQfinish (conn);
    return rc;
}

//  Standard input, whole (at most 1 MiB), as a new string; NULL when it cannot be read
//  or is longer. One buffer, so that the caller can wipe all of it.
#define S_STDIN_MAX (1024 * 1024)
static char *
s_read_stdin (void)
{
    char *text = (char *) malloc (S_STDIN_MAX + 1);
    size_t size = text? fread (text, 1, S_STDIN_MAX + 1, stdin): 0;
    if (text && (ferror (stdin) || size > S_STDIN_MAX)) {
        explicit_bzero (text, size);
        free (text);
        return NULL;
    }
    if (text)
        text [size] = 0;
    return text;
}

static int
s_project_command (const char *command, int argc, char *argv [])
{
    if (argc < 1) {
        fprintf (stderr, "layersctl: %s needs a PROJECT_ID; see layersctl --help\n", command);
        return 2;
    }
    const char *project = argv [0];
    char path [256];
    if (streq (command, "layer")) {
        //  layer set PROJECT_ID LAYER JSON  |  layer get PROJECT_ID LAYER
        const char *action = argv [0];
        if ((streq (action, "set") && argc == 4) || (streq (action, "get") && argc == 3)) {
            project = argv [1];
            if (!streq (argv [2], "meta") && !streq (argv [2], "tiktok")
            &&  !streq (argv [2], "apple_search_ads")) {
                fprintf (stderr, "layersctl: LAYER is meta, tiktok or apple_search_ads, not "
                         "\"%s\"\n", argv [2]);
                return 2;
            }
            snprintf (path, sizeof path, "/v1/projects/%s/layers/%s", project, argv [2]);
            if (streq (action, "get"))
                return s_api_as_owner (project, "GET", path, NULL, NULL);
            char *body = streq (argv [3], "-")? s_read_stdin (): strdup (argv [3]);
            if (!body) {
                fprintf (stderr, "layersctl: could not read the layer's JSON from standard input"
                         " (at most 1 MiB)\n");
                return 2;
            }
            int rc = s_api_as_owner (project, "PUT", path, NULL, body);
            explicit_bzero (body, strlen (body));   //  it may hold a secret
            free (body);
            return rc;
        }
        fprintf (stderr, "layersctl: usage: layer set PROJECT_ID LAYER JSON|- | layer get PROJECT_ID LAYER\n");
        return 2;
    }
    const char *destination = NULL;
    char *paging = strdup ("");             //  deadletters: "&limit=N&cursor=C", as given
    json_t *ids = json_array ();
    for (int i = 1; i < argc; i++) {
        if (streq (argv [i], "--destination") && i + 1 < argc)
            destination = argv [++i];
        else
        if ((streq (argv [i], "--limit") || streq (argv [i], "--cursor")) && i + 1 < argc
        &&  streq (command, "deadletters")) {
            //  Checked by the API as any client's query; only encoded here
            char *more = zsys_sprintf ("%s&%s=", paging, argv [i] + 2);
            for (const char *c = argv [++i]; *c; c++) {
                char *longer = isalnum ((unsigned char) *c) || strchr ("-_.~", *c)
                             ? zsys_sprintf ("%s%c", more, *c)
                             : zsys_sprintf ("%s%%%02X", more, (unsigned char) *c);
                zstr_free (&more);
                more = longer;
            }
            zstr_free (&paging);
            paging = more;
        }
        else
        if (streq (argv [i], "--delivery") && i + 1 < argc && streq (command, "replay")) {
            char *end;
            errno = 0;
            long long id = strtoll (argv [++i], &end, 10);
            if (errno || end == argv [i] || *end || id <= 0) {
                fprintf (stderr, "layersctl: --delivery takes a delivery id (a positive integer),"
                         " not \"%s\"\n", argv [i]);
                json_decref (ids);
                zstr_free (&paging);
                return 2;
            }
            json_array_append_new (ids, json_integer (id));
        }
        else {
            fprintf (stderr, "layersctl: bad argument \"%s\" for %s; see layersctl --help\n", argv [i], command);
            json_decref (ids);
            zstr_free (&paging);
            return 2;
        }
    }
    int rc;
    if (streq (command, "deadletters")) {
        snprintf (path, sizeof path, "/v1/projects/%s/deliveries", project);
        char *query = destination? zsys_sprintf ("status=dead&destination=%s%s", destination, paging)
                                 : zsys_sprintf ("status=dead%s", paging);
        rc = s_api_as_owner (project, "GET", path, query, NULL);
        free (query);
    }
    else {
        snprintf (path, sizeof path, "/v1/projects/%s/deliveries/replay", project);
        json_t *body = json_object ();
        if (destination)
            json_object_set_new (body, "destination", json_string (destination));
        if (json_array_size (ids))
            json_object_set (body, "delivery_ids", ids);
        char *text = json_dumps (body, JSON_COMPACT);
        json_decref (body);
        rc = s_api_as_owner (project, "POST", path, NULL, text);
        free (text);
    }
    json_decref (ids);
    zstr_free (&paging);
    return rc;
}

int
main (int argc, char *argv [])
{
    if (argc < 2 || streq (argv [1], "--help") || streq (argv [1], "-h")
    ||  streq (argv [1], "help")) {
        s_usage (argc < 2? stderr: stdout);
        return argc < 2? 2: 0;
    }
    if (streq (argv [1], "--version")) {
        printf ("layersctl %s\n", LY_VERSION);
        return 0;
    }
    for (int i = 2; i < argc; i++)
        if (streq (argv [i], "--help") || streq (argv [i], "-h")) {
            s_usage (stdout);               //  every command is in it, with its arguments
            return 0;
        }
    char err [1024];
    zsys_handler_set (NULL);
    if (ly_config_load (&ly_config, err, sizeof err)) {
        fprintf (stderr, "layersctl: %s\n", err);
        return 2;
    }
    //  A command prints its answer; the server's info lines (the api's request line)
    //  are for LAYERS_LOG_LEVEL=info or debug, asked for
    ly_log_init (getenv ("LAYERS_LOG_LEVEL")? ly_config.log_level: LY_LOG_WARNING, "layersctl");
    int rc;
    if (streq (argv [1], "migrate"))
        rc = s_migrate (argc - 2, argv + 2);
    else
    if (streq (argv [1], "org"))
        rc = s_org (argc - 2, argv + 2);
    else
    if (streq (argv [1], "token"))
        rc = s_token (argc - 2, argv + 2);
    else
    if (streq (argv [1], "layer") || streq (argv [1], "replay") || streq (argv [1], "deadletters"))
        rc = s_project_command (argv [1], argc - 2, argv + 2);
    else {
        fprintf (stderr, "layersctl: unknown command \"%s\"; see layersctl --help\n", argv [1]);
        rc = 2;
    }
    ly_db_init (NULL, NULL);
    ly_master_key_set (NULL);
    ly_config_free (&ly_config);
    return rc;
}
