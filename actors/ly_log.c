/*  ly_log.c: leveled logging to stderr, one scrubbed line per call.
    A line is built whole in a buffer no longer than PIPE_BUF and written with one
    write(2), so lines of concurrent threads and processes never interleave, also on a
    pipe. The scrubber (rules in ly_log.h) is the last line of defence for personal data;
    it runs over the whole message before the message is cut to fit the line, so a cut
    can never leave half an address in the clear. */
#include "ly_prelude.h"
#include "ly_log.h"
#include <sys/socket.h>

#define S_LINE_MAX      PIPE_BUF            /* a line, newline included; atomic on pipes */
#define S_ACTOR_MAX     32                  /* longest actor name printed */
#define S_TRUNCATED     " [truncated]"      /* marks a message cut to fit the line */
#define S_EMAIL         "[email]"
#define S_IP            "[ip]"
#define S_PHONE         "[phone]"
#define S_EMAIL_DOMAIN_MAX  253             /* RFC 1035 */
#define S_PHONE_DIGITS_MIN  9               /* without '+' */
#define S_PHONE_INTL_MIN    7               /* after '+' */
#define S_PHONE_DIGITS_MAX  15              /* E.164 */

static int s_level = LY_LOG_INFO;           /* minimum level, read with atomics */
static char s_process [S_ACTOR_MAX + 1] = "layers";    /* set once by ly_log_init */

static const char *s_level_names [] = { "DEBUG", "INFO", "WARNING", "ERROR" };

#define S_OWN_MAX 8
static uint8_t s_own_addr [S_OWN_MAX][16];  /* the server's own addresses, IPv4 mapped */
static size_t s_own_count;                  /* set at start only */


//  --------------------------------------------------------------------------
//  Character classes. Plain ASCII tests: the locale must not change what we mask.

static bool
s_digit (int c)
{
    return c >= '0' && c <= '9';
}

