/*  ly_httpc.c: the zmq_poll-friendly libcurl multi client (see ly_httpc.h). curl tells
    us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to call it back
    (CURLMOPT_TIMERFUNCTION); we keep both in a small table and a deadline, and drive
    curl with curl_multi_socket_action. Connections stay in the multi handle's cache
    between transfers, so consecutive requests to a network reuse them. */
#include "ly_httpc.h"
#include <openssl/crypto.h>

typedef struct _s_transfer_t s_transfer_t;

//  One request in flight
struct _s_transfer_t {
    CURL *easy;                 /* owned */
    struct curl_slist *headers; /* owned, wiped when done */
    char *body;                 /* request body, owned, wiped when done */
    size_t len;                 /* body bytes */
    char *answer;               /* response body, owned */
    size_t answer_len;          /* bytes in answer */
    size_t answer_cap;          /* allocated bytes in answer */
    ly_httpc_done_fn *done;     /* completion callback */
    void *arg;                  /* for done, borrowed */
    char error [CURL_ERROR_SIZE];   /* libcurl's reason */
    s_transfer_t *prev, *next;  /* the client's list */
};

typedef struct {
    curl_socket_t fd;           /* the socket */
    int what;                   /* CURL_POLL_IN, _OUT or _INOUT */
} s_socket_t;

struct _ly_httpc_t {
    CURLM *multi;               /* owned */
    long timeout_ms;            /* per transfer */
    s_socket_t *sockets;        /* what curl asked us to watch, owned */
    size_t sockets_count;       /* used entries */
    size_t sockets_cap;         /* allocated entries */
    int64_t timer_at;           /* monotonic msec when curl wants a call, -1: none */
    s_transfer_t *transfers;    /* in flight, owned */
    size_t active;              /* transfers in the list */
};

static int
s_socket_cb (CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    ly_httpc_t *self = (ly_httpc_t *) userp;
    size_t index = 0;
    while (index < self->sockets_count && self->sockets [index].fd != fd)
        index++;
    if (what == CURL_POLL_REMOVE) {
        if (index < self->sockets_count)
            self->sockets [index] = self->sockets [--self->sockets_count];
        return 0;
    }
    if (index == self->sockets_count) {
        if (self->sockets_count == self->sockets_cap) {
            size_t cap = self->sockets_cap? self->sockets_cap * 2: 16;
            s_socket_t *grown = (s_socket_t *) realloc (self->sockets, cap * sizeof (s_socket_t));
            if (!grown)
                return -1;
            self->sockets = grown;
            self->sockets_cap = cap;
        }
        self->sockets_count++;
    }
    self->sockets [index].fd = fd;
    self->sockets [index].what = what;
    return 0;
}

static int
s_timer_cb (CURLM *multi, long timeout_ms, void *userp)
{
    ly_httpc_t *self = (ly_httpc_t *) userp;
    self->timer_at = timeout_ms < 0? -1: ly_mono_msec () + timeout_ms;
    return 0;
}

static size_t
s_write_cb (char *data, size_t size, size_t count, void *userp)
{
    s_transfer_t *transfer = (s_transfer_t *) userp;
    size_t bytes = size * count;
    size_t room = LY_HTTPC_BODY_MAX - transfer->answer_len;
    size_t take = bytes < room? bytes: room;
    if (transfer->answer_len + take + 1 > transfer->answer_cap) {
        size_t cap = transfer->answer_cap? transfer->answer_cap: 1024;
        while (cap < transfer->answer_len + take + 1)
            cap *= 2;
        char *grown = (char *) realloc (transfer->answer, cap);
        if (!grown)
            return 0;               //  curl fails the transfer: CURLE_WRITE_ERROR
        transfer->answer = grown;
        transfer->answer_cap = cap;
    }
    memcpy (transfer->answer + transfer->answer_len, data, take);
    transfer->answer_len += take;
    transfer->answer [transfer->answer_len] = 0;
    return bytes;                   //  the rest of a long answer is dropped
}

