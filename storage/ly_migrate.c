/*  ly_migrate.c: applies the SQL migrations compiled into the binary (storage/migrations,
    embedded by cmake/embed_migrations.cmake) over an admin session.

    Design. Files are NNNN_name.sql; NNNN is the version. The order of work is chosen so
    that nothing is used before it exists, and so that every object ends up owned by
    layers_owner:
      1. Bootstrap, one transaction as the connecting admin: 0000_bootstrap.sql creates the
         cluster-wide roles (CREATE ROLE needs the admin's CREATEROLE, a BYPASSRLS role a
         superuser, so it cannot run as layers_owner), re-asserts their attributes and sets
         the database and schema privileges. It is idempotent, runs on every call and is
         never recorded. Then, as layers_owner, CREATE TABLE IF NOT EXISTS
         schema_migrations (version, name, applied_at).
      2. The recorded versions are read once. Every other file not recorded gets its own
         transaction: the advisory lock, a re-check under the lock (another migrate may
         have applied it meanwhile), SET LOCAL ROLE layers_owner, search_path = public,
         the whole file in one PQexec (the simple query protocol runs many statements),
         its row in schema_migrations, COMMIT. A failure rolls that file back and reports
         the file, the line of the failing statement and PostgreSQL's message; the files
         before it stay applied.
    Concurrent callers are serialized with pg_advisory_xact_lock, released with each
    transaction, so a killed caller never leaves it held. A migration file must not contain
    transaction control (BEGIN / COMMIT) nor statements that refuse a transaction block
    (CREATE INDEX CONCURRENTLY, VACUUM). Versions recorded in the database but unknown to
    this binary (a newer schema) are left alone; a recorded version whose name differs from
    this binary's file is an error. */

#include "ly_prelude.h"
#include "ly_migrate.h"
#include "ly_db.h"
#include "ly_crypto.h"
#include "ly_config.h"
#include "ly_pg.h"
#include "ly_migrations_data.h"

#define MIGRATE_LOCK_KEY "1280920905"   /* 0x4C594D49, "LYMI": the lock of schema migrations */

//  Writes "what: PostgreSQL's message" into err; when sql (the text of a migration file)
//  is given and the server reported a position, "what at line N: ...". res may be NULL
//  (out of memory, lost connection): libpq's connection message is used then.
static void
s_set_error (char *err, size_t errlen, PGconn *conn, const PGresult *res,
             const char *what, const char *sql)
{
    const char *message = res? PQresultErrorMessage (res): NULL;
    if (!message || !*message)
        message = PQerrorMessage (conn);
    if (!message || !*message)
        message = "unknown error";

    char where [32] = "";
    const char *position = res? PQresultErrorField (res, PG_DIAG_STATEMENT_POSITION): NULL;
    if (sql && position) {
        //  The position counts characters from 1; the files are UTF-8.
        long target = strtol (position, NULL, 10);
        long chars = 0;
        int line = 1;
        for (const char *p = sql; *p && chars < target - 1; p++) {
            if (((unsigned char) *p & 0xC0) != 0x80)
                chars++;
            if (*p == '\n')
                line++;
        }
        snprintf (where, sizeof where, " at line %d", line);
    }
    char line [1024];
    snprintf (err, errlen, "%s%s: %s", what, where, ly_db_message (line, sizeof line, message));
}

//  Runs sql (one or more statements, no parameters) and checks it succeeded. what names
//  the work for the error message; is_file says sql is a migration file, so that errors
//  point at its line. 0 / -1.
static int
s_exec (PGconn *conn, const char *sql, const char *what, bool is_file,
        char *err, size_t errlen)
{
    PGresult *res = PQexec (conn, sql);
    ExecStatusType status = res? PQresultStatus (res): PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        s_set_error (err, errlen, conn, res, what, is_file? sql: NULL);
        PQclear (res);
        return -1;
    }
    PQclear (res);
    return 0;
}

