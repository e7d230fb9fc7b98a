/*  ly_apiv1.h: the partner API (/v1) handlers, hosted by the api actor. The gateway
    forwards each /v1 request as API_REQUEST (the bearer token only as its SHA-256) and
    returns API_RESPONSE as it is. Every request runs in one transaction of a layers_api
    session whose tenant comes from the authenticated token
    (set_config('layers.org_id', ..., true)), never from the request. */
#ifndef LY_APIV1_H
#define LY_APIV1_H

#include "ly_prelude.h"

typedef struct {
    const char *method;         /* "GET", "POST", "PUT", "PATCH", "DELETE", ... */
    const char *path;           /* "/v1/projects/..." without the query */
    const char *query;          /* raw query string without '?', "" when none */
    const char *token_sha256;   /* hex SHA-256 of the bearer token, NULL when none sent */
    const char *idempotency_key;/* Idempotency-Key header, NULL when absent */
    const char *if_match;       /* If-Match header, NULL when absent */
    const char *content_type;   /* Content-Type header, NULL when absent */
    const char *request_id;     /* the gateway's request id, for log lines */
    const char *body;           /* request body, not NUL-terminated */
    size_t body_len;
} ly_api_request_t;

typedef struct {
    unsigned status;            /* HTTP status */
    char *body;                 /* response body, owned (malloc); NULL: empty */
    size_t body_len;            /* bytes in body (binary media allowed) */
    char *content_type;         /* owned; NULL: application/json */
    char *etag;                 /* owned; NULL: no ETag header */
    char *location;             /* owned; NULL: no Location header */
    char *allow;                /* owned; NULL: no Allow header (set with 405) */
    bool keys_changed;          /* the request changed what an SDK key stands for (a key
                                   revoked, its project changed or gone): gateways must
                                   look keys up again */
} ly_api_response_t;

typedef struct _ly_apiv1_t ly_apiv1_t;

/*  Caller owns. Sessions are opened on demand (layers_api, layers_auth). */
ly_apiv1_t *ly_apiv1_new (void);
void ly_apiv1_destroy (ly_apiv1_t **self_p);
/*  Serves one request; always fills resp (status and a JSON error body
    {"error": {"code", "message"}} on failure). Never asserts on request content. */
void ly_apiv1_handle (ly_apiv1_t *self, const ly_api_request_t *req, ly_api_response_t *resp);
/*  The same for a trusted local caller (layersctl): no token; the request runs as that
    member of that organization, with the same tenancy, permissions and validation. */
void ly_apiv1_handle_as (ly_apiv1_t *self, const char *org_id, const char *member_id,
                         const ly_api_request_t *req, ly_api_response_t *resp);
/*  Stops self for good, from any thread: the statement its request runs now is
    cancelled, and every later one fails at once (503). For a quick shutdown. */
void ly_apiv1_cancel (ly_apiv1_t *self);
/*  Frees what resp holds and zeroes it. */
void ly_api_response_reset (ly_api_response_t *resp);

/*  Whether text is an email address as the API takes a member's: one '@' with text on
    both sides, no white space or control character (ASCII or not), valid UTF-8. */
bool ly_apiv1_is_email (const char *text);

#endif