static bool
s_alpha (int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
s_hex (int c)
{
    return s_digit (c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

//  Part of a word: an address glued to one is not an address (v1.2.3.4, id_123456789)
static bool
s_word (int c)
{
    return s_digit (c) || s_alpha (c) || c == '_';
}

static bool
s_email_local (int c)
{
    return s_word (c) || c >= 0x80 || (c && strchr (".!#$%&'*+-=?^`{|}~", c));
}

static bool
s_email_label (int c)
{
    return s_digit (c) || s_alpha (c) || c == '-' || c >= 0x80;
}


//  --------------------------------------------------------------------------
//  Matchers. Each looks at text [i, limit) and returns the length of what it
//  recognised at i, or 0. A character at or beyond limit may be looked at as the
//  context after a match, never taken into one (limit is where the next email starts).

//  Finds the next email address at or after from: sets [*start, *end), or both to
//  len when there is none. Anchored on '@', so the work is linear in the text.
static void
s_next_email (const unsigned char *s, size_t len, size_t from, size_t *start, size_t *end)
{
    size_t at = from;
    while (at < len) {
        const unsigned char *found = memchr (s + at, '@', len - at);
        if (!found)
            break;
        at = found - s;
        //  Scans back to the previous '@' at most, so the scans never overlap
        size_t local = at;
        while (local > from && s_email_local (s [local - 1]))
            local--;
        while (local < at && (s [local] == '\'' || s [local] == '`' || s [local] == '.'))
            local++;
        bool local_ok = local < at;

        size_t pos = at + 1;
        size_t best = 0;
        int labels = 0;
        while (local_ok && pos < len && pos - at <= S_EMAIL_DOMAIN_MAX) {
            size_t label = pos;
            bool letter = false;
            while (pos < len && s_email_label (s [pos])) {
                letter |= s_alpha (s [pos]) || s [pos] >= 0x80;
                pos++;
            }
            if (pos == label)
                break;
            labels++;
            if (labels >= 2 && pos - label >= 2 && letter)
                best = pos;
            if (pos + 1 < len && s [pos] == '.' && s_email_label (s [pos + 1]))
                pos++;
            else
                break;
        }
        if (best) {
            *start = local;
            *end = best;
            return;
        }
        at++;
    }
    *start = *end = len;
}

//  True for a loopback or unspecified IPv4 address (a.b.c.d, network order)
static bool
s_ipv4_local (const unsigned char *octets)
{
    return octets [0] == 127
        || (octets [0] == 0 && octets [1] == 0 && octets [2] == 0 && octets [3] == 0);
}

//  True for an address given to ly_log_own_address (16 bytes, IPv4 mapped)
static bool
s_own (const uint8_t *addr)
{
    for (size_t i = 0; i < s_own_count; i++)
        if (memcmp (s_own_addr [i], addr, 16) == 0)
            return true;
    return false;
}

void
ly_log_own_address (const char *text)
{
    uint8_t addr [16] = { [10] = 0xFF, [11] = 0xFF };
    if (inet_pton (AF_INET, text, addr + 12) != 1 && inet_pton (AF_INET6, text, addr) != 1)
        return;
    if (s_own_count < S_OWN_MAX && !s_own (addr))
        memcpy (s_own_addr [s_own_count++], addr, 16);
}

//  IPv6: the longest run of hex digits, ':' and '.' from i that inet_pton accepts.
//  Sets *keep when the address is loopback or unspecified.
static size_t
s_match_ipv6 (const unsigned char *s, size_t i, size_t limit, size_t len, bool *keep)
{
    if (!s_hex (s [i]) && s [i] != ':')
        return 0;
    if (i > 0 && (s_word (s [i - 1]) || s [i - 1] == '.'))
        return 0;
    size_t run = i;
    int colons = 0;
    while (run < limit && run - i < INET6_ADDRSTRLEN - 1
    &&    (s_hex (s [run]) || s [run] == ':' || s [run] == '.'))
        colons += s [run++] == ':';
    if (colons < 2)
        return 0;

    for (size_t end = run; end >= i + 2; end--) {
        if (!s_hex (s [end - 1]) && s [end - 1] != ':')
            continue;
        if (end < len && (s_word (s [end]) || (s [end] == '.' && end + 1 < len && s_digit (s [end + 1]))))
            continue;
        char text [INET6_ADDRSTRLEN];
        memcpy (text, s + i, end - i);
        text [end - i] = 0;
        struct in6_addr addr;
        if (inet_pton (AF_INET6, text, &addr) != 1)
            continue;
        if (!strpbrk (text, "0123456789abcdefABCDEF"))
            return 0;               //  "::" alone is punctuation, not an address
        *keep = IN6_IS_ADDR_LOOPBACK (&addr) || IN6_IS_ADDR_UNSPECIFIED (&addr)
            || (IN6_IS_ADDR_V4MAPPED (&addr) && s_ipv4_local (addr.s6_addr + 12))
            || s_own (addr.s6_addr);
        return end - i;
    }
    return 0;
}

//  IPv4: a dotted quad of 0-255, not one part of a longer dotted number (1.2.3.4.5)
static size_t
s_match_ipv4 (const unsigned char *s, size_t i, size_t limit, size_t len, bool *keep)
{
    if (!s_digit (s [i]) || (i > 0 && (s_word (s [i - 1]) || s [i - 1] == '.')))
        return 0;
    unsigned char octets [4];
    size_t pos = i;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (pos >= limit || s [pos] != '.')
                return 0;
            pos++;
        }
        size_t digits = 0;
        unsigned value = 0;
        while (pos < limit && s_digit (s [pos]) && digits < 4) {
            value = value * 10 + (s [pos++] - '0');
            digits++;
        }
        if (digits == 0 || digits > 3 || value > 255)
            return 0;
        octets [part] = (unsigned char) value;
    }
    if (pos < len && (s_word (s [pos]) || (s [pos] == '.' && pos + 1 < len && s_digit (s [pos + 1]))))
        return 0;
    uint8_t mapped [16] = { [10] = 0xFF, [11] = 0xFF };
    memcpy (mapped + 12, octets, 4);
    *keep = s_ipv4_local (octets) || s_own (mapped);
    return pos - i;
}

//  International phone number: '+' then 7-15 digits in groups separated by at most
//  two of " -.()" ("+1 (555) 123-4567"); a group that would pass 15 digits ends it.
static size_t
s_match_phone_intl (const unsigned char *s, size_t i, size_t limit, size_t len)
{
    if (s [i] != '+' || (i > 0 && (s_word (s [i - 1]) || s [i - 1] == '+')))
        return 0;
    size_t pos = i + 1;
    size_t end = 0;
    size_t digits = 0;
    while (pos < limit) {
        size_t group = pos;
        while (group < limit && s_digit (s [group]))
            group++;
        if (group == pos || digits + (group - pos) > S_PHONE_DIGITS_MAX)
            break;
        digits += group - pos;
        end = pos = group;
        size_t seps = 0;
        while (pos < limit && seps < 3 && s [pos] && strchr (" -.()", s [pos])) {
            pos++;
            seps++;
        }
        if (seps == 0 || seps > 2)
            break;
    }
    if (digits < S_PHONE_INTL_MIN || (end < len && s_word (s [end])))
        return 0;
    return end - i;
}

//  National phone number or bare digit run: 9-15 digits, "5551234567",
//  "555-123-4567", "555.123.4567", "(555) 123-4567"
static size_t
s_match_phone (const unsigned char *s, size_t i, size_t limit, size_t len)
{
    if (!s_digit (s [i]) && s [i] != '(')
        return 0;
    if (i > 0) {
        unsigned char prev = s [i - 1];
        if (s_word (prev) || prev == '+')
            return 0;
        //  part of a decimal, date, list or UUID
        if (i > 1 && strchr (".-,", prev) && s_word (s [i - 2]))
            return 0;
    }
    size_t pos = i;
    size_t digits = 0;
    int groups = 0;
    if (s [pos] == '(') {
        size_t group = ++pos;
        while (pos < limit && s_digit (s [pos]))
            pos++;
        if (pos - group < 2 || pos - group > 5 || pos >= limit || s [pos] != ')')
            return 0;
        digits += pos - group;
        groups++;
        pos++;
        if (pos < limit && s [pos] == ' ')
            pos++;
        if (pos >= limit || !s_digit (s [pos]))
            return 0;
    }
    unsigned char sep = 0;
    while (true) {
        size_t group = pos;
        while (pos < limit && s_digit (s [pos]))
            pos++;
        digits += pos - group;
        groups++;
        if (pos + 1 < limit && (s [pos] == '-' || s [pos] == '.')
        &&  (sep == 0 || s [pos] == sep) && s_digit (s [pos + 1]))
            sep = s [pos++];
        else
            break;
    }
    if (pos < len) {
        if (s_word (s [pos]))
            return 0;
        if (pos + 1 < len && (s [pos] == '.' || s [pos] == '-') && s_word (s [pos + 1]))
            return 0;
    }
    if (digits < S_PHONE_DIGITS_MIN || digits > S_PHONE_DIGITS_MAX)
        return 0;
    if (sep == '.' && groups < 3)
        return 0;
    return pos - i;
}


//  --------------------------------------------------------------------------
//  Scrubbing into a bounded buffer

typedef struct {
    char *out;          /* the caller's buffer */
    size_t size;        /* its size, NUL included */
    size_t pos;         /* bytes written */
    bool full;          /* something did not fit; nothing more is written */
} s_sink_t;

static void
s_emit (s_sink_t *sink, const void *data, size_t len)
{
    if (sink->full)
        return;
    if (sink->pos + len + 1 > sink->size) {
        sink->full = true;
        return;
    }
    memcpy (sink->out + sink->pos, data, len);
    sink->pos += len;
}

//  Drops a UTF-8 sequence left incomplete at the end of the output
static void
s_trim_utf8 (s_sink_t *sink)
{
    size_t pos = sink->pos;
    size_t back = 0;
    while (pos > 0 && back < 4 && ((unsigned char) sink->out [pos - 1] & 0xC0) == 0x80) {
        pos--;
        back++;
    }
    if (pos == 0)
        return;
    unsigned char lead = sink->out [pos - 1];
    size_t need = lead >= 0xF0? 3: lead >= 0xE0? 2: lead >= 0xC0? 1: 0;
    if (lead >= 0xC0 && back < need)
        sink->pos = pos - 1;
}

bool
ly_log_scrub (const char *text, char *out, size_t size)
{
    assert (text);
    assert (out || size == 0);
    const unsigned char *s = (const unsigned char *) text;
    size_t len = strlen (text);
    s_sink_t sink = { out, size, 0, size == 0 };

    size_t email_start, email_end;
    s_next_email (s, len, 0, &email_start, &email_end);
    size_t i = 0;
    while (i < len && !sink.full) {
        if (i == email_start) {
            s_emit (&sink, S_EMAIL, strlen (S_EMAIL));
            i = email_end;
            s_next_email (s, len, i, &email_start, &email_end);
            continue;
        }
        size_t limit = email_start;
        bool keep = false;
        size_t match = s_match_ipv6 (s, i, limit, len, &keep);
        if (!match)
            match = s_match_ipv4 (s, i, limit, len, &keep);
        if (match) {
            if (keep)
                s_emit (&sink, s + i, match);
            else
                s_emit (&sink, S_IP, strlen (S_IP));
            i += match;
            continue;
        }
        match = s_match_phone_intl (s, i, limit, len);
        if (!match)
            match = s_match_phone (s, i, limit, len);
        if (match) {
            s_emit (&sink, S_PHONE, strlen (S_PHONE));
            i += match;
            continue;
        }
        s_emit (&sink, s + i, 1);
        i++;
    }
    if (sink.full)
        s_trim_utf8 (&sink);
    if (size > 0)
        out [sink.pos] = 0;
    return !sink.full;
}


//  --------------------------------------------------------------------------
//  Levels and set-up

void
ly_log_init (ly_log_level_t level, const char *process_name)
{
    __atomic_store_n (&s_level, (int) level, __ATOMIC_RELAXED);
    if (process_name && *process_name)
        snprintf (s_process, sizeof s_process, "%s", process_name);
}

int
ly_log_level_parse (const char *text, ly_log_level_t *level)
{
    assert (level);
    if (!text)
        return -1;
    for (int index = LY_LOG_DEBUG; index <= LY_LOG_ERROR; index++)
        if (strcasecmp (text, s_level_names [index]) == 0) {
            *level = (ly_log_level_t) index;
            return 0;
        }
    return -1;
}

ly_log_level_t
ly_log_level (void)
{
    return (ly_log_level_t) __atomic_load_n (&s_level, __ATOMIC_RELAXED);
}


//  --------------------------------------------------------------------------
//  Writes one line: "2026-11-27 08:12:03.123 UTC [pid] LEVEL: actor: message".
//  actor NULL means the process name given to ly_log_init. Control characters in
//  the message become spaces, so a line stays a line. errno is preserved.

//  How stderr is written. A pipe is made non-blocking (on its open file description,
//  which only Layers' processes share: each of them takes EAGAIN as below); a socket is
//  sent to without waiting; a file or a terminal is written as it is. Looked at again
//  when stderr changes (dup2), by its device and inode.
static pthread_mutex_t s_out_lock = PTHREAD_MUTEX_INITIALIZER;
static dev_t s_out_dev;
static ino_t s_out_ino;
static bool s_out_socket;

static void
s_out_check (void)
{
    struct stat out;
    if (fstat (STDERR_FILENO, &out))
        return;
    pthread_mutex_lock (&s_out_lock);
    if (out.st_dev != s_out_dev || out.st_ino != s_out_ino) {
        s_out_dev = out.st_dev;
        s_out_ino = out.st_ino;
        __atomic_store_n (&s_out_socket, S_ISSOCK (out.st_mode), __ATOMIC_RELAXED);
        int flags = S_ISFIFO (out.st_mode)? fcntl (STDERR_FILENO, F_GETFL): -1;
        if (flags != -1 && !(flags & O_NONBLOCK))
            fcntl (STDERR_FILENO, F_SETFL, flags | O_NONBLOCK);
    }
    pthread_mutex_unlock (&s_out_lock);
}

//  Writes data (at most PIPE_BUF bytes: a pipe takes it whole or not at all); false
//  when none of it could go out at once (the reader is not reading).
static bool
s_put (const char *data, size_t len)
{
    bool socket = __atomic_load_n (&s_out_socket, __ATOMIC_RELAXED);
    size_t done = 0;
    while (done < len) {
        ssize_t rc = socket? send (STDERR_FILENO, data + done, len - done, MSG_DONTWAIT | MSG_NOSIGNAL)
                           : write (STDERR_FILENO, data + done, len - done);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (done == 0)
                return false;
            //  A socket took part of it: the rest gets a moment, not more (a pipe
            //  takes PIPE_BUF bytes whole or not at all)
            struct pollfd out = { .fd = STDERR_FILENO, .events = POLLOUT };
            if (poll (&out, 1, 100) == 1)
                continue;
            return true;
        }
        if (rc <= 0)
            return true;                //  an error: the line is given up, as ever
        done += (size_t) rc;
    }
    return true;
}