//  Ends a failed transaction; the caller already holds the error to report.
static void
s_rollback (PGconn *conn)
{
    if (PQtransactionStatus (conn) != PQTRANS_IDLE)
        PQclear (PQexec (conn, "ROLLBACK"));
}

//  The version of a file name "NNNN_name.sql", or -1 when it does not start with digits.
static long
s_version (const char *name)
{
    if (!isdigit ((unsigned char) name [0]))
        return -1;
    char *end;
    errno = 0;
    long version = strtol (name, &end, 10);
    if (errno || *end != '_' || version < 0 || version > INT_MAX)
        return -1;
    return version;
}

//  Checks the embedded list: every name versioned, versions strictly increasing, the
//  bootstrap (version 0) first. 0 / -1.
static int
s_check_files (char *err, size_t errlen)
{
    long previous = -1;
    for (size_t index = 0; index < ly_migration_files_count; index++) {
        const char *name = ly_migration_files [index].name;
        long version = s_version (name);
        if (version < 0 || version <= previous) {
            snprintf (err, errlen, "migration file \"%s\" is out of order or unversioned",
                      name);
            return -1;
        }
        previous = version;
    }
    if (ly_migration_files_count == 0 || s_version (ly_migration_files [0].name) != 0) {
        snprintf (err, errlen, "the first migration must be the bootstrap, 0000_*.sql");
        return -1;
    }
    return 0;
}

//  Step 1: roles and privileges as the admin, then schema_migrations as layers_owner.
static int
s_bootstrap (PGconn *conn, char *err, size_t errlen)
{
    const ly_migration_file_t *bootstrap = &ly_migration_files [0];
    char what [128];
    snprintf (what, sizeof what, "migration \"%s\"", bootstrap->name);

    if (s_exec (conn, "BEGIN", "could not begin the bootstrap", false, err, errlen)
    ||  s_exec (conn, "SET LOCAL client_min_messages = warning;"
                      "SET LOCAL search_path = public;"
                      "SELECT pg_advisory_xact_lock (" MIGRATE_LOCK_KEY ")",
                "could not lock schema migrations", false, err, errlen)
    ||  s_exec (conn, bootstrap->sql, what, true, err, errlen)
    ||  s_exec (conn, "SET LOCAL ROLE layers_owner;"
                      "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
                      "    version integer PRIMARY KEY,"
                      "    name text NOT NULL,"
                      "    applied_at timestamptz NOT NULL DEFAULT now ())",
                "could not create schema_migrations", false, err, errlen)
    ||  s_exec (conn, "COMMIT", "could not commit the bootstrap", false, err, errlen)) {
        s_rollback (conn);
        return -1;
    }
    return 0;
}

//  The recorded version of each embedded file, into recorded [] (true when applied).
//  Fails when a recorded version carries another name than this binary's file. 0 / -1.
static int
s_read_recorded (PGconn *conn, bool *recorded, char *err, size_t errlen)
{
    PGresult *res = PQexec (conn, "SELECT version, name FROM public.schema_migrations");
    if (!res || PQresultStatus (res) != PGRES_TUPLES_OK) {
        s_set_error (err, errlen, conn, res, "could not read schema_migrations", NULL);
        PQclear (res);
        return -1;
    }
    int rc = 0;
    for (int row = 0; row < PQntuples (res) && rc == 0; row++) {
        long version = strtol (PQgetvalue (res, row, 0), NULL, 10);
        const char *name = PQgetvalue (res, row, 1);
        for (size_t index = 1; index < ly_migration_files_count; index++) {
            if (s_version (ly_migration_files [index].name) != version)
                continue;
            if (strcmp (ly_migration_files [index].name, name) != 0) {
                snprintf (err, errlen, "schema_migrations records version %ld as \"%s\", "
                          "but this binary's file is \"%s\"", version, name,
                          ly_migration_files [index].name);
                rc = -1;
            }
            recorded [index] = true;
        }
    }
    PQclear (res);
    return rc;
}

