/*  ly_supervisor.c: the process supervisor (see ly_supervisor.h). Signals are blocked
    and taken synchronously with sigtimedwait, so the loop sleeps until a child dies, a
    stop is asked for, or the next restart is due. */
#include "ly_supervisor.h"
#include "ly_log.h"

#define S_ACTOR "supervisor"
#define S_BACKOFF_MIN_MSEC 100
#define S_BACKOFF_MAX_MSEC 5000
#define S_STABLE_MSEC 10000         /* a child up this long starts again at minimum backoff */
#define S_GRACE_MSEC 3000           /* SIGTERM to SIGKILL */
#define S_DRAIN_MSEC 7000           /* gateways stopping: the requests they hold are
                                       answered within 5 s (ly_gateway.c), then the rest stop */
#define S_MAX_CHILDREN 32
#define S_HEARTBEAT_FD 3            /* a child's heartbeat pipe, in the child */
#define S_ALIVE_CHECK_MSEC 1000     /* how often heartbeats are read */
#define S_ALIVE_TICK_MSEC 250       /* how often a child asks its actor */
#define S_START_GRACE_MSEC 30000    /* before its first heartbeat, a child may take
                                       this long (or the timeout, if longer): setting
                                       up an actor (the UA rules) takes a while */

typedef struct {
    char *role;                 /* actor name, owned */
    pid_t pid;                  /* 0: not running */
    int64_t started;            /* monotonic msec of the last start */
    int64_t restart_at;         /* monotonic msec when to start again, 0: not due */
    int backoff;                /* msec before the next restart */
    unsigned restarts;          /* how many times it was restarted */
    int heartbeat;              /* read end of its heartbeat pipe, -1: none */
    int64_t alive_at;           /* monotonic msec of its last heartbeat (or start) */
    bool beating;               /* a heartbeat came since the start */
} s_child_t;

#define S_MAX_ARGS 64

struct _ly_supervisor_t {
    char *exe;                          /* layersd binary, owned */
    char *args [S_MAX_ARGS];            /* extra arguments for every child, owned */
    size_t arg_count;
    s_child_t children [S_MAX_CHILDREN];/* the watched processes */
    size_t count;                       /* children in use */
    ly_supervisor_watch_fn *watch;      /* run every watch_interval msec, or NULL */
    void *watch_arg;                    /* its argument, borrowed */
    int watch_interval;                 /* msec between runs */
    int64_t watch_at;                   /* monotonic msec of the next run */
    int timeout;                        /* msec without a heartbeat before a kill, 0: never */
    int64_t alive_check_at;             /* monotonic msec of the next heartbeat read */
};

static void
s_signal_set (sigset_t *set)
{
    sigemptyset (set);
    int signals [] = { SIGINT, SIGTERM, SIGQUIT, SIGCHLD, SIGHUP, SIGUSR1, SIGUSR2 };
    for (size_t i = 0; i < sizeof signals / sizeof signals [0]; i++)
        sigaddset (set, signals [i]);
}

void
ly_signals_block (sigset_t *set)
{
    s_signal_set (set);
    pthread_sigmask (SIG_BLOCK, set, NULL);
    signal (SIGPIPE, SIG_IGN);
}

bool
ly_signal_stops (int signum)
{
    return signum == SIGINT || signum == SIGTERM || signum == SIGQUIT;
}

ly_supervisor_t *
ly_supervisor_new (const char *exe)
{
    ly_supervisor_t *self = (ly_supervisor_t *) zmalloc (sizeof (ly_supervisor_t));
    self->exe = strdup (exe);
    return self;
}

void
ly_supervisor_destroy (ly_supervisor_t **self_p)
{
    assert (self_p);
    ly_supervisor_t *self = *self_p;
    if (self) {
        for (size_t i = 0; i < self->count; i++)
            free (self->children [i].role);
        for (size_t i = 0; i < self->arg_count; i++)
            free (self->args [i]);
        free (self->exe);
        free (self);
        *self_p = NULL;
    }
}

void
ly_supervisor_add_arg (ly_supervisor_t *self, const char *arg)
{
    assert (self->arg_count < S_MAX_ARGS);
    self->args [self->arg_count++] = strdup (arg);
}

void
ly_supervisor_add (ly_supervisor_t *self, const char *role)
{
    assert (self->count < S_MAX_CHILDREN);
    s_child_t *child = &self->children [self->count++];
    child->role = strdup (role);
    child->backoff = S_BACKOFF_MIN_MSEC;
    child->heartbeat = -1;
}

void
ly_supervisor_set_timeout (ly_supervisor_t *self, int timeout_msec)
{
    self->timeout = timeout_msec > 0? timeout_msec: 0;
}

void
ly_supervisor_set_watch (ly_supervisor_t *self, ly_supervisor_watch_fn *fn, void *arg,
                         int interval_msec)
{
    self->watch = fn;
    self->watch_arg = arg;
    self->watch_interval = interval_msec;
    self->watch_at = ly_mono_msec () + interval_msec;
}

