/*  ly_apiv1.c: the partner API handlers (see ly_apiv1.h). */
#include "ly_apiv1.h"

struct _ly_apiv1_t {
    int unused;             /* handlers come with the partner API */
};

ly_apiv1_t *
ly_apiv1_new (void)
{
    return (ly_apiv1_t *) calloc (1, sizeof (ly_apiv1_t));
}

void
ly_apiv1_destroy (ly_apiv1_t **self_p)
{
    free (*self_p);
    *self_p = NULL;
}

void
ly_apiv1_handle (ly_apiv1_t *self, const ly_api_request_t *req, ly_api_response_t *resp)
{
    resp->status = 404;
    resp->body = strdup ("{\"error\":{\"code\":\"not_found\",\"message\":\"no such route\"}}");
    resp->body_len = strlen (resp->body);
}

void
ly_api_response_reset (ly_api_response_t *resp)
{
    free (resp->body);
    free (resp->content_type);
    free (resp->etag);
    free (resp->location);
    memset (resp, 0, sizeof *resp);
}
