/*  ly_pg.h: the embedded PostgreSQL used when LAYERS_DATABASE_URL is unset. A private
    cluster under $LAYERS_DATA_DIR/pg, initialized on first start, listening on a unix
    socket only, run as the `postgres` system user when we are root. A cluster left
    running by a killed supervisor is detected by its postmaster.pid and stopped
    before a fresh start. */
#ifndef LY_PG_H
#define LY_PG_H

#include "ly_prelude.h"

typedef struct _ly_pg_t ly_pg_t;

/*  Initializes (first run) and starts the cluster; NULL on failure (reason in err).
    Caller owns; ly_pg_destroy stops the server. */
ly_pg_t *ly_pg_start (const char *data_dir, char *err, size_t errlen);
/*  Starts the server again when it died (its postmaster.pid names a process that is
    gone: killed, or out of memory), with a backoff while it cannot start; PostgreSQL
    recovers from its WAL. A server stopped cleanly (pg_ctl stop: no postmaster.pid)
    is left stopped: someone meant it. For ly_supervisor_set_watch. */
void ly_pg_watch (void *self);
/*  Stops the server (fast shutdown) and frees. */
void ly_pg_destroy (ly_pg_t **self_p);
/*  The admin connection string (a superuser over the private socket); borrowed. */
const char *ly_pg_admin_url (ly_pg_t *self);

/*  The embedded cluster's directory for data_dir: data_dir/pg, or one under
    /var/lib/layers when the postgres user cannot reach data_dir and data_dir/pg holds
    no cluster (ly_pg_start refuses one it cannot reach). Caller owns. */
char *ly_pg_root_for (const char *data_dir);

/*  The admin connection string of the embedded cluster under data_dir, whether or not
    it runs; caller owns. For layersctl. */
char *ly_pg_url_for (const char *data_dir);

#endif
