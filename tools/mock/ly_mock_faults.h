/*  ly_mock_faults.h: the fault queue of layers-mock. A fault, posted as JSON, changes
    how the next N requests to a service are answered: another status or body, a delay,
    or a connection closed without an answer; a match substring limits it to requests
    whose body contains it. Faults apply in the order they were added. Thread-safe. */
#ifndef LY_MOCK_FAULTS_H
#define LY_MOCK_FAULTS_H

#include "ly_prelude.h"
#include "ly_mock.h"

typedef struct _ly_mock_faults_t ly_mock_faults_t;

/*  What to do with one request, taken from the queue; ly_mock_plan_reset frees it. */
typedef struct {
    int64_t delay_ms;           /* wait this long before answering (or hanging up) */
    bool drop;                  /* close the connection without an answer */
    bool answer;                /* answer with what follows instead of the fake's answer */
    ly_mock_error_spec_t spec;  /* status, code, message for the fake's error body */
    json_t *body;               /* the answer's body verbatim, owned; NULL: the fake's */
    char *content_type;         /* for body, owned; NULL: JSON or text by its type */
    json_t *headers;            /* extra answer headers, owned */
    char *message;              /* owned storage behind spec.message */
    json_t *fault_ids;          /* ids of the faults applied (integers), owned */
} ly_mock_plan_t;

ly_mock_faults_t *ly_mock_faults_new (void);
void ly_mock_faults_destroy (ly_mock_faults_t **self_p);

/*  Adds a fault from its JSON description:
      {"service": "meta"|"tiktok"|"apple"|"model"|"*", "count": N (1; -1: until cleared),
       "status": 100..599, "body": any JSON (a string is sent as text),
       "content_type": "...", "headers": {"Name": "value"}, "code": n, "subcode": n,
       "message": "...", "delay_ms": 0..600000, "drop": bool, "match": "substring"}
    Returns the fault as listed (caller owns), or NULL with a reason in err. */
json_t *ly_mock_faults_add (ly_mock_faults_t *self, json_t *spec, char *err, size_t errlen);
/*  The queue, oldest first, each with its id, remaining count and times applied.
    Caller owns. */
json_t *ly_mock_faults_list (ly_mock_faults_t *self);
/*  Removes the fault with this id, if it is still queued. */
void ly_mock_faults_remove (ly_mock_faults_t *self, uint64_t id);
/*  Removes the faults of service (LY_MOCK_ANY_SERVICE: all of them); returns how many. */
size_t ly_mock_faults_clear (ly_mock_faults_t *self, int service);

/*  Takes what applies to one request to service with this body: the first matching
    fault that only delays (its delay adds up) and the first matching fault that
    answers, drops or delays its answer; each counts one use. plan is initialized here. */
void ly_mock_faults_take (ly_mock_faults_t *self, ly_mock_service_t service,
                          const char *body, size_t body_size, ly_mock_plan_t *plan);
void ly_mock_plan_reset (ly_mock_plan_t *plan);

#endif