//  Step 2 for one file: applies it unless another caller did meanwhile. Sets *done when
//  this call applied it. 0 / -1.
static int
s_apply (PGconn *conn, const ly_migration_file_t *file, bool *done, char *err, size_t errlen)
{
    char version [16];
    snprintf (version, sizeof version, "%ld", s_version (file->name));
    char what [128];
    snprintf (what, sizeof what, "migration \"%s\"", file->name);
    *done = false;

    if (s_exec (conn, "BEGIN", what, false, err, errlen)
    ||  s_exec (conn, "SET LOCAL client_min_messages = warning;"
                      "SELECT pg_advisory_xact_lock (" MIGRATE_LOCK_KEY ")",
                "could not lock schema migrations", false, err, errlen)) {
        s_rollback (conn);
        return -1;
    }
    const char *params [2] = { version, file->name };
    PGresult *res = PQexecParams (conn,
        "SELECT 1 FROM public.schema_migrations WHERE version = $1::integer",
        1, NULL, params, NULL, NULL, 0);
    if (!res || PQresultStatus (res) != PGRES_TUPLES_OK) {
        s_set_error (err, errlen, conn, res, "could not read schema_migrations", NULL);
        PQclear (res);
        s_rollback (conn);
        return -1;
    }
    bool applied_meanwhile = PQntuples (res) > 0;
    PQclear (res);
    if (applied_meanwhile) {
        s_rollback (conn);
        return 0;
    }
    if (s_exec (conn, "SET LOCAL ROLE layers_owner; SET LOCAL search_path = public",
                "could not become layers_owner", false, err, errlen)
    ||  s_exec (conn, file->sql, what, true, err, errlen)) {
        s_rollback (conn);
        return -1;
    }
    res = PQexecParams (conn,
        "INSERT INTO public.schema_migrations (version, name) VALUES ($1::integer, $2)",
        2, NULL, params, NULL, NULL, 0);
    if (!res || PQresultStatus (res) != PGRES_COMMAND_OK) {
        s_set_error (err, errlen, conn, res, "could not record the migration", NULL);
        PQclear (res);
        s_rollback (conn);
        return -1;
    }
    PQclear (res);
    if (s_exec (conn, "COMMIT", what, false, err, errlen)) {
        s_rollback (conn);
        return -1;
    }
    *done = true;
    return 0;
}

