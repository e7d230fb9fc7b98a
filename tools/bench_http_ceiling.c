/*  bench_http_ceiling.c: the "bare HTTP" ceiling for tools/bench.
    A libmicrohttpd server with the gateway's set-up (internal polling thread, epoll, a
    pool of 2 threads, the same connection limit and timeout) that reads every request
    body completely into a buffer, as the gateway does, then answers every request with
    202 and a small JSON body. It does nothing else: no parsing, no actors, no database.
    What the gateway reaches next to it is the cost of everything Layers does per request.

    Build: cc -O2 -o bench_http_ceiling tools/bench_http_ceiling.c \
               $(pkg-config --cflags --libs libmicrohttpd) -lpthread
    Run:   bench_http_ceiling PORT      (listens on 127.0.0.1:PORT until SIGINT/SIGTERM) */
#include <microhttpd.h>
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_THREADS 2                 /* as gateway/ly_gateway.c */
#define S_CONNECTION_LIMIT 1000
#define S_MAX_BODY (1024 * 1024)

static const char s_accepted [] = "{\"accepted\":1,\"duplicates\":0,\"rejected\":[]}";

typedef struct {
    char *body;
    size_t size;
    int too_large;
} s_upload_t;

static enum MHD_Result
s_handler (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size,
           void **req_cls)
{
    (void) cls; (void) url; (void) method; (void) version;
    s_upload_t *upload = (s_upload_t *) *req_cls;
    if (!upload) {
        upload = (s_upload_t *) calloc (1, sizeof (s_upload_t));
        if (!upload)
            return MHD_NO;
        *req_cls = upload;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (upload->size + *upload_data_size > S_MAX_BODY)
            upload->too_large = 1;
        else {
            char *bigger = (char *) realloc (upload->body, upload->size + *upload_data_size);
            if (!bigger)
                return MHD_NO;
            memcpy (bigger + upload->size, upload_data, *upload_data_size);
            upload->body = bigger;
            upload->size += *upload_data_size;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    //  The whole body is in: answer.
    unsigned status = upload->too_large? MHD_HTTP_CONTENT_TOO_LARGE: MHD_HTTP_ACCEPTED;
    struct MHD_Response *response = MHD_create_response_from_buffer (
        sizeof s_accepted - 1, (void *) s_accepted, MHD_RESPMEM_PERSISTENT);
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result rc = MHD_queue_response (conn, status, response);
    MHD_destroy_response (response);
    return rc;
}

static void
s_completed (void *cls, struct MHD_Connection *conn, void **req_cls,
             enum MHD_RequestTerminationCode code)
{
    (void) cls; (void) conn; (void) code;
    s_upload_t *upload = (s_upload_t *) *req_cls;
    if (upload) {
        free (upload->body);
        free (upload);
        *req_cls = NULL;
    }
}

int
main (int argc, char *argv [])
{
    int port = argc > 1? atoi (argv [1]): 0;
    if (port <= 0 || port > 65535) {
        fprintf (stderr, "usage: %s PORT\n", argv [0]);
        return 2;
    }
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    //  Blocked here, so the daemon's threads inherit the mask and sigwait gets them.
    pthread_sigmask (SIG_BLOCK, &signals, NULL);
    signal (SIGPIPE, SIG_IGN);

    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
    address.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    struct MHD_Daemon *daemon = MHD_start_daemon (
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG,
        (uint16_t) port, NULL, NULL, s_handler, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &address,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) S_THREADS,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) S_CONNECTION_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 30,
        MHD_OPTION_NOTIFY_COMPLETED, s_completed, NULL,
        MHD_OPTION_END);
    if (!daemon) {
        fprintf (stderr, "bench_http_ceiling: could not listen on 127.0.0.1:%d: %s\n",
                 port, errno? strerror (errno): "unknown reason");
        return 1;
    }
    printf ("listening on http://127.0.0.1:%d\n", port);
    fflush (stdout);
    int signal_number = 0;
    sigwait (&signals, &signal_number);
    MHD_stop_daemon (daemon);
    return 0;
}