static void
s_start (ly_supervisor_t *self, s_child_t *child)
{
    int pipe_fds [2] = { -1, -1 };
    if (self->timeout && pipe2 (pipe_fds, O_CLOEXEC | O_NONBLOCK)) {
        ly_warning (S_ACTOR, "no heartbeat for actor %s: %s", child->role, strerror (errno));
        pipe_fds [0] = pipe_fds [1] = -1;
    }
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid == -1) {
        ly_error (S_ACTOR, "could not fork actor %s: %s", child->role, strerror (errno));
        child->restart_at = ly_mono_msec () + child->backoff;
        if (pipe_fds [0] >= 0) {
            close (pipe_fds [0]);
            close (pipe_fds [1]);
        }
        return;
    }
    if (pid == 0) {
        //  The child dies with the supervisor, even if the supervisor is killed.
        prctl (PR_SET_PDEATHSIG, SIGTERM);
        if (getppid () != parent)
            _exit (1);
        sigset_t none;
        sigemptyset (&none);
        sigprocmask (SIG_SETMASK, &none, NULL);
        char *argv [S_MAX_ARGS + 6];
        size_t argc = 0;
        argv [argc++] = "layersd";
        argv [argc++] = "--only";
        argv [argc++] = child->role;
        for (size_t i = 0; i < self->arg_count; i++)
            argv [argc++] = self->args [i];
        if (pipe_fds [1] >= 0) {
            //  The write end as S_HEARTBEAT_FD, kept across exec
            if (pipe_fds [1] == S_HEARTBEAT_FD)
                fcntl (S_HEARTBEAT_FD, F_SETFD, 0);
            else
            if (dup2 (pipe_fds [1], S_HEARTBEAT_FD) == -1)
                _exit (1);
            argv [argc++] = "--heartbeat-fd";
            argv [argc++] = LY_TEXT (S_HEARTBEAT_FD);
        }
        argv [argc] = NULL;
        execv (self->exe, argv);
        fprintf (stderr, "layersd: could not run \"%s\": %s\n", self->exe, strerror (errno));
        _exit (127);
    }
    if (pipe_fds [1] >= 0)
        close (pipe_fds [1]);
    child->heartbeat = pipe_fds [0];
    child->pid = pid;
    child->started = ly_mono_msec ();
    child->alive_at = child->started;
    child->beating = false;
    child->restart_at = 0;
    ly_info (S_ACTOR, "started actor %s (pid %d)", child->role, (int) pid);
}

static s_child_t *
s_find (ly_supervisor_t *self, pid_t pid)
{
    for (size_t i = 0; i < self->count; i++)
        if (self->children [i].pid == pid)
            return &self->children [i];
    return NULL;
}

static void
s_describe_exit (int status, char *text, size_t size)
{
    if (WIFSIGNALED (status))
        snprintf (text, size, "was terminated by signal %d: %s%s", WTERMSIG (status),
                  strsignal (WTERMSIG (status)), WCOREDUMP (status)? " (core dumped)": "");
    else
        snprintf (text, size, "exited with status %d", WEXITSTATUS (status));
}

//  Reaps every child that ended; schedules restarts unless stopping.
static void
s_reap (ly_supervisor_t *self, bool stopping)
{
    int status;
    pid_t pid;
    while ((pid = waitpid (-1, &status, WNOHANG)) > 0) {
        s_child_t *child = s_find (self, pid);
        if (!child)
            continue;       //  not ours (a helper process): nothing to do
        char how [128];
        s_describe_exit (status, how, sizeof how);
        child->pid = 0;
        if (child->heartbeat >= 0) {
            close (child->heartbeat);
            child->heartbeat = -1;
        }
        if (stopping) {
            ly_info (S_ACTOR, "actor %s (pid %d) %s", child->role, (int) pid, how);
            continue;
        }
        int64_t now = ly_mono_msec ();
        if (now - child->started >= S_STABLE_MSEC)
            child->backoff = S_BACKOFF_MIN_MSEC;
        ly_warning (S_ACTOR, "actor %s (pid %d) %s; restarting in %d ms",
                    child->role, (int) pid, how, child->backoff);
        child->restart_at = now + child->backoff;
        child->restarts++;
        child->backoff *= 2;
        if (child->backoff > S_BACKOFF_MAX_MSEC)
            child->backoff = S_BACKOFF_MAX_MSEC;
    }
}

//  Reads the heartbeats that came; kills a child silent for longer than the timeout
//  (its end is reaped and restarted like any other).
static void
s_check_alive (ly_supervisor_t *self)
{
    int64_t now = ly_mono_msec ();
    for (size_t i = 0; i < self->count; i++) {
        s_child_t *child = &self->children [i];
        if (!child->pid || child->heartbeat < 0)
            continue;
        char beats [64];
        while (read (child->heartbeat, beats, sizeof beats) > 0) {
            child->alive_at = now;
            child->beating = true;
        }
        int limit = child->beating || self->timeout > S_START_GRACE_MSEC
                  ? self->timeout: S_START_GRACE_MSEC;
        if (now - child->alive_at > limit) {
            ly_warning (S_ACTOR, "actor %s (pid %d) has not answered for %d s; killing it",
                        child->role, (int) child->pid, limit / 1000);
            kill (child->pid, SIGKILL);
            child->alive_at = now;      //  once: its end comes as SIGCHLD
        }
    }
}

