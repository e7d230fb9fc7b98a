/*  ly_log_test.c: self-test of ly_log: what the scrubber masks and what it must leave
    alone, the line format on stderr, truncation, and whole lines under concurrency. */
#include "ly_prelude.h"
#include "ly_log.h"

static int s_failures = 0;

static void
s_check_scrub (const char *input, const char *expected)
{
    char out [1024];
    bool whole = ly_log_scrub (input, out, sizeof out);
    if (!whole || strcmp (out, expected) != 0) {
        fprintf (stdout, "scrub:    \"%s\"\n  gave:   \"%s\"\n  wanted: \"%s\"\n", input, out, expected);
        s_failures++;
    }
}

//  Inputs that must come back unchanged
static void
s_check_kept (const char *input)
{
    s_check_scrub (input, input);
}

static void
s_test_scrub (void)
{
    //  Email addresses
    s_check_scrub ("could not send to jane.doe@example.com", "could not send to [email]");
    s_check_scrub ("to \"Jane.Doe+tag@mail.example.co.uk\": refused", "to \"[email]\": refused");
    s_check_scrub ("user 'bob@example.org' unknown", "user '[email]' unknown");
    s_check_scrub ("o'brien@example.ie", "[email]");
    s_check_scrub ("a@b.co and c_d@e-f.io.", "[email] and [email].");
    s_check_scrub ("<x@example.com>,<y@example.com>", "<[email]>,<[email]>");
    s_check_scrub ("+15551234567@sms.example.net", "[email]");
    s_check_scrub ("josé@exämple.de", "[email]");
    s_check_scrub ("postgres://layers@db.example.com:5432/layers", "postgres://[email]:5432/layers");
    s_check_kept ("user@localhost");
    s_check_kept ("a @ b.com");
    s_check_kept ("version@1.2.3");
    s_check_kept ("@example.com");
    s_check_scrub ("x@10.1.2.3", "x@[ip]");

    //  IPv4
    s_check_scrub ("client 203.0.113.7 refused", "client [ip] refused");
    s_check_scrub ("from 10.0.0.1:54321", "from [ip]:54321");
    s_check_scrub ("addr=192.168.1.254,", "addr=[ip],");
    s_check_scrub ("forwarded 198.51.100.1, 198.51.100.2.", "forwarded [ip], [ip].");
    s_check_scrub ("host:8.8.8.8", "host:[ip]");
    s_check_kept ("listening on 127.0.0.1:8080");
    s_check_kept ("listening on 0.0.0.0:8080");
    s_check_kept ("openssl 1.2.3.4.5");
    s_check_kept ("v1.2.3.4");
    s_check_kept ("256.1.1.1 is no address");
    s_check_kept ("1.2.3");

    //  IPv6
    s_check_scrub ("client 2001:db8::1 refused", "client [ip] refused");
    s_check_scrub ("client [2001:db8:85a3::8a2e:370:7334]:443", "client [[ip]]:443");
    s_check_scrub ("from ::ffff:203.0.113.9", "from [ip]");
    s_check_scrub ("from ::FFFF:203.0.113.9.", "from [ip].");
    s_check_scrub ("peer fe80::1%eth0", "peer [ip]%eth0");
    s_check_scrub ("2001:0db8:0000:0000:0000:ff00:0042:8329", "[ip]");
    s_check_scrub ("host:2001:db8::7", "host:[ip]");
    s_check_scrub ("ip=2001:db8::", "ip=[ip]");
    s_check_scrub ("a 2001:db8::1: refused", "a [ip]: refused");
    s_check_kept ("listening on [::1]:8080");
    s_check_kept ("bound to [::]:8080");
    s_check_kept ("::ffff:127.0.0.1");
    s_check_kept ("at 08:12:03 and 23:59:59.999");
    s_check_kept ("mac 00:1a:2b:3c:4d:5e");
    s_check_kept ("key :: value");
    s_check_kept ("ly::actor");

    //  Phone numbers
    s_check_scrub ("sms to +15551234567 failed", "sms to [phone] failed");
    s_check_scrub ("sms to +1 (555) 123-4567.", "sms to [phone].");
    s_check_scrub ("call +44 20 7946 0958, then", "call [phone], then");
    s_check_scrub ("+33 6 12 34 56 78", "[phone]");
    s_check_scrub ("+49-30-1234567", "[phone]");
    s_check_scrub ("phone=5551234567", "phone=[phone]");
    s_check_scrub ("tel:0612345678", "tel:[phone]");
    s_check_scrub ("call 555-123-4567 now", "call [phone] now");
    s_check_scrub ("call 555.123.4567", "call [phone]");
    s_check_scrub ("call (555) 123-4567", "call [phone]");
    s_check_scrub ("uk 07700-900123", "uk [phone]");
    s_check_scrub ("123456789", "[phone]");
    s_check_kept ("+123456 is short");
    s_check_kept ("+12345678901234567890 is no phone");

    //  Things that must not be masked
    s_check_kept ("2026-11-27 08:12:03.123 UTC [12345] INFO: gateway: started");
    s_check_kept ("pid 4194304 exited with status 1");
    s_check_kept ("GET /healthz 200 in 12.5ms");
    s_check_kept ("stored 1234 events in 0.25 s");
    s_check_kept ("flushed 12345678 events");
    s_check_kept ("libzmq 4.3.4, czmq 4.2.1");
    s_check_kept ("event 0b6d4a3e-1234-5678-9abc-123456789012 stored");
    s_check_kept ("event 12345678-1234-5678-1234-567812345678 stored");
    s_check_kept ("sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    s_check_kept ("took 1234567890.5 ms");
    s_check_kept ("1,234,567,890 rows");
    s_check_kept ("at 1732694523123456 usec");
    s_check_kept ("queue 2026-11-27 of 1+2 items, 50% done");
    s_check_kept ("could not open \"/var/layers/spool/000123.log\": No such file or directory");
    s_check_kept ("");
    s_check_kept ("a@");
    s_check_kept ("+");
    s_check_kept ("(");
    s_check_kept ("::");
}

static void
s_test_scrub_bounds (void)
{
    char out [10];
    //  A token that does not fit is left out whole, never half written
    assert (!ly_log_scrub ("mail jane@example.com", out, sizeof out));
    assert (streq (out, "mail "));
    assert (ly_log_scrub ("short", out, sizeof out));
    assert (streq (out, "short"));
    assert (ly_log_scrub ("abcdefghi", out, sizeof out));
    assert (!ly_log_scrub ("abcdefghij", out, sizeof out));
    assert (streq (out, "abcdefghi"));
    //  A UTF-8 character is not split
    assert (!ly_log_scrub ("01234567\xc3\xa9", out, sizeof out));
    assert (streq (out, "01234567"));
    assert (!ly_log_scrub ("0123456\xe2\x82\xac", out, sizeof out));
    assert (streq (out, "0123456"));
    assert (ly_log_scrub ("012345\xe2\x82\xac", out, sizeof out));
    assert (!ly_log_scrub ("abc", out, 0));
    assert (!ly_log_scrub ("abc", out, 1));
    assert (streq (out, ""));

    //  Long inputs: linear enough, and every address found
    size_t size = 1 << 20;
    char *big = malloc (size);
    char *scrubbed = malloc (size * 2);
    assert (big && scrubbed);
    size_t pos = 0;
    while (pos + 64 < size)
        pos += sprintf (big + pos, "u%zu@example.com 10.1.%zu.%zu a:b:c ", pos, (pos / 7) % 256, pos % 256);
    big [pos] = 0;
    assert (ly_log_scrub (big, scrubbed, size * 2));
    assert (!strchr (scrubbed, '@'));
    assert (!strstr (scrubbed, "10.1."));
    memset (big, 'a', size - 1);
    big [size - 1] = 0;
    big [size / 2] = '@';
    assert (ly_log_scrub (big, scrubbed, size * 2));
    assert (strlen (scrubbed) == size - 1);
    free (big);
    free (scrubbed);
}

static void
s_test_levels (void)
{
    ly_log_level_t level;
    assert (ly_log_level_parse ("debug", &level) == 0 && level == LY_LOG_DEBUG);
    assert (ly_log_level_parse ("INFO", &level) == 0 && level == LY_LOG_INFO);
    assert (ly_log_level_parse ("Warning", &level) == 0 && level == LY_LOG_WARNING);
    assert (ly_log_level_parse ("error", &level) == 0 && level == LY_LOG_ERROR);
    assert (ly_log_level_parse ("warn", &level) == -1);
    assert (ly_log_level_parse ("", &level) == -1);
    assert (ly_log_level_parse (NULL, &level) == -1);
    assert (ly_log_level_parse ("fatal", &level) == -1);
}

//  Captures stderr into a pipe; a reader thread drains it so writers never block.
typedef struct {
    int fd;             /* read end */
    char *data;         /* what was read, NUL-terminated */
    size_t size;
} s_capture_t;

static void *
s_capture_reader (void *args)
{
    s_capture_t *capture = (s_capture_t *) args;
    size_t cap = 1 << 16;
    capture->data = malloc (cap);
    assert (capture->data);
    while (true) {
        if (capture->size + 4097 > cap) {
            cap *= 2;
            capture->data = realloc (capture->data, cap);
            assert (capture->data);
        }
        ssize_t rc = read (capture->fd, capture->data + capture->size, cap - capture->size - 1);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            break;
        capture->size += rc;
    }
    capture->data [capture->size] = 0;
    return NULL;
}

static int s_saved_stderr = -1;
static pthread_t s_reader;
static s_capture_t s_capture;

static void
s_capture_start (void)
{
    int fds [2];
    assert (pipe (fds) == 0);
    s_saved_stderr = dup (STDERR_FILENO);
    assert (s_saved_stderr >= 0);
    assert (dup2 (fds [1], STDERR_FILENO) == STDERR_FILENO);
    close (fds [1]);
    memset (&s_capture, 0, sizeof s_capture);
    s_capture.fd = fds [0];
    assert (pthread_create (&s_reader, NULL, s_capture_reader, &s_capture) == 0);
}

//  Returns what was written to stderr since s_capture_start; caller owns
static char *
s_capture_stop (void)
{
    assert (dup2 (s_saved_stderr, STDERR_FILENO) == STDERR_FILENO);
    close (s_saved_stderr);
    pthread_join (s_reader, NULL);
    close (s_capture.fd);
    return s_capture.data;
}

//  Checks "YYYY-MM-DD HH:MM:SS.mmm UTC [pid] LEVEL: actor: " and returns the message
static const char *
s_check_prefix (const char *line, const char *level, const char *actor)
{
    int year, month, day, hour, minute, second, msec, pid, used = 0;
    int fields = sscanf (line, "%4d-%2d-%2d %2d:%2d:%2d.%3d UTC [%d] %n",
                         &year, &month, &day, &hour, &minute, &second, &msec, &pid, &used);
    assert (fields == 8 && used > 0);
    assert (year >= 2024 && month >= 1 && month <= 12 && day >= 1 && day <= 31);
    assert (line [4] == '-' && line [10] == ' ' && line [19] == '.' && line [23] == ' ');
    assert (pid == getpid ());
    line += used;
    assert (strncmp (line, level, strlen (level)) == 0);
    line += strlen (level);
    assert (strncmp (line, ": ", 2) == 0);
    line += 2;
    assert (strncmp (line, actor, strlen (actor)) == 0);
    line += strlen (actor);
    assert (strncmp (line, ": ", 2) == 0);
    return line + 2;
}

#define S_THREADS   4
#define S_LINES     500

static void *
s_logger (void *args)
{
    int id = (int) (intptr_t) args;
    char filler [300];
    memset (filler, 'x', sizeof filler - 1);
    filler [sizeof filler - 1] = 0;
    for (int line = 0; line < S_LINES; line++)
        ly_info ("worker", "thread %d line %d from jane%d@example.com %s end", id, line, id, filler);
    return NULL;
}

static void
s_test_lines (void)
{
    ly_log_init (LY_LOG_INFO, "layersd");
    assert (ly_log_level () == LY_LOG_INFO);

    s_capture_start ();
    errno = ENOENT;
    ly_error ("gateway", "could not send receipt to jane.doe@example.com from 203.0.113.7");
    assert (errno == ENOENT);
    ly_debug ("gateway", "hidden at info level");
    ly_warning (NULL, "no actor\nsecond\tline");
    char *long_message = malloc (10000);
    assert (long_message);
    memset (long_message, 'y', 9999);
    long_message [9999] = 0;
    //  The line is cut near here: scrubbing after the cut would leave "bob@exa"
    memcpy (long_message + 4020, " bob@example.com ", 17);
    ly_info ("store", "%s", long_message);
    free (long_message);
    ly_log_init (LY_LOG_DEBUG, NULL);
    ly_debug ("store", "visible at debug level, pid %d", 4321);
    ly_log_init (LY_LOG_ERROR, NULL);
    ly_warning ("store", "hidden at error level");
    char *output = s_capture_stop ();

    char *save = NULL;
    char *line = strtok_r (output, "\n", &save);
    assert (line);
    const char *message = s_check_prefix (line, "ERROR", "gateway");
    assert (streq (message, "could not send receipt to [email] from [ip]"));
    assert (!strstr (line, "jane"));
    assert (!strstr (line, "203.0"));

    line = strtok_r (NULL, "\n", &save);
    assert (line);
    message = s_check_prefix (line, "WARNING", "layersd");
    assert (streq (message, "no actor second line"));

    line = strtok_r (NULL, "\n", &save);
    assert (line);
    assert (strlen (line) + 1 <= PIPE_BUF);
    message = s_check_prefix (line, "INFO", "store");
    assert (strspn (message, "y") > 3900);
    assert (!strstr (line, "bob"));
    assert (!strstr (line, "@example"));
    size_t length = strlen (line);
    assert (length > 12 && streq (line + length - 12, " [truncated]"));

    line = strtok_r (NULL, "\n", &save);
    assert (line);
    message = s_check_prefix (line, "DEBUG", "store");
    assert (streq (message, "visible at debug level, pid 4321"));
    assert (!strtok_r (NULL, "\n", &save));
    free (output);

    //  Concurrent writers: every line arrives whole
    ly_log_init (LY_LOG_INFO, NULL);
    s_capture_start ();
    pthread_t threads [S_THREADS];
    for (intptr_t id = 0; id < S_THREADS; id++)
        assert (pthread_create (&threads [id], NULL, s_logger, (void *) id) == 0);
    for (int id = 0; id < S_THREADS; id++)
        pthread_join (threads [id], NULL);
    output = s_capture_stop ();
    int lines = 0;
    int seen [S_THREADS] = { 0 };
    for (line = strtok_r (output, "\n", &save); line; line = strtok_r (NULL, "\n", &save)) {
        message = s_check_prefix (line, "INFO", "worker");
        int id, number, used = 0;
        assert (sscanf (message, "thread %d line %d from [email] %n", &id, &number, &used) == 2);
        assert (used > 0 && id >= 0 && id < S_THREADS);
        assert (number == seen [id]++);
        assert (strspn (message + used, "x") == 299);
        assert (streq (message + used + 299, " end"));
        lines++;
    }
    assert (lines == S_THREADS * S_LINES);
    assert (!strstr (output, "jane"));
    free (output);
}

//  The server's own addresses are kept, however written; others still masked
static void
s_test_own_addresses (void)
{
    s_check_scrub ("listening on http://192.0.2.2:18101", "listening on http://[ip]:18101");
    ly_log_own_address ("192.0.2.2");
    ly_log_own_address ("fd00::2");
    ly_log_own_address ("db.example.com");      //  not an address: ignored
    s_check_kept ("listening on http://192.0.2.2:18101");
    s_check_kept ("cannot listen on LAYERS_HTTP_ADDR \"[fd00::2]:18101\"");
    s_check_kept ("::ffff:192.0.2.2 and fd00:0::2");
    s_check_scrub ("client 192.0.2.3, fd00::3", "client [ip], [ip]");
}

int
main (void)
{
    s_test_scrub ();
    s_test_scrub_bounds ();
    s_test_levels ();
    s_test_lines ();
    s_test_own_addresses ();
    if (s_failures) {
        printf ("ly_log_test: %d scrub cases failed\n", s_failures);
        return 1;
    }
    printf ("ly_log_test: OK\n");
    return 0;
}
