/* Internals shared by the files of libcustos_server (cu_srv__ prefix: never in
 * include/custos/). */
#ifndef CU_SRV_INT_H
#define CU_SRV_INT_H

#include <custos/prov.h>
#include <custos/server.h>
#include <custos/store.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- certs.c ---- */
/* Issues the server certificate for key, signed by the CA, with
 * subjectAltNames for names (DNS or IP). */
cu_rc cu_srv__srv_issue_server_cert(EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key, const char *const *names,
                                size_t n, X509 **_cert);
/* True if cert covers every name. */
bool cu_srv__srv_cert_covers(X509 *cert, const char *const *names, size_t n);

cu_rc cu_srv__state_write_endpoint(cu_srv_state *st, const char *endpoint);
/* True when the store is shared with other nodes (PostgreSQL): no
 * process-wide write lock, limits kept in the database. */
bool cu_srv__state_shared_store(const cu_srv_state *st);
/* Reads (creating if absent, as on a first start) the id scope, the
 * service policy key and the hubs through s, once per process: for a node
 * that started while its database was out. Thread-safe. */
cu_rc cu_srv__state_load(cu_srv_state *st, const cu_srv_config *cfg, cu_store *s);
/* True once they are known (before that, the scope and policy key are empty). */
bool cu_srv__state_loaded(const cu_srv_state *st);

/* ---- log.c ---- */
enum { CU_LOG_ERROR = 0, CU_LOG_WARN = 1, CU_LOG_INFO = 2, CU_LOG_DEBUG = 3 };
typedef struct cu_srv__lf {
    const char *k;
    const char *s;  /* string value, or NULL for the number */
    double n;
} cu_srv__lf;
#define CU_LF_S(k, v) ((cu_srv__lf){(k), cu_srv__nz(v), 0})
static inline const char *cu_srv__nz(const char *s) { return s ? s : ""; }
#define CU_LF_N(k, v) ((cu_srv__lf){(k), NULL, (double)(v)})
cu_rc cu_srv__log_open(const cu_srv_config *cfg);
void cu_srv__log_close(void);
bool cu_srv__log_on(int level);
void cu_srv__log(int level, const char *msg, const cu_srv__lf *f, size_t n);

/* ---- metrics.c ---- */
enum { CU_MECH_X509 = 0, CU_MECH_SYMKEY, CU_MECH_TPM, CU_MECH_NONE, CU_MECH__N };
enum { CU_RES_ASSIGNED = 0, CU_RES_FAILED, CU_RES_REFUSED, CU_RES_INVALID, CU_RES_THROTTLED,
       CU_RES_ERROR, CU_RES__N };
void cu_srv__metrics_registration(int mech, int result, double seconds);
void cu_srv__metrics_http(int status);
void cu_srv__metrics_tls(bool ok);
void cu_srv__metrics_store_error(void);
/* The custos_store_up gauge. */
void cu_srv__metrics_store_up(bool up);
void cu_srv__metrics_keyring_op(void);
void cu_srv__metrics_inflight(int delta);
void cu_srv__metrics_key_use(int which); /* CU_SRV_KEY_* */
/* Prometheus text (caller frees). */
char *cu_srv__metrics_render(void);
/* A keyring that counts the operations of inner (borrowed). */
cu_rc cu_srv__metrics_keyring(cu_keyring *inner, cu_keyring **_out);

/* ---- keyuse.c: the service's own key uses, for the audit log ---- */
enum { CU_SRV_KEY_TLS = 0, CU_SRV_KEY_KEYRING, CU_SRV_KEY_AUDIT, CU_SRV_KEY_POLICY, CU_SRV_KEY__N };
/* custosd counts from here on (the command line's uses of the state are
 * not the service's). */
void cu_srv__keyuse_enable(void);
/* Names the key (a pkcs11: URI, or a file path shown as file:PATH); before
 * the workers start. */
void cu_srv__keyuse_name(int which, const char *spec);
const char *cu_srv__keyuse_get0_name(int which);
/* One use of the key by op ("handshake", "sign", "verify", ...): counted
 * in memory, any thread. */
void cu_srv__keyuse_count(int which, const char *op);
/* Names the keyring key and counts kr's operations as its uses. */
void cu_srv__keyuse_watch_keyring(cu_keyring *kr, const char *spec);
/* "custosd@<host>": the actor of what the service writes on its own. */
const char *cu_srv__self_actor(void);
typedef struct cu_srv__worker cu_srv__worker;
/* Writes the key uses and refusal summaries of the minutes that are over
 * (all: everything counted) through w's store. */
void cu_srv__audit_flush(cu_srv__worker *w, bool all);
/* At shutdown, on worker 0: writes everything and signs the head over it. */
void cu_srv__audit_final(cu_srv__worker *w);
/* Worker 0's timer: cu_srv__audit_flush just after every minute boundary. */
typedef struct cu_srv__minute cu_srv__minute;
cu_rc cu_srv__minute_start(cu_srv__worker *w, cu_srv__minute **_out);
void cu_srv__minute_stop(cu_srv__minute *m);