ly_httpc_t *
ly_httpc_new (long timeout_ms)
{
    ly_httpc_t *self = (ly_httpc_t *) calloc (1, sizeof (ly_httpc_t));
    if (!self)
        return NULL;
    self->multi = curl_multi_init ();
    if (!self->multi) {
        free (self);
        return NULL;
    }
    self->timeout_ms = timeout_ms;
    self->timer_at = -1;
    curl_multi_setopt (self->multi, CURLMOPT_SOCKETFUNCTION, s_socket_cb);
    curl_multi_setopt (self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt (self->multi, CURLMOPT_TIMERFUNCTION, s_timer_cb);
    curl_multi_setopt (self->multi, CURLMOPT_TIMERDATA, self);
    curl_multi_setopt (self->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
    //  As many connections to one host as requests a relay has in flight: a request
    //  queued in curl for a connection counts its time against its timeout, and one
    //  that starts late is cut off after the network took it (then sent twice). Over
    //  HTTP/2 they share connections anyway.
    curl_multi_setopt (self->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) LY_HTTPC_MAX_TRANSFERS);
    curl_multi_setopt (self->multi, CURLMOPT_MAXCONNECTS, (long) LY_HTTPC_MAX_TRANSFERS);
    return self;
}

//  Unlinks and frees a transfer, returning its easy handle to nobody: it is cleaned up.
static void
s_transfer_destroy (ly_httpc_t *self, s_transfer_t *transfer)
{
    if (transfer->prev)
        transfer->prev->next = transfer->next;
    else
        self->transfers = transfer->next;
    if (transfer->next)
        transfer->next->prev = transfer->prev;
    self->active--;
    curl_multi_remove_handle (self->multi, transfer->easy);
    curl_easy_cleanup (transfer->easy);
    for (struct curl_slist *header = transfer->headers; header; header = header->next)
        OPENSSL_cleanse (header->data, strlen (header->data));
    curl_slist_free_all (transfer->headers);
    if (transfer->body)
        OPENSSL_cleanse (transfer->body, transfer->len);
    free (transfer->body);
    free (transfer->answer);
    free (transfer);
}

void
ly_httpc_destroy (ly_httpc_t **self_p)
{
    ly_httpc_t *self = *self_p;
    if (self) {
        while (self->transfers)
            s_transfer_destroy (self, self->transfers);
        curl_multi_cleanup (self->multi);
        free (self->sockets);
        free (self);
        *self_p = NULL;
    }
}

int
ly_httpc_post (ly_httpc_t *self, const char *url, struct curl_slist **headers_p,
               char **body_p, size_t len, ly_httpc_done_fn *done, void *arg)
{
    s_transfer_t *transfer = (s_transfer_t *) calloc (1, sizeof (s_transfer_t));
    CURL *easy = transfer? curl_easy_init (): NULL;
    struct curl_slist *headers = *headers_p;
    char *body = *body_p;
    *headers_p = NULL;
    *body_p = NULL;
    struct curl_slist *with_expect = curl_slist_append (headers, "Expect:");
    if (with_expect)
        headers = with_expect;
    if (!easy || !with_expect) {
        if (easy)
            curl_easy_cleanup (easy);
        free (transfer);
        for (struct curl_slist *header = headers; header; header = header->next)
            OPENSSL_cleanse (header->data, strlen (header->data));
        curl_slist_free_all (headers);
        if (body)
            OPENSSL_cleanse (body, len);
        free (body);
        return -1;
    }
    transfer->easy = easy;
    transfer->headers = headers;
    transfer->body = body;
    transfer->len = len;
    transfer->done = done;
    transfer->arg = arg;
    curl_easy_setopt (easy, CURLOPT_URL, url);
    curl_easy_setopt (easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt (easy, CURLOPT_POST, 1L);
    curl_easy_setopt (easy, CURLOPT_POSTFIELDS, body? body: "");
    curl_easy_setopt (easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
    curl_easy_setopt (easy, CURLOPT_HTTPHEADER, transfer->headers);
    curl_easy_setopt (easy, CURLOPT_TIMEOUT_MS, self->timeout_ms);
    curl_easy_setopt (easy, CURLOPT_CONNECTTIMEOUT_MS,
                      self->timeout_ms < 10000? self->timeout_ms: 10000L);
    curl_easy_setopt (easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
    //  Waiting for a connection that may multiplex is worth it over TLS, where ALPN
    //  tells at the handshake; over plain http:// curl knows only from the first answer,
    //  and every other request to the host waited for it, its timeout running
    curl_easy_setopt (easy, CURLOPT_PIPEWAIT, strncasecmp (url, "https://", 8) == 0? 1L: 0L);
    curl_easy_setopt (easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt (easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt (easy, CURLOPT_USERAGENT, "layers-relay/" LY_VERSION);
    curl_easy_setopt (easy, CURLOPT_WRITEFUNCTION, s_write_cb);
    curl_easy_setopt (easy, CURLOPT_WRITEDATA, transfer);
    curl_easy_setopt (easy, CURLOPT_ERRORBUFFER, transfer->error);
    curl_easy_setopt (easy, CURLOPT_PRIVATE, transfer);
    transfer->next = self->transfers;
    if (self->transfers)
        self->transfers->prev = transfer;
    self->transfers = transfer;
    self->active++;
    if (curl_multi_add_handle (self->multi, easy) != CURLM_OK) {
        s_transfer_destroy (self, transfer);
        return -1;
    }
    return 0;
}

size_t
ly_httpc_active (ly_httpc_t *self)
{
    return self->active;
}

size_t
ly_httpc_pollitems (ly_httpc_t *self, zmq_pollitem_t *items, size_t max)
{
    size_t count = 0;
    for (size_t i = 0; i < self->sockets_count && count < max; i++) {
        zmq_pollitem_t *item = &items [count++];
        memset (item, 0, sizeof *item);
        item->fd = self->sockets [i].fd;
        int what = self->sockets [i].what;
        item->events = (short) (((what & CURL_POLL_IN)? ZMQ_POLLIN: 0)
                              | ((what & CURL_POLL_OUT)? ZMQ_POLLOUT: 0));
    }
    return count;
}

long
ly_httpc_timeout (ly_httpc_t *self)
{
    if (self->timer_at < 0)
        return -1;
    int64_t left = self->timer_at - ly_mono_msec ();
    return left > 0? (long) left: 0;
}

//  Reads one header of a completed transfer; NULL when absent.
static const char *
s_header (CURL *easy, const char *name)
{
    struct curl_header *header = NULL;
    if (curl_easy_header (easy, name, 0, CURLH_HEADER, -1, &header) != CURLHE_OK || !header)
        return NULL;
    return header->value;
}

//  Seconds until Meta lets a throttled caller in again, from its
//  X-Business-Use-Case-Usage header ({"<business id>": [{"type": ...,
//  "estimated_time_to_regain_access": <minutes>}, ...]}): the longest wait it names;
//  -1 when the header is absent, malformed or names none. Meta sends no Retry-After.
static long
s_regain_seconds (const char *usage)
{
    json_t *json = usage? json_loads (usage, 0, NULL): NULL;
    long minutes = -1;
    const char *business;
    json_t *entries;
    json_object_foreach (json, business, entries) {
        size_t i;
        json_t *entry;
        json_array_foreach (entries, i, entry) {
            json_t *regain = json_object_get (entry, "estimated_time_to_regain_access");
            if (json_is_integer (regain) && json_integer_value (regain) > minutes
            &&  json_integer_value (regain) < 24 * 60)
                minutes = (long) json_integer_value (regain);
        }
    }
    json_decref (json);
    return minutes > 0? minutes * 60: -1;
}

static void
s_complete (ly_httpc_t *self, s_transfer_t *transfer, CURLcode result)
{
    ly_httpc_response_t response = { 0 };
    char error [CURL_ERROR_SIZE];
    snprintf (error, sizeof error, "%s", result == CURLE_OK? ""
              : *transfer->error? transfer->error: curl_easy_strerror (result));
    response.result = result;
    response.error = error;
    curl_easy_getinfo (transfer->easy, CURLINFO_RESPONSE_CODE, &response.status);
    curl_easy_getinfo (transfer->easy, CURLINFO_TOTAL_TIME, &response.seconds);
    response.body = transfer->answer? transfer->answer: "";
    response.body_len = transfer->answer_len;
    response.retry_after = -1;
    char trace_id [128] = "";
    if (response.status) {
        const char *retry_after = s_header (transfer->easy, "Retry-After");
        if (retry_after) {
            char *end = NULL;
            long seconds = strtol (retry_after, &end, 10);
            if (end != retry_after && *end == 0 && seconds >= 0)
                response.retry_after = seconds;     //  LONG_MAX when out of range
            else {
                time_t when = curl_getdate (retry_after, NULL);
                if (when > 0)
                    response.retry_after = when > time (NULL)? (long) (when - time (NULL)): 0;
            }
            if (response.retry_after > LY_HTTPC_RETRY_AFTER_MAX)
                response.retry_after = LY_HTTPC_RETRY_AFTER_MAX;
        }
        if (response.retry_after < 0)
            response.retry_after = s_regain_seconds (s_header (transfer->easy,
                                                               "x-business-use-case-usage"));
        const char *trace = s_header (transfer->easy, "x-fb-trace-id");
        if (trace) {
            snprintf (trace_id, sizeof trace_id, "%s", trace);
            response.trace_id = trace_id;
        }
    }
    ly_httpc_done_fn *done = transfer->done;
    void *arg = transfer->arg;
    //  The callback may start transfers; this one's resources are no longer needed
    //  except the answer and the copies above, which it borrows until it returns.
    char *answer = transfer->answer;
    transfer->answer = NULL;
    s_transfer_destroy (self, transfer);
    done (arg, &response);
    free (answer);
}

void
ly_httpc_process (ly_httpc_t *self, zmq_pollitem_t *items, size_t count)
{
    int running = 0;
    for (size_t i = 0; i < count; i++) {
        if (!items [i].revents)
            continue;
        int flags = ((items [i].revents & ZMQ_POLLIN)? CURL_CSELECT_IN: 0)
                  | ((items [i].revents & ZMQ_POLLOUT)? CURL_CSELECT_OUT: 0)
                  | ((items [i].revents & ZMQ_POLLERR)? CURL_CSELECT_ERR: 0);
        curl_multi_socket_action (self->multi, items [i].fd, flags, &running);
    }
    if (self->timer_at >= 0 && ly_mono_msec () >= self->timer_at) {
        self->timer_at = -1;
        curl_multi_socket_action (self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    CURLMsg *msg;
    int left = 0;
    while ((msg = curl_multi_info_read (self->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        s_transfer_t *transfer = NULL;
        curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **) &transfer);
        if (transfer)
            s_complete (self, transfer, msg->data.result);
    }
}