//  Lines that could not go out at once, since the last one that did
static unsigned s_left_out;

//  Writes a line, unless the log output is not being read (a stuck journald, Docker's
//  blocking log mode), which must not stop the server, its watchdog included: such
//  lines are left out and counted, and the count is written before the next line that
//  goes out.
static void
s_write_line (const char *line, size_t len, const struct timespec *now, const struct tm *tm)
{
    s_out_check ();
    unsigned left_out = __atomic_exchange_n (&s_left_out, 0, __ATOMIC_RELAXED);
    if (left_out) {
        char note [256];
        int note_len = snprintf (note, sizeof note,
            "%04d-%02d-%02d %02d:%02d:%02d.%03ld UTC [%d] WARNING: %s: %u log lines were left"
            " out: the log output was not being read\n",
            tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday, tm->tm_hour, tm->tm_min,
            tm->tm_sec, now->tv_nsec / 1000000, (int) getpid (), s_process, left_out);
        if (!s_put (note, (size_t) note_len)) {
            __atomic_add_fetch (&s_left_out, left_out + 1, __ATOMIC_RELAXED);
            return;
        }
    }
    if (!s_put (line, len))
        __atomic_add_fetch (&s_left_out, 1, __ATOMIC_RELAXED);
}

void
ly_log (ly_log_level_t level, const char *actor, const char *format, ...)
{
    if ((int) level < __atomic_load_n (&s_level, __ATOMIC_RELAXED))
        return;
    int saved_errno = errno;
    if ((int) level < LY_LOG_DEBUG || (int) level > LY_LOG_ERROR)
        level = LY_LOG_ERROR;

    char line [S_LINE_MAX];
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r (&now.tv_sec, &tm);
    int prefix = snprintf (line, sizeof line,
        "%04d-%02d-%02d %02d:%02d:%02d.%03ld UTC [%d] %s: %.*s: ",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        now.tv_nsec / 1000000, (int) getpid (), s_level_names [level],
        S_ACTOR_MAX, actor && *actor? actor: s_process);
    assert (prefix > 0 && (size_t) prefix < sizeof line / 2);

    //  The whole message is formatted, then scrubbed, then cut
    char small [S_LINE_MAX];
    char *message = small;
    errno = saved_errno;            //  for %m
    va_list args;
    va_start (args, format);
    va_list again;
    va_copy (again, args);
    int length = vsnprintf (small, sizeof small, format, args);
    va_end (args);
    if (length < 0)
        snprintf (small, sizeof small, "(could not format log message \"%s\")", format);
    else
    if ((size_t) length >= sizeof small) {
        message = malloc ((size_t) length + 1);
        if (message)
            vsnprintf (message, (size_t) length + 1, format, again);
        else {
            //  Scrubbing a cut message could pass half an address: say less
            message = small;
            snprintf (small, sizeof small, "(log message of %d bytes dropped: out of memory)", length);
        }
    }
    va_end (again);

    size_t room = sizeof line - prefix - strlen (S_TRUNCATED) - 1;
    bool whole = ly_log_scrub (message, line + prefix, room);
    if (message != small)
        free (message);

    size_t end = prefix + strlen (line + prefix);
    for (size_t pos = prefix; pos < end; pos++) {
        unsigned char c = line [pos];
        if (c < 0x20 || c == 0x7F)
            line [pos] = ' ';
    }
    if (!whole) {
        memcpy (line + end, S_TRUNCATED, strlen (S_TRUNCATED));
        end += strlen (S_TRUNCATED);
    }
    line [end++] = '\n';
    assert (end <= sizeof line);
    s_write_line (line, end, &now, &tm);
    errno = saved_errno;
}
