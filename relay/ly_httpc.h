/*  ly_httpc.h: an HTTP client for actors that wait on zmq_poll. It wraps one libcurl
    multi handle (keep-alive connection cache, HTTP/2 multiplexing where the server
    offers it) and exposes curl's sockets and next timeout, so the actor's own loop
    polls them beside its pipe and database socket. Completed transfers are handed to a
    callback from ly_httpc_process, never from inside libcurl. */
#ifndef LY_HTTPC_H
#define LY_HTTPC_H

#include "ly_prelude.h"
#include <curl/curl.h>

typedef struct _ly_httpc_t ly_httpc_t;

/*  What a transfer ended with; everything is borrowed for the callback's duration. */
typedef struct {
    CURLcode result;        /* CURLE_OK, or why no answer came (timeout, reset, ...) */
    const char *error;      /* libcurl's reason when result != CURLE_OK, else "" */
    long status;            /* HTTP status, 0 when none arrived */
    const char *body;       /* the answer, NUL-terminated (at most LY_HTTPC_BODY_MAX) */
    size_t body_len;
    long retry_after;       /* seconds from a Retry-After header, -1 when none, at most
                               LY_HTTPC_RETRY_AFTER_MAX */
    const char *trace_id;   /* x-fb-trace-id header, NULL when none */
    double seconds;         /* total time of the transfer */
} ly_httpc_response_t;

#define LY_HTTPC_BODY_MAX (256 * 1024)  /* longer answers are cut here */
#define LY_HTTPC_RETRY_AFTER_MAX 86400  /* a longer Retry-After is taken as this */
#define LY_HTTPC_MAX_TRANSFERS 64       /* requests a relay has in flight at once, and
                                           its connections to one host at most */

typedef void (ly_httpc_done_fn) (void *arg, const ly_httpc_response_t *response);

/*  A client whose transfers each get at most timeout_ms. NULL on failure. Caller
    owns. */
ly_httpc_t *ly_httpc_new (long timeout_ms);
/*  Aborts every transfer without calling back, wipes and frees their bodies. */
void ly_httpc_destroy (ly_httpc_t **self_p);

/*  Starts a POST of body (len bytes) to url with headers. Takes over *body_p and
    *headers_p (nulled): both are wiped with OPENSSL_cleanse and freed when the
    transfer ends, as they may carry credentials. done is called once, from
    ly_httpc_process. 0 / -1 (nothing started; body and headers freed). */
int ly_httpc_post (ly_httpc_t *self, const char *url, struct curl_slist **headers_p,
                   char **body_p, size_t len, ly_httpc_done_fn *done, void *arg);

/*  Transfers started and not completed. */
size_t ly_httpc_active (ly_httpc_t *self);

/*  Appends zmq_poll items for curl's sockets to items (at most max), returns how many
    were added. */
size_t ly_httpc_pollitems (ly_httpc_t *self, zmq_pollitem_t *items, size_t max);
/*  Milliseconds until curl needs ly_httpc_process even without socket activity;
    -1 when it has no timer. */
long ly_httpc_timeout (ly_httpc_t *self);
/*  After zmq_poll: drives the sockets that are ready (items as filled by
    ly_httpc_pollitems, count of them), curl's timer when due, and calls back for
    every completed transfer. */
void ly_httpc_process (ly_httpc_t *self, zmq_pollitem_t *items, size_t count);

#endif
