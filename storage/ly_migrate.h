/*  ly_migrate.h: schema migrations. The ordered SQL files in storage/migrations
    (NNNN_name.sql) are compiled into the binary; each one not yet recorded in
    schema_migrations is applied once, inside its own transaction, as the owner role
    layers_owner. A second run is a no-op. */
#ifndef LY_MIGRATE_H
#define LY_MIGRATE_H

#include "ly_prelude.h"

/*  Applies pending migrations over conn, a session of a role that may create roles and
    SET ROLE layers_owner (a superuser, or the database owner with CREATEROLE).
    Serialized across concurrent callers with an advisory lock. Writes the number of
    migrations applied into *applied (may be NULL). 0 / -1 (reason in err). */
int ly_migrate_run (PGconn *conn, int *applied, char *err, size_t errlen);

/*  Whether the master key set with ly_master_key_set is the one the database was set
    up with (migration 0010 keeps an HMAC under it; the first caller after that migration
    writes it). conn as for ly_migrate_run. 0; -2: another key; -1: a failure (reason in
    err for both). */
int ly_migrate_key_check (PGconn *conn, char *err, size_t errlen);

/*  The number of compiled-in migrations and their names, for `layersctl migrate --list`. */
size_t ly_migrate_count (void);
const char *ly_migrate_name (size_t index);

#endif
