/*  ly_reporter.h: sends this process' metrics to the gateway every 2 s
    (METRICS_REPORT), so /metrics shows every actor process. args: the actor name
    (const char *, borrowed for the actor's life). */
#ifndef LY_REPORTER_H
#define LY_REPORTER_H

#include "ly_prelude.h"

void ly_reporter_actor (zsock_t *pipe, void *args);

#endif
