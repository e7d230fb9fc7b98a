/*  ly_metrics_test.c: self-test of ly_metrics: counters, gauges and histograms, exact
    sums under concurrent updates, and a Prometheus text rendering checked line by line. */
#include "ly_prelude.h"
#include "ly_metrics.h"

#define S_THREADS       4
#define S_INCREMENTS    100000

static const char *s_les [] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
    "1", "2.5", "5", "10", "+Inf"
};
#define S_LES   (sizeof s_les / sizeof s_les [0])

//  Returns the value of the sample line that starts with "key " in text, or NAN
static double
s_sample (const char *text, const char *key)
{
    size_t len = strlen (key);
    const char *line = text;
    while (line && *line) {
        if (strncmp (line, key, len) == 0 && line [len] == ' ')
            return strtod (line + len + 1, NULL);
        line = strchr (line, '\n');
        if (line)
            line++;
    }
    return NAN;
}

//  Checks the structure of a rendering: every line is a HELP, a TYPE or a sample;
//  each name has one TYPE (and at most one HELP, before it), its samples follow it
//  contiguously, and histogram buckets are cumulative and end with +Inf == _count.
//  Returns the number of samples.
static int
s_check_rendering (const char *text)
{
    char *copy = strdup (text);
    assert (copy);
    assert (*text == 0 || text [strlen (text) - 1] == '\n');
    zhashx_t *types = zhashx_new ();
    char family [128] = "";
    char type [16] = "";
    char help_for [128] = "";
    int samples = 0;
    size_t bucket = 0;
    double last_cumulative = 0;
    char series [256] = "";     /* labels of the histogram series being read */
    char *save = NULL;
    for (char *line = strtok_r (copy, "\n", &save); line; line = strtok_r (NULL, "\n", &save)) {
        char name [128];
        if (strncmp (line, "# HELP ", 7) == 0) {
            assert (sscanf (line + 7, "%127s", name) == 1);
            assert (!zhashx_lookup (types, name));          //  before its TYPE, once
            assert (!streq (help_for, name));
            snprintf (help_for, sizeof help_for, "%s", name);
            continue;
        }
        if (strncmp (line, "# TYPE ", 7) == 0) {
            char kind [16];
            assert (sscanf (line + 7, "%127s %15s", name, kind) == 2);
            assert (!zhashx_lookup (types, name));          //  one TYPE per name
            assert (streq (kind, "counter") || streq (kind, "gauge") || streq (kind, "histogram"));
            zhashx_insert (types, name, (void *) "seen");
            snprintf (family, sizeof family, "%s", name);
            snprintf (type, sizeof type, "%s", kind);
            assert (bucket == 0);                           //  previous histogram complete
            continue;
        }
        assert (line [0] != '#');
        //  name[{labels}] value
        char *space = strrchr (line, ' ');
        assert (space);
        char *end = NULL;
        double value = strtod (space + 1, &end);
        assert (end && *end == 0 && end > space + 1);
        *space = 0;
        char *brace = strchr (line, '{');
        char labels [256] = "";
        if (brace) {
            assert (line [strlen (line) - 1] == '}');
            snprintf (labels, sizeof labels, "%.*s", (int) (strlen (brace) - 2), brace + 1);
            *brace = 0;
        }
        samples++;
        assert (family [0]);
        if (!streq (type, "histogram")) {
            assert (streq (line, family));
            continue;
        }
        //  Histogram: _bucket lines in order, then _sum, then _count
        size_t family_len = strlen (family);
        assert (strncmp (line, family, family_len) == 0);
        const char *suffix = line + family_len;
        if (bucket < S_LES) {
            assert (streq (suffix, "_bucket"));
            char expected [64];
            snprintf (expected, sizeof expected, "le=\"%s\"", s_les [bucket]);
            char *le = strstr (labels, expected);
            assert (le && streq (le, expected));
            *le = 0;
            if (le > labels) {
                assert (le [-1] == ',');
                le [-1] = 0;
            }
            if (bucket == 0)
                snprintf (series, sizeof series, "%s", labels);
            else
                assert (streq (series, labels));
            assert (value >= last_cumulative);              //  cumulative
            last_cumulative = value;
            bucket++;
        }
        else
        if (bucket == S_LES) {
            assert (streq (suffix, "_sum") && streq (series, labels));
            bucket++;
        }
        else {
            assert (streq (suffix, "_count") && streq (series, labels));
            assert (value == last_cumulative);              //  +Inf == _count
            bucket = 0;
            last_cumulative = 0;
        }
    }
    assert (bucket == 0);
    zhashx_destroy (&types);
    free (copy);
    return samples;
}

