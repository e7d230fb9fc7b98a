/*  layersctl: Layers administration from the command line. Talks to PostgreSQL with
    the admin URL (LAYERS_DATABASE_URL, or the embedded cluster of a running layersd
    under LAYERS_DATA_DIR). */
#include "ly_prelude.h"
#include "ly_config.h"
#include "ly_crypto.h"
#include "ly_db.h"
#include "ly_log.h"
#include "ly_migrate.h"
#include "ly_pg.h"

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
"  help             show this help\n"
"\n"
"The database is LAYERS_DATABASE_URL (an admin account: a superuser, or an owner with\n"
"CREATEROLE); when unset, the embedded PostgreSQL of a running layersd under\n"
"LAYERS_DATA_DIR (./var). Role passwords derive from the master key\n"
"(LAYERS_MASTER_KEY_FILE, default $LAYERS_DATA_DIR/master.key; created when missing).\n");
}

static PGconn *
s_admin_connect (void)
{
    char err [1024];
    uint8_t key [32];
    zsys_dir_create ("%s", ly_config.data_dir);
    if (ly_master_key_load (ly_config.master_key_file, true, key, err, sizeof err)) {
        fprintf (stderr, "layersctl: %s\n", err);
        return NULL;
    }
    char *url = ly_config.database_url? strdup (ly_config.database_url)
                                      : ly_pg_url_for (ly_config.data_dir);
    ly_db_init (url, key);
    memset (key, 0, sizeof key);
    free (url);
    PGconn *conn = ly_db_connect (LY_DB_ADMIN, err, sizeof err);
    if (!conn)
        fprintf (stderr, "layersctl: %s%s\n", err, ly_config.database_url? ""
                 : " (is layersd running with this LAYERS_DATA_DIR? or set LAYERS_DATABASE_URL)");
    return conn;
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
    PGconn *conn = s_admin_connect ();
    if (!conn)
        return 1;
    char err [2048];
    int applied = 0;
    int rc = 0;
    if (ly_migrate_run (conn, &applied, err, sizeof err)
    ||  ly_db_setup_roles (conn, err, sizeof err)) {
        fprintf (stderr, "layersctl: %s\n", err);
        rc = 1;
    }
    else
        printf ("{\"applied\": %d}\n", applied);
    PQfinish (conn);
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
    char err [1024];
    zsys_handler_set (NULL);
    if (ly_config_load (&ly_config, err, sizeof err)) {
        fprintf (stderr, "layersctl: %s\n", err);
        return 2;
    }
    ly_log_init (ly_config.log_level, "layersctl");
    int rc;
    if (streq (argv [1], "migrate"))
        rc = s_migrate (argc - 2, argv + 2);
    else {
        fprintf (stderr, "layersctl: unknown command \"%s\"; see layersctl --help\n", argv [1]);
        rc = 2;
    }
    ly_db_init (NULL, NULL);
    ly_config_free (&ly_config);
    return rc;
}