int
ly_migrate_run (PGconn *conn, int *applied, char *err, size_t errlen)
{
    char no_err [1];
    if (!err || errlen == 0) {
        err = no_err;
        errlen = sizeof no_err;
    }
    err [0] = '\0';
    if (applied)
        *applied = 0;
    if (!conn || PQstatus (conn) != CONNECTION_OK) {
        snprintf (err, errlen, "no database connection");
        return -1;
    }
    if (PQtransactionStatus (conn) != PQTRANS_IDLE) {
        snprintf (err, errlen, "cannot migrate inside a transaction");
        return -1;
    }
    if (PQserverVersion (conn) < 150000) {
        snprintf (err, errlen, "PostgreSQL 15 or later is required, the server is %d.%d",
                  PQserverVersion (conn) / 10000, PQserverVersion (conn) % 10000);
        return -1;
    }
    if (s_check_files (err, errlen) || s_bootstrap (conn, err, errlen))
        return -1;

    bool *recorded = calloc (ly_migration_files_count, sizeof (bool));
    if (!recorded) {
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    int rc = s_read_recorded (conn, recorded, err, errlen);
    for (size_t index = 1; index < ly_migration_files_count && rc == 0; index++) {
        if (recorded [index])
            continue;
        bool done;
        rc = s_apply (conn, &ly_migration_files [index], &done, err, errlen);
        if (rc == 0 && done && applied)
            (*applied)++;
    }
    free (recorded);
    return rc;
}

size_t
ly_migrate_count (void)
{
    return ly_migration_files_count;
}

const char *
ly_migrate_name (size_t index)
{
    return index < ly_migration_files_count? ly_migration_files [index].name: NULL;
}

//  Before the first check is written (a database set up before migration 0010): the
//  key must open a layer secret sealed already, if there is one, or a wrong key run
//  first would be recorded and the right one refused. 0, or -1 (reason in err).
static int
s_key_opens_a_secret (PGconn *conn, const uint8_t key [32], char *err, size_t errlen)
{
    PGresult *res = PQexec (conn,
        "SELECT 'project_layers/' || project_id || '/' || layer, secret_ciphertext"
        "  FROM project_layers WHERE secret_ciphertext IS NOT NULL"
        "   AND NOT EXISTS (SELECT FROM master_key_check) LIMIT 1");
    int rc = 0;
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        s_set_error (err, errlen, conn, res, "could not check the master key", NULL);
        rc = -1;
    }
    else
    if (PQntuples (res) == 1) {
        size_t sealed_len = 0;
        unsigned char *sealed = PQunescapeBytea ((const unsigned char *) PQgetvalue (res, 0, 1),
                                                 &sealed_len);
        char *plain = NULL;
        size_t plain_len = 0;
        if (!sealed || ly_secret_open (key, PQgetvalue (res, 0, 0), sealed, sealed_len,
                                       &plain, &plain_len)) {
            snprintf (err, errlen, "the master key in \"%s\" does not open the secrets the "
                      "database holds: restore the key file they were sealed with "
                      "(LAYERS_MASTER_KEY_FILE)", ly_config.master_key_file);
            rc = -2;
        }
        if (plain)
            explicit_bzero (plain, plain_len);
        free (plain);
        PQfreemem (sealed);
    }
    PQclear (res);
    return rc;
}

int
ly_migrate_key_check (PGconn *conn, char *err, size_t errlen)
{
    const uint8_t *key = ly_master_key ();
    if (!key) {
        snprintf (err, errlen, "no master key");
        return -1;
    }
    static const char label [] = "layers master key check";
    char check [65];
    ly_hmac_sha256_hex (key, label, strlen (label), check);
    const char *params [] = { check };
    if (s_exec (conn, "BEGIN; SET LOCAL ROLE layers_owner; SET LOCAL search_path = public",
                "could not check the master key", false, err, errlen))
        return -1;
    PGresult *res = PQexec (conn, "SELECT to_regclass ('public.master_key_check') IS NOT NULL");
    bool table = PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1
              && streq (PQgetvalue (res, 0, 0), "t");
    PQclear (res);
    //  Without the table (migration 0010 not applied yet) there is nothing to compare
    int rc = table? s_key_opens_a_secret (conn, key, err, errlen): 0;
    if (table && rc == 0) {
        PQclear (PQexecParams (conn, "INSERT INTO master_key_check (check_hex) VALUES ($1)"
                               " ON CONFLICT (only_row) DO NOTHING", 1, NULL, params, NULL, NULL, 0));
        res = PQexec (conn, "SELECT check_hex FROM master_key_check");
        if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
            s_set_error (err, errlen, conn, res, "could not check the master key", NULL);
            rc = -1;
        }
        else
        if (!streq (PQgetvalue (res, 0, 0), check)) {
            char *root = ly_config.database_url? NULL: ly_pg_root_for (ly_config.data_dir);
            snprintf (err, errlen, "the master key in \"%s\" is not the one the database "
                      "(%s%s%s) was set up with, so its sealed secrets would not open: restore "
                      "that database's key file (LAYERS_MASTER_KEY_FILE), or, to start afresh, "
                      "remove the database too", ly_config.master_key_file,
                      root? "\"": "", root? root: "LAYERS_DATABASE_URL", root? "\"": "");
            zstr_free (&root);
            rc = -2;
        }
        PQclear (res);
    }
    if (rc == 0 && s_exec (conn, "COMMIT", "could not check the master key", false, err, errlen))
        rc = -1;
    s_rollback (conn);
    return rc;
}
