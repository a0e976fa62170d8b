/* Device requests custosd refuses before the engine decides (wrong scope,
 * invalid registration id, malformed body, no credentials, rate limited, a
 * poll of an unknown operation or without the credentials that registered,
 * a status request that does not verify) go to the audit log as
 * "registration.refused" records, bounded so that nobody can flood the log:
 * per remote address and minute the first few refusals are recorded one by
 * one, the rest only counted and written as one
 * "registration.refused.summary" record when the minute is over
 * (docs/audit.md, "Refusals before the engine"). Service-API requests
 * whose authentication fails (no, forged or expired service SAS, another
 * policy) are bounded the same way, as "service.refused" and
 * "service.refused.summary", counted apart from the device refusals. */
#include "srv_int.h"

#include <custos/audit.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DETAIL_PER_SOURCE 3  /* records per remote address per minute */
#define DETAIL_PER_MINUTE 60 /* records per minute, all addresses */
#define MAX_SOURCES 256      /* addresses told apart per minute; the others count as "*" */
#define MAX_CODES 8          /* error codes told apart per address; the others count as 0 */
#define MAX_PENDING 1024     /* finished minutes' summaries waiting for the timer */
#define ID_SHOWN 128         /* bytes of a registration id kept in a record */
#define PATH_SHOWN 256       /* bytes of a service request's path and query */
#define REASON_SHOWN 300     /* bytes of a reason (it may quote the request) */

typedef struct source {
    char addr[64];
    int kind; /* CU_SRV_REFUSED_* */
    long long minute;
    unsigned long n, recorded;
    size_t ncodes;
    int code[MAX_CODES];
    unsigned long code_n[MAX_CODES];
} source;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long long cur_minute = -1;
/* Per address and kind; the last two are "*" of each kind. */
static source cur[MAX_SOURCES + CU_SRV_REFUSED__N];
static size_t ncur;
static unsigned long cur_recorded;
static source *pending;
static size_t npending;

void cu_srv__escape(const char *in, size_t shown, char *out, size_t size)
{
    static const char HEX[] = "0123456789abcdef";
    size_t o = 0, i = 0, len = strlen(in);
    for (; i < len && i < shown && o + 5 < size; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = HEX[c >> 4];
            out[o++] = HEX[c & 15];
        }
    }
    out[o] = 0;
    if (i < len)
        snprintf(out + o, size - o, "...(%zu bytes)", len);
}

static void count_code(source *s, int code)
{
    size_t i = 0;
    while (i < s->ncodes && s->code[i] != code)
        i++;
    if (i == s->ncodes) {
        if (s->ncodes == MAX_CODES) {
            i = MAX_CODES - 1; /* the last slot becomes "other" (0) */
            s->code[i] = 0;
        } else {
            s->code[i] = code;
            s->code_n[i] = 0;
            s->ncodes++;
        }
    }
    s->code_n[i]++;
}

/* The finished minute's addresses with refusals not recorded one by one
 * wait for the timer. */
static void retire_unlocked(void)
{
    for (size_t i = 0; i < ncur; i++) {
        if (cur[i].n == cur[i].recorded)
            continue;
        if (npending == MAX_PENDING) {
            /* The timer is far behind: merge into the last summary. */
            source *last = &pending[MAX_PENDING - 1];
            snprintf(last->addr, sizeof last->addr, "*");
            last->n += cur[i].n;
            last->recorded += cur[i].recorded;
            for (size_t k = 0; k < cur[i].ncodes; k++)
                for (unsigned long c = 0; c < cur[i].code_n[k]; c++)
                    count_code(last, cur[i].code[k]);
            continue;
        }
        if (pending == NULL && (pending = calloc(MAX_PENDING, sizeof *pending)) == NULL)
            break; /* out of memory: the summary is lost, the refusals were refused anyway */
        pending[npending++] = cur[i];
    }
    ncur = 0;
    cur_recorded = 0;
}