//  Children running, of one role or (NULL) all
static size_t
s_running (ly_supervisor_t *self, const char *role)
{
    size_t running = 0;
    for (size_t i = 0; i < self->count; i++)
        if (self->children [i].pid && (!role || streq (self->children [i].role, role)))
            running++;
    return running;
}

static void
s_signal (ly_supervisor_t *self, const char *role, int signum)
{
    for (size_t i = 0; i < self->count; i++)
        if (self->children [i].pid && (!role || streq (self->children [i].role, role)))
            kill (self->children [i].pid, signum);
}

//  Reaps children until none of role (NULL: any) runs, or until msec have passed.
static void
s_wait_stopped (ly_supervisor_t *self, const char *role, int msec)
{
    sigset_t chld;
    sigemptyset (&chld);
    sigaddset (&chld, SIGCHLD);
    int64_t deadline = ly_mono_msec () + msec;
    s_reap (self, true);
    while (s_running (self, role) && ly_mono_msec () < deadline) {
        int64_t wait = deadline - ly_mono_msec ();
        struct timespec timeout = { wait / 1000, (wait % 1000) * 1000000 };
        sigtimedwait (&chld, NULL, &timeout);
        s_reap (self, true);
    }
}

//  Stops the gateways first: each answers the requests it holds before it exits (the
//  other actors must still run for that), then the rest.
static void
s_stop (ly_supervisor_t *self)
{
    s_signal (self, "gateway", SIGTERM);
    s_wait_stopped (self, "gateway", S_DRAIN_MSEC);
    s_signal (self, NULL, SIGTERM);
    s_wait_stopped (self, NULL, S_GRACE_MSEC);
    if (s_running (self, NULL)) {
        ly_warning (S_ACTOR, "%zu actors did not stop in %d ms; killing them",
                    s_running (self, NULL), S_GRACE_MSEC);
        s_signal (self, NULL, SIGKILL);
        for (size_t i = 0; i < self->count; i++)
            if (self->children [i].pid) {
                waitpid (self->children [i].pid, NULL, 0);
                self->children [i].pid = 0;
            }
    }
}

int
ly_supervisor_run (ly_supervisor_t *self)
{
    for (size_t i = 0; i < self->count; i++)
        s_start (self, &self->children [i]);

    sigset_t set;
    s_signal_set (&set);
    while (true) {
        //  Sleep until a signal, the next restart that is due or the next watch.
        int64_t now = ly_mono_msec ();
        int64_t next = -1;
        if (self->watch) {
            if (self->watch_at <= now) {
                self->watch (self->watch_arg);
                now = ly_mono_msec ();
                self->watch_at = now + self->watch_interval;
            }
            next = self->watch_at;
        }
        if (self->timeout) {
            if (self->alive_check_at <= now) {
                s_check_alive (self);
                self->alive_check_at = now + S_ALIVE_CHECK_MSEC;
            }
            if (next < 0 || self->alive_check_at < next)
                next = self->alive_check_at;
        }
        for (size_t i = 0; i < self->count; i++) {
            s_child_t *child = &self->children [i];
            if (!child->pid && child->restart_at) {
                if (child->restart_at <= now)
                    s_start (self, child);
                else
                if (next < 0 || child->restart_at < next)
                    next = child->restart_at;
            }
        }
        int signum;
        if (next < 0)
            signum = sigwaitinfo (&set, NULL);
        else {
            int64_t wait = next - now;
            struct timespec timeout = { wait / 1000, (wait % 1000) * 1000000 };
            signum = sigtimedwait (&set, NULL, &timeout);
        }
        if (ly_signal_stops (signum)) {
            ly_info (S_ACTOR, "received SIG%s, stopping", sigabbrev_np (signum));
            break;
        }
        if (signum == SIGCHLD)
            s_reap (self, false);
        else
        if (signum > 0)
            ly_info (S_ACTOR, "received SIG%s: ignored (SIGINT, SIGTERM or SIGQUIT stops layersd)",
                     sigabbrev_np (signum));
    }
    s_stop (self);
    return 0;
}

int
ly_heartbeat_run (zactor_t *actor, int heartbeat_fd, const sigset_t *signals)
{
    bool asked = false;             //  an ALIVE not answered yet
    while (true) {
        struct timespec tick = { 0, S_ALIVE_TICK_MSEC * 1000000L };
        int signum = heartbeat_fd >= 0? sigtimedwait (signals, NULL, &tick)
                                      : sigwaitinfo (signals, NULL);
        if (ly_signal_stops (signum))
            return signum;
        if (heartbeat_fd < 0)
            continue;
        zsock_t *sock = zactor_sock (actor);
        while (zsock_events (sock) & ZMQ_POLLIN) {
            char *answer = zstr_recv (sock);
            zstr_free (&answer);
            asked = false;
            //  Full (the supervisor is behind) or gone: no matter
            ssize_t written = write (heartbeat_fd, "", 1);
            (void) written;
        }
        if (!asked && zstr_send (actor, "ALIVE") == 0)
            asked = true;
    }
}