static void
s_test_basics (void)
{
    char *text = ly_metrics_render ();
    assert (text && streq (text, ""));
    free (text);

    ly_metric_t *requests = ly_counter ("layers_http_requests_total", "HTTP requests answered.",
                                        "route=\"/healthz\",code=\"200\"");
    assert (requests);
    assert (ly_metric_value (requests) == 0);
    ly_metric_add (requests, 1);
    ly_metric_add (requests, 2);
    assert (ly_metric_value (requests) == 3);
    //  Same name and labels: the same metric; other labels: another one
    assert (ly_counter ("layers_http_requests_total", "ignored", "route=\"/healthz\",code=\"200\"") == requests);
    ly_metric_t *missing = ly_counter ("layers_http_requests_total", NULL, "route=\"/l/events\",code=\"404\"");
    assert (missing != requests);
    ly_metric_add (missing, 0.5);

    ly_metric_t *plain = ly_counter ("layers_restarts_total", NULL, NULL);
    assert (plain == ly_counter ("layers_restarts_total", NULL, ""));
    ly_metric_add (plain, 1);

    ly_metric_t *depth = ly_gauge ("layers_queue_depth", "Frames waiting.\nPer \\queue\\.", "queue=\"store\"");
    ly_metric_set (depth, 10);
    ly_metric_add (depth, -2.5);
    assert (ly_metric_value (depth) == 7.5);
    ly_metric_t *weird = ly_gauge ("layers_queue_depth", NULL, "queue=\"a\\\"b\\\\c\\nd\"");
    ly_metric_set (weird, 1e300);
    ly_metric_t *tiny = ly_gauge ("layers:ratio", NULL, NULL);
    ly_metric_set (tiny, 0.1);

    ly_metric_t *latency = ly_histogram ("layers_http_request_seconds", "Request latency.", "route=\"/l/events\"");
    double samples [] = { 0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.2, 1, 3, 10, 11, 100 };
    double sum = 0;
    for (size_t index = 0; index < sizeof samples / sizeof samples [0]; index++) {
        ly_metric_observe (latency, samples [index]);
        sum += samples [index];
    }
    assert (ly_metric_value (latency) == 11);
    ly_metric_t *empty = ly_histogram ("layers_http_request_seconds", NULL, NULL);

    text = ly_metrics_render ();
    assert (text);
    int count = s_check_rendering (text);
    assert (count == 2 + 1 + 2 + 1 + 2 * (S_LES + 2));
    assert (strstr (text,
        "# HELP layers_http_requests_total HTTP requests answered.\n"
        "# TYPE layers_http_requests_total counter\n"
        "layers_http_requests_total{route=\"/healthz\",code=\"200\"} 3\n"
        "layers_http_requests_total{route=\"/l/events\",code=\"404\"} 0.5\n"));
    assert (strstr (text, "# TYPE layers_restarts_total counter\nlayers_restarts_total 1\n"));
    assert (strstr (text, "# HELP layers_queue_depth Frames waiting.\\nPer \\\\queue\\\\.\n"));
    assert (strstr (text, "layers_queue_depth{queue=\"store\"} 7.5\n"));
    assert (strstr (text, "layers_queue_depth{queue=\"a\\\"b\\\\c\\nd\"} 1e+300\n"));
    assert (strstr (text, "layers:ratio 0.1\n"));
    assert (strstr (text, "# TYPE layers_http_request_seconds histogram\n"));

    //  Cumulative bucket counts: le is inclusive
    const char *route = "layers_http_request_seconds_bucket{route=\"/l/events\",le=\"%s\"}";
    double expected [S_LES] = { 2, 3, 3, 5, 5, 5, 5, 5, 6, 6, 7, 7, 8, 9, 11 };
    for (size_t index = 0; index < S_LES; index++) {
        char key [128];
        snprintf (key, sizeof key, route, s_les [index]);
        assert (s_sample (text, key) == expected [index]);
    }
    assert (fabs (s_sample (text, "layers_http_request_seconds_sum{route=\"/l/events\"}") - sum) < 1e-9);
    assert (s_sample (text, "layers_http_request_seconds_count{route=\"/l/events\"}") == 11);
    assert (s_sample (text, "layers_http_request_seconds_bucket{le=\"+Inf\"}") == 0);
    assert (s_sample (text, "layers_http_request_seconds_count") == 0);
    assert (s_sample (text, "layers_http_request_seconds_sum") == 0);
    free (text);
    (void) empty;

    ly_metrics_shutdown ();
    text = ly_metrics_render ();
    assert (text && streq (text, ""));
    free (text);
    //  The registry works again after a shutdown
    ly_metric_add (ly_counter ("layers_restarts_total", NULL, NULL), 4);
    assert (ly_metric_value (ly_counter ("layers_restarts_total", NULL, NULL)) == 4);
    ly_metrics_shutdown ();
}