/* ---- limits.c ---- */
typedef struct cu_srv__limits cu_srv__limits;
cu_rc cu_srv__limits_new(unsigned per_second, unsigned per_device_10s, cu_srv__limits **_out);
void cu_srv__limits_free(cu_srv__limits *l);
/* True when a new registration may start now. */
bool cu_srv__limits_global(cu_srv__limits *l);
/* Counts a request of the device: 0 when it was within the budget, else
 * seconds to wait (and it is not counted). */
unsigned cu_srv__limits_device(cu_srv__limits *l, const char *registration_id);
/* The same for a request whose evidence verified, counted also in s when
 * it is shared by several nodes (so a device gets its budget once, not
 * once per node; NULL: this node's memory only, as when the store keeps
 * no windows or cannot be reached). */
unsigned cu_srv__limits_device_in(cu_srv__limits *l, cu_store *s, const char *registration_id);
/* 0 when the device's budget has room now, else seconds to wait; counts
 * nothing (asked before the evidence is checked). */
unsigned cu_srv__limits_device_wait(cu_srv__limits *l, const char *registration_id);
/* Counts a registration of the device in s's shared window only (NULL:
 * nothing, 0): 0 when it is within the budget, else seconds to wait. */
unsigned cu_srv__limits_shared_take(cu_srv__limits *l, cu_store *s, const char *registration_id);
/* Takes back what cu_srv__limits_shared_take counted, for a registration
 * the engine refused. */
void cu_srv__limits_shared_refund(cu_srv__limits *l, cu_store *s, const char *registration_id);

/* ---- ops.c: operations, kept in the store (one per device) ---- */
typedef struct cu_srv__op {
    char op_id[96];
    char registration_id[129];
    char attestation[16]; /* x509 | symmetricKey */
    char leaf[65];        /* X.509: SHA-256 of the leaf that registered */
    char auth[65];        /* SAS: SHA-256 of the Authorization value */
    char etag[48];        /* the record's etag when written */
    char *reply;          /* the final answer, rendered (heap); NULL: an operation of before 2026-11-28 */
    char *tpm_auth;       /* ... which kept only the TPM's second activation (heap) or NULL */
} cu_srv__op;
void cu_srv__op_clear(cu_srv__op *op);
void cu_srv__op_new_id(const char *registration_id, char out[96]);
cu_rc cu_srv__op_put(cu_store *s, const cu_srv__op *op);
cu_rc cu_srv__op_get(cu_store *s, const char *registration_id, cu_srv__op *_op);

/* ---- server.c: workers ---- */
typedef struct cu_srv__srv cu_srv__srv;

/* ---- checkpoint.c ---- */
typedef struct cu_srv__ckpt cu_srv__ckpt;
/* Opens a connection of its own to the store and copies the SQLite log
 * back when a commit calls for it (cu_srv__ckpt_due, arg: the
 * checkpointer), else every second, until stopped (then once more). */
cu_rc cu_srv__ckpt_start(cu_srv__srv *srv, cu_srv__ckpt **_c);
void cu_srv__ckpt_due(void *arg);
void cu_srv__ckpt_stop(cu_srv__ckpt *c);

struct cu_srv__worker {
    cu_srv__srv *srv;
    unsigned index;
    struct event_base *base;
    struct evhttp *http;
    cu_store *store;
    cu_prov *prov;
    pthread_t thread;
};

/* The connection deadline (server.c): the request of req is complete
 * (the deadline stops), its reply is written (the next request has
 * `timeout` again). */
void cu_srv__conn_request(struct evhttp_request *req);
void cu_srv__conn_replied(struct evhttp_request *req);

/* Makes w's store connection and engine if it has none yet (a node that
 * started while its database was out): CU_OK when w can serve; else
 * *_unreachable says whether the database is out (503) or something else
 * failed. At most one attempt a second: in between, the last attempt's
 * error again, and *_throttled (may be NULL) says so. */
cu_rc cu_srv__worker_ready(cu_srv__worker *w, bool *_unreachable, bool *_throttled);

struct cu_srv__srv {
    const cu_srv_config *cfg;
    cu_srv_state *st;
    SSL_CTX *ssl;
    cu_srv__limits *limits;
    unsigned n_workers;
    atomic_bool stopping;
    atomic_int inflight;
    /* SQLite takes one writer at a time and makes the others sleep-poll
     * (busy timeout): taking turns here instead keeps latency flat. It
     * also guards dev_store; recursive, as an audit append for a refusal
     * may come from within. */
    pthread_mutex_t write_lock;
    /* SQLite: the device API's connection and engine, one for all the
     * workers, used under write_lock. With a connection each, every commit
     * of one worker made SQLite drop the other's page cache (23 page reads
     * more per registration). NULL on a shared database (PostgreSQL),
     * where each worker uses its own. */
    cu_store *dev_store;
    cu_prov *dev_prov;
    EVP_PKEY *dev_audit_key;
    /* SQLite: copies the log back; every connection defers to it. */
    cu_srv__ckpt *ckpt;
};

