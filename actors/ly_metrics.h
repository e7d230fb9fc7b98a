/*  ly_metrics.h: a process-wide metrics registry (counters, gauges, latency histograms),
    thread-safe, rendered as Prometheus text exposition format. Metric names follow
    Prometheus conventions (layers_http_requests_total); labels are fixed at creation
    and must never hold personal data. */
#ifndef LY_METRICS_H
#define LY_METRICS_H

#include "ly_prelude.h"

typedef struct _ly_metric_t ly_metric_t;

/*  Returns the metric with this name and label set, creating it on first use; the
    registry owns it (never destroyed before ly_metrics_shutdown). labels is NULL or a
    Prometheus label list without braces, e.g. "route=\"/healthz\",code=\"200\"". */
ly_metric_t *ly_counter (const char *name, const char *help, const char *labels);
ly_metric_t *ly_gauge (const char *name, const char *help, const char *labels);
/*  Latency histogram in seconds with fixed buckets from 0.5 ms to 10 s. */
ly_metric_t *ly_histogram (const char *name, const char *help, const char *labels);

void ly_metric_add (ly_metric_t *metric, double value);     /* counter or gauge */
void ly_metric_set (ly_metric_t *metric, double value);     /* gauge */
void ly_metric_observe (ly_metric_t *metric, double value); /* histogram, seconds */
double ly_metric_value (ly_metric_t *metric);               /* counter/gauge value, histogram count */

/*  Renders every metric as Prometheus text (# HELP, # TYPE, samples); caller owns. */
char *ly_metrics_render (void);
/*  Packs every metric into one msgpack value (for another process' registry); caller
    frees *data_p. 0 / -1. */
int ly_metrics_snapshot (void **data_p, size_t *size_p);
/*  Keeps another process' snapshot; ly_metrics_render shows its series with the label
    instance="<instance>" until a newer one replaces it, or for 15 s after the last.
    The snapshot is outside input: malformed parts are skipped, never asserted on. */
void ly_metrics_import (const char *instance, const void *data, size_t size);

/*  Frees the registry; for clean exits and tests. */
void ly_metrics_shutdown (void);

#endif
