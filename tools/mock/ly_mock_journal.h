/*  ly_mock_journal.h: what layers-mock received, for tests to read back. Every request
    to a fake is kept, valid or not, answered or dropped, with what was answered; the
    oldest go first once the journal passes its bounds (entries and bytes). Per-service
    counters survive eviction until cleared. Thread-safe. */
#ifndef LY_MOCK_JOURNAL_H
#define LY_MOCK_JOURNAL_H

#include "ly_prelude.h"
#include "ly_mock.h"

typedef struct _ly_mock_journal_t ly_mock_journal_t;

/*  One received request; every pointer is owned by the entry. */
typedef struct {
    uint64_t seq;               /* set by the journal, from 1 */
    int64_t time_usec;          /* receive time, epoch usec */
    ly_mock_service_t service;
    char *method;
    char *path;
    json_t *query;              /* decoded query arguments */
    json_t *headers;            /* lower-cased name -> value */
    char *body;                 /* raw body, NUL-terminated */
    size_t body_size;
    unsigned status;            /* answered status, 0: dropped */
    bool dropped;               /* closed without an answer */
    int64_t delay_ms;           /* injected delay */
    json_t *fault_ids;          /* faults applied (integers) */
    json_t *errors;             /* why the fake refused it */
    json_t *warnings;           /* accepted deviations */
    int events;                 /* events accepted (0 when a fault answered) */
    bool refused;               /* the fake's own answer was a refusal */
    char *response;             /* answered body, NULL: none */
    char *response_type;        /* its Content-Type */
} ly_mock_entry_t;

/*  max_entries and max_bytes (bodies and answers) bound what is kept. */
ly_mock_journal_t *ly_mock_journal_new (size_t max_entries, size_t max_bytes);
void ly_mock_journal_destroy (ly_mock_journal_t **self_p);

ly_mock_entry_t *ly_mock_entry_new (void);
void ly_mock_entry_destroy (ly_mock_entry_t **self_p);

/*  Takes the entry over, numbers it and keeps it; returns its seq. */
uint64_t ly_mock_journal_add (ly_mock_journal_t *self, ly_mock_entry_t **entry_p);
/*  Entries oldest first: of service (LY_MOCK_ANY_SERVICE: all) with seq > since, at most
    limit of them (0: no limit, the newest when limited), with bodies or without.
    Caller owns. */
json_t *ly_mock_journal_list (ly_mock_journal_t *self, int service, uint64_t since,
                              size_t limit, bool bodies);
/*  {"meta": {"requests", "events", "refused", "faulted", "dropped"}, ..., "last_seq"}.
    Caller owns. */
json_t *ly_mock_journal_stats (ly_mock_journal_t *self);
/*  Forgets every entry and counter (seq goes on); returns how many entries went. */
size_t ly_mock_journal_clear (ly_mock_journal_t *self);

#endif
