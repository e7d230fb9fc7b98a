/*  ly_prelude.h: the one private header. Every Layers .c file includes this first,
    then its own header. It gathers the system and library includes and the
    project-wide declarations (return codes, version). */
#ifndef LY_PRELUDE_H
#define LY_PRELUDE_H

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <pthread.h>

#include <czmq.h>
#include <msgpack.h>
#include <jansson.h>
#include <libpq-fe.h>

#define LY_VERSION "0.1.0"

/*  A macro's value as a string literal: LY_TEXT (S_ROWS) is "5000" */
#define LY_QUOTE(x) #x
#define LY_TEXT(x) LY_QUOTE (x)

/*  The shared vocabulary for multi-step work; plain calls return 0 / -1. */
typedef enum {
    LY_OK = 0,          /* done */
    LY_ERROR = -1,      /* failed; the reason was logged or returned */
    LY_AGAIN = 1,       /* not done yet, call again (partial input, busy) */
    LY_INVALID = 2,     /* the input was refused; the caller answers the sender */
    LY_UNAVAILABLE = 3  /* a dependency (database, peer) is down; retry later */
} ly_result_t;

/*  Current wall-clock time in microseconds since the epoch. */
static inline int64_t
ly_now_usec (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*  Monotonic time in microseconds, for durations and deadlines. */
static inline int64_t
ly_mono_usec (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*  Monotonic time in milliseconds, for deadlines. */
static inline int64_t
ly_mono_msec (void)
{
    return ly_mono_usec () / 1000;
}

#endif