bool cu_srv__refusal_note(const char *remote, int code, time_t now)
{
    return cu_srv__refusal_note_kind(CU_SRV_REFUSED_DEVICE, remote, code, now);
}

bool cu_srv__refusal_note_kind(int kind, const char *remote, int code, time_t now)
{
    bool record = false;
    pthread_mutex_lock(&lock);
    /* The clock under the lock: nothing counts into a minute a flush took. */
    long long minute = (long long)(now ? now : time(NULL)) / 60;
    if (minute < cur_minute)
        minute = cur_minute; /* the clock went back: stay in the minute */
    if (minute != cur_minute) {
        retire_unlocked();
        cur_minute = minute;
    }
    size_t i = 0;
    while (i < ncur && (cur[i].kind != kind || strcmp(cur[i].addr, remote) != 0))
        i++;
    bool star = false;
    if (i == ncur && ncur >= MAX_SOURCES) {
        /* This kind's "*": found, or made after the others. */
        star = true;
        for (i = MAX_SOURCES; i < ncur && cur[i].kind != kind; i++)
            ;
    }
    if (i == ncur) {
        memset(&cur[i], 0, sizeof cur[i]);
        snprintf(cur[i].addr, sizeof cur[i].addr, "%s", star ? "*" : remote);
        cur[i].kind = kind;
        cur[i].minute = minute;
        ncur++;
    }
    source *s = &cur[i];
    s->n++;
    count_code(s, code);
    if (!star && s->recorded < DETAIL_PER_SOURCE && cur_recorded < DETAIL_PER_MINUTE) {
        s->recorded++;
        cur_recorded++;
        record = true;
    }
    pthread_mutex_unlock(&lock);
    return record;
}

void cu_srv__refusals_reset(void)
{
    pthread_mutex_lock(&lock);
    free(pending);
    pending = NULL;
    npending = 0;
    ncur = 0;
    cur_recorded = 0;
    cur_minute = -1;
    pthread_mutex_unlock(&lock);
}

static cu_rc write_summary(cu_store *s, const source *src)
{
    char at[32], actor[CU_AUDIT_ACTOR_MAX], code[16];
    time_t t = (time_t)(src->minute * 60);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:00Z", &tm);
    json_t *codes = json_object();
    for (size_t i = 0; codes != NULL && i < src->ncodes; i++) {
        snprintf(code, sizeof code, "%d", src->code[i]);
        json_object_set_new(codes, src->code[i] ? code : "other", json_integer((json_int_t)src->code_n[i]));
    }
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:I, s:o?}", "remote", src->addr, "minute", at, "refused",
                          (json_int_t)src->n, "recorded", (json_int_t)src->recorded, "notRecorded",
                          (json_int_t)(src->n - src->recorded), "errorCodes", codes);
    char *p = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    snprintf(actor, sizeof actor, "remote:%s", src->addr);
    cu_rc rc = p ? cu_audit_append(s,
                                   src->kind == CU_SRV_REFUSED_SERVICE ? "service.refused.summary"
                                                                       : "registration.refused.summary",
                                   actor, p, NULL)
                 : cu_err_set(CU_E_NOMEM, "out of memory");
    free(p);
    return rc;
}

cu_rc cu_srv__refusals_flush(cu_store *s, bool all)
{
    source *todo = NULL;
    size_t n = 0;
    cu_rc rc = CU_OK;
    pthread_mutex_lock(&lock);
    if (all || (cur_minute >= 0 && (long long)time(NULL) / 60 != cur_minute)) {
        retire_unlocked();
        cur_minute = -1;
    }
    todo = pending;
    n = npending;
    pending = NULL;
    npending = 0;
    pthread_mutex_unlock(&lock);
    size_t i = 0;
    for (; i < n && rc == CU_OK; i++)
        rc = write_summary(s, &todo[i]);
    if (rc != CU_OK && i > 0) {
        /* Keep what was not written for the next flush. */
        pthread_mutex_lock(&lock);
        for (size_t k = i - 1; k < n; k++) {
            if (pending == NULL && (pending = calloc(MAX_PENDING, sizeof *pending)) == NULL)
                break;
            if (npending < MAX_PENDING)
                pending[npending++] = todo[k];
        }
        pthread_mutex_unlock(&lock);
    }
    free(todo);
    return rc;
}

