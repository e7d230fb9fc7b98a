/*  ly_reporter.c: the metrics reporter (see ly_reporter.h). A report that does not fit
    the gateway's small queue is dropped: the next one carries the same totals. */
#include "ly_reporter.h"
#include "ly_actor.h"
#include "ly_log.h"
#include "ly_metrics.h"
#include "ly_topology.h"

#define S_ACTOR "reporter"
#define S_INTERVAL_MSEC 2000

void
ly_reporter_actor (zsock_t *pipe, void *args)
{
    const char *actor = (const char *) args;
    zsock_t *push = ly_topology_open (actor, "metrics");
    ly_actor_ready (pipe, push != NULL);
    if (!push)
        return;
    char instance [64];
    snprintf (instance, sizeof instance, "%s.%d", actor, (int) getpid ());
    zpoller_t *poller = zpoller_new (pipe, NULL);
    int64_t next = ly_mono_msec ();
    bool verbose = false;
    while (true) {
        int64_t wait = next - ly_mono_msec ();
        void *which = zpoller_wait (poller, wait > 0? (int) wait: 0);
        if (which == pipe) {
            if (ly_actor_pipe (pipe, S_ACTOR, &verbose, NULL, NULL))
                break;
            continue;
        }
        if (zpoller_terminated (poller))
            break;
        if (ly_mono_msec () < next)
            continue;
        next = ly_mono_msec () + S_INTERVAL_MSEC;
        void *snapshot;
        size_t size;
        if (ly_metrics_snapshot (&snapshot, &size))
            continue;
        ly_msg_t *report = ly_msg_new (LY_MSG_METRICS_REPORT);
        ly_msg_set_str (report, LY_METRICS_REPORT_INSTANCE, instance);
        ly_msg_set_obj (report, LY_METRICS_REPORT_SNAPSHOT, snapshot, size);
        free (snapshot);
        ly_send (push, NULL, NULL, &report);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&push);
}
