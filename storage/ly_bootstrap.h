/*  ly_bootstrap.h: the demo workspace made on first start, so a new user can send an
    event and call the API at once. */
#ifndef LY_BOOTSTRAP_H
#define LY_BOOTSTRAP_H

#include "ly_prelude.h"

/*  When $LAYERS_DATA_DIR/credentials.json does not exist and the database has no
    organization yet (otherwise it logs that it made none): creates a demo organization,
    its owner member, a project, an SDK key and an API token in one transaction, writes
    {"base_url", "org_id", "project_id", "sdk_key", "api_token"} to credentials.json
    (mode 0600) and prints them with a ready curl line. conn is an admin session.
    0 / -1 (reason in err). */
int ly_bootstrap_demo (PGconn *conn, char *err, size_t errlen);

/*  The base URL clients use for LAYERS_HTTP_ADDR (a wildcard address becomes the
    loopback); caller owns. */
char *ly_bootstrap_base_url (void);

#endif