static void peer(cu_srv__req *r, char remote[64])
{
    struct evhttp_connection *c = evhttp_request_get_connection(r->req);
    snprintf(remote, 64, "?");
    if (c != NULL) {
        char *addr = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(c, &addr, &port);
        if (addr != NULL)
            snprintf(remote, 64, "%s", addr);
    }
}

/* Appends one refusal record (j is consumed). */
static void append(cu_srv__req *r, const char *type, const char *actor, json_t *j)
{
    char *p = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    cu_rc rc = CU_E_NOMEM;
    if (p != NULL) {
        pthread_mutex_lock(&r->w->srv->write_lock);
        rc = cu_audit_append(r->w->store, type, actor, p, NULL);
        pthread_mutex_unlock(&r->w->srv->write_lock);
    }
    free(p);
    if (rc != CU_OK) {
        cu_srv__metrics_store_error();
        cu_srv__lf f[] = {CU_LF_S("reqid", r->id), CU_LF_S("error", cu_err_last()->msg)};
        cu_srv__log(CU_LOG_ERROR, "refusal not written to the audit log", f, 2);
    }
}

void cu_srv__refusal_record(cu_srv__req *r, const char *regid, int status, int code, const char *reason)
{
    char remote[64], id[ID_SHOWN * 4 + 32], why[REASON_SHOWN * 4 + 32], actor[CU_AUDIT_ACTOR_MAX];
    peer(r, remote);
    if (!cu_srv__refusal_note_kind(CU_SRV_REFUSED_DEVICE, remote, code, 0))
        return;
    /* As sent, but printable and bounded: ids that fail the check may hold
     * any byte, and a reason may quote the body. */
    cu_srv__escape(regid ? regid : "", ID_SHOWN, id, sizeof id);
    cu_srv__escape(reason ? reason : "", REASON_SHOWN, why, sizeof why);
    snprintf(actor, sizeof actor, "device:%.150s", id); /* the payload has the rest */
    append(r, "registration.refused", actor,
           json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s}", "registrationId", id, "refusedBy", "custosd",
                     "route", r->route ? r->route : "device", "remote", remote, "httpStatus", status, "errorCode",
                     code, "reason", why, "requestId", r->id));
}

static const char *method_str(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_DELETE: return "DELETE";
    default: return "other"; /* custosd allows no other */
    }
}

void cu_srv__service_refusal_record(cu_srv__req *r, int status, int code, const char *reason)
{
    char remote[64], path[PATH_SHOWN * 4 + 32], why[REASON_SHOWN * 4 + 32], actor[CU_AUDIT_ACTOR_MAX];
    peer(r, remote);
    if (!cu_srv__refusal_note_kind(CU_SRV_REFUSED_SERVICE, remote, code, 0))
        return;
    /* Nobody is authenticated: the address is the actor. The path is as
     * sent (it may hold any byte), bounded; the token is never written. */
    const char *uri = evhttp_request_get_uri(r->req);
    cu_srv__escape(uri ? uri : "", PATH_SHOWN, path, sizeof path);
    cu_srv__escape(reason ? reason : "", REASON_SHOWN, why, sizeof why);
    snprintf(actor, sizeof actor, "remote:%s", remote);
    append(r, "service.refused", actor,
           json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s}", "refusedBy", "custosd", "method",
                     method_str(r->method), "path", path, "remote", remote, "route", "service", "httpStatus",
                     status, "errorCode", code, "reason", why, "requestId", r->id));
}