/* ---- tls.c ---- */
cu_rc cu_srv__tls_ctx_new(cu_srv_state *st, unsigned tickets, SSL_CTX **_out);
/* The TLS connection a request arrived on (NULL if none). */
SSL *cu_srv__tls_of(struct evhttp_request *req);

/* ---- http.c: request context and replies ---- */
#define CU_MAX_SEGS 8
typedef struct cu_srv__req {
    struct evhttp_request *req;
    cu_srv__worker *w;
    char id[40];          /* request id (x-ms-request-id, trackingId) */
    struct timespec t0;
    enum evhttp_cmd_type method;
    char *segs[CU_MAX_SEGS];
    size_t nsegs;
    struct evkeyvalq query;
    bool query_ok;
    char *body;           /* NUL-terminated copy */
    size_t body_len;
    int status;
    int mech;             /* CU_MECH_* for registration metrics, or -1 */
    const char *actor;    /* device API: who its writes are recorded for */
    const char *route;    /* for the log */
} cu_srv__req;

const char *cu_srv__req_header(cu_srv__req *r, const char *name);
const char *cu_srv__req_query(cu_srv__req *r, const char *name);
/* True if the body's Content-Type is application/json (params allowed). */
bool cu_srv__req_json_type(cu_srv__req *r);
bool cu_srv__api_version_ok(const char *v);
#define CU_SRV_JSON_TYPE "application/json; charset=utf-8"
void cu_srv__reply_json(cu_srv__req *r, int status, json_t *body);
void cu_srv__reply_text(cu_srv__req *r, int status, const char *ctype, const char *text);
void cu_srv__reply_error(cu_srv__req *r, int status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void cu_srv__add_header(cu_srv__req *r, const char *name, const char *value);
/* Retry-After: seconds (at least 1). */
void cu_srv__retry_after(cu_srv__req *r, unsigned seconds);
/* The answer while the store cannot be reached: 503 with the configured
 * Retry-After (the client retries; the node reconnects by itself). */
void cu_srv__reply_store_down(cu_srv__req *r);
/* "2022-08-31T22:02:50.5163352Z" now. */
void cu_srv__now_iso(char out[40]);
bool cu_srv__ieq(const char *a, const char *b);
void cu_srv__uuid(char out[37]);
void cu_srv__sha256_hex(const void *data, size_t len, char out[65]);

void cu_srv__http_handle(struct evhttp_request *req, void *worker);
double cu_srv__req_elapsed(cu_srv__req *r);

/* ---- routes ---- */
/* Return true when the route was theirs (a reply was sent). */
bool cu_srv__device_api(cu_srv__req *r);
bool cu_srv__service_api(cu_srv__req *r);

/* ---- refusals.c: device requests refused before the engine decides ---- */
/* Replied already; audits it, bounded per remote address and minute. */
void cu_srv__refusal_record(cu_srv__req *r, const char *regid, int status, int code, const char *reason);
/* The same for a service-API request whose authentication failed
 * ("service.refused", bounded apart from the device refusals). */
void cu_srv__service_refusal_record(cu_srv__req *r, int status, int code, const char *reason);
enum { CU_SRV_REFUSED_DEVICE, CU_SRV_REFUSED_SERVICE, CU_SRV_REFUSED__N };
/* The bound: true when this refusal gets a record of its own, false when
 * it is only counted for the minute's summary. now 0: the clock.
 * cu_srv__refusal_note is the device kind's. */
bool cu_srv__refusal_note(const char *remote, int code, time_t now);
bool cu_srv__refusal_note_kind(int kind, const char *remote, int code, time_t now);
/* Writes the summaries of the minutes that are over (all: the current one
 * too). */
cu_rc cu_srv__refusals_flush(cu_store *s, bool all);
void cu_srv__refusals_reset(void); /* tests */
/* in, printable and bounded: at most shown bytes, others as \xNN, then
 * "...(N bytes)" when cut. */
void cu_srv__escape(const char *in, size_t shown, char *out, size_t size);

/* ---- service_sas.c ---- */
/* Verifies a service SAS (sr = host or host/path, skn = the policy),
 * expired skew seconds ago at most (sas-skew, as for devices). */
cu_rc cu_srv__service_sas_check(cu_srv_state *st, const char *authz, unsigned skew, char *why, size_t why_len);
/* Called once per check that gets as far as the policy key (keyuse.c
 * counts it; a pointer, so that the parser stands alone in its fuzzer). */
extern void (*cu_srv__service_sas_key_used)(void);

#endif
