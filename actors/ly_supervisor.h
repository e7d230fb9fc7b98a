/*  ly_supervisor.h: starting, watching and restarting actor processes. Each actor runs
    as `layersd --only ROLE` in a child process; a child that dies is restarted with a
    capped exponential backoff and the way it died is logged. SIGINT or SIGTERM stops
    every child (SIGKILL after a grace period) and returns. */
#ifndef LY_SUPERVISOR_H
#define LY_SUPERVISOR_H

#include "ly_prelude.h"

typedef struct _ly_supervisor_t ly_supervisor_t;

/*  exe: the layersd binary to run children with. Caller owns the result. */
ly_supervisor_t *ly_supervisor_new (const char *exe);
void ly_supervisor_destroy (ly_supervisor_t **self_p);
/*  Adds an argument every child gets after `--only ROLE` (e.g. --connect specs). */
void ly_supervisor_add_arg (ly_supervisor_t *self, const char *arg);
/*  Adds one child running `exe --only role [extra args]`. */
void ly_supervisor_add (ly_supervisor_t *self, const char *role);
/*  Something else the supervisor looks after between signals (the embedded
    PostgreSQL): fn (arg) runs every interval_msec while the supervisor runs. */
typedef void (ly_supervisor_watch_fn) (void *arg);
void ly_supervisor_set_watch (ly_supervisor_t *self, ly_supervisor_watch_fn *fn, void *arg,
                              int interval_msec);
/*  Kills (and so restarts) a child that has not shown it is alive for timeout_msec
    (0: never; before its first heartbeat, at least 30 s): each child gets
    `--heartbeat-fd N` and writes a byte to fd N each time its actor answers
    (ly_heartbeat_run), so a process stopped or stuck (SIGSTOP, a deadlock, a hung
    system call) is found. */
void ly_supervisor_set_timeout (ly_supervisor_t *self, int timeout_msec);
/*  The child's side: while waiting for SIGINT or SIGTERM (in signals), asks actor
    ALIVE every 250 ms and writes a byte to heartbeat_fd (-1: none) for each answer.
    Returns the signal. */
int ly_heartbeat_run (zactor_t *actor, int heartbeat_fd, const sigset_t *signals);
/*  Starts the children and watches them until SIGINT or SIGTERM; then stops them all.
    The caller must have blocked SIGINT, SIGTERM and SIGCHLD in every thread.
    Returns 0. */
int ly_supervisor_run (ly_supervisor_t *self);

/*  Signals a supervisor or --only process waits for, blocked in main before any thread
    starts: those that stop it (ly_signal_stops), SIGCHLD, and SIGHUP, SIGUSR1 and
    SIGUSR2, which it ignores (their default would end it without a word, and leave
    the embedded PostgreSQL running without its supervisor). */
void ly_signals_block (sigset_t *set);

/*  True for the signals that stop a process cleanly: SIGINT, SIGTERM, SIGQUIT. */
bool ly_signal_stops (int signum);

#endif