static void *
s_worker (void *args)
{
    ly_metric_t *shared = (ly_metric_t *) args;
    for (int round = 0; round < S_INCREMENTS; round++) {
        //  Looked up every time, as a careless caller would: still one metric
        ly_metric_t *counter = round % 1000 == 0
            ? ly_counter ("layers_events_total", "Events.", "app=\"demo\""): shared;
        assert (counter == shared);
        ly_metric_add (counter, 1);
        ly_metric_t *gauge = ly_gauge ("layers_inflight", NULL, NULL);
        ly_metric_add (gauge, 1);
        ly_metric_add (gauge, -1);
        ly_metric_observe (ly_histogram ("layers_store_seconds", NULL, NULL), (round % 4) * 0.002);
        if (round % 10000 == 0) {
            char *text = ly_metrics_render ();
            assert (text);
            s_check_rendering (text);
            free (text);
        }
    }
    return NULL;
}

static void
s_test_threads (void)
{
    ly_metric_t *counter = ly_counter ("layers_events_total", "Events.", "app=\"demo\"");
    pthread_t threads [S_THREADS];
    for (int id = 0; id < S_THREADS; id++)
        assert (pthread_create (&threads [id], NULL, s_worker, counter) == 0);
    for (int id = 0; id < S_THREADS; id++)
        pthread_join (threads [id], NULL);

    assert (ly_metric_value (counter) == S_THREADS * S_INCREMENTS);
    assert (ly_metric_value (ly_gauge ("layers_inflight", NULL, NULL)) == 0);
    ly_metric_t *histogram = ly_histogram ("layers_store_seconds", NULL, NULL);
    assert (ly_metric_value (histogram) == S_THREADS * S_INCREMENTS);

    char *text = ly_metrics_render ();
    assert (text);
    s_check_rendering (text);
    assert (s_sample (text, "layers_events_total{app=\"demo\"}") == S_THREADS * S_INCREMENTS);
    //  A quarter each of 0, 0.002, 0.004, 0.006 s
    double quarter = S_THREADS * S_INCREMENTS / 4;
    assert (s_sample (text, "layers_store_seconds_bucket{le=\"0.0005\"}") == quarter);
    assert (s_sample (text, "layers_store_seconds_bucket{le=\"0.0025\"}") == 2 * quarter);
    assert (s_sample (text, "layers_store_seconds_bucket{le=\"0.005\"}") == 3 * quarter);
    assert (s_sample (text, "layers_store_seconds_bucket{le=\"0.01\"}") == 4 * quarter);
    assert (s_sample (text, "layers_store_seconds_count") == 4 * quarter);
    assert (fabs (s_sample (text, "layers_store_seconds_sum") - quarter * 0.012) < 1e-6);
    free (text);
    ly_metrics_shutdown ();
}

//  A programming error must stop the process: run it in a child and expect SIGABRT
static void
s_expect_abort (void (*misuse) (void))
{
    fflush (stdout);
    pid_t pid = fork ();
    assert (pid >= 0);
    if (pid == 0) {
        int null = open ("/dev/null", O_WRONLY);
        dup2 (null, STDERR_FILENO);
        misuse ();
        _exit (0);
    }
    int status;
    assert (waitpid (pid, &status, 0) == pid);
    assert (WIFSIGNALED (status) && WTERMSIG (status) == SIGABRT);
}

static void
s_type_mismatch (void)
{
    ly_counter ("layers_x_total", NULL, NULL);
    ly_gauge ("layers_x_total", NULL, "other=\"labels\"");
}

static void
s_bad_name (void)
{
    ly_counter ("layers-x", NULL, NULL);
}

static void
s_negative_counter (void)
{
    ly_metric_add (ly_counter ("layers_y_total", NULL, NULL), -1);
}

static void
s_set_counter (void)
{
    ly_metric_set (ly_counter ("layers_z_total", NULL, NULL), 1);
}

int
main (void)
{
    s_test_basics ();
    s_test_threads ();
    s_expect_abort (s_type_mismatch);
    s_expect_abort (s_bad_name);
    s_expect_abort (s_negative_counter);
    s_expect_abort (s_set_counter);
    printf ("ly_metrics_test: OK\n");
    return 0;
}
