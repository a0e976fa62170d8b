/* custosd's workers. One event base per thread, each with its own evhttp,
 * its own store connection (SQLite WAL lets them read in parallel and
 * serialises writers) and its own engine; one SO_REUSEPORT listening
 * socket per worker and address so the kernel spreads connections. Nothing
 * is shared between workers but the SSL_CTX, the keyring, the rate limits
 * and the metrics, all thread-safe. Handlers run to completion on their
 * thread (the engine is synchronous), so "work in flight" at shutdown is
 * only replies being written: SIGTERM closes the listeners, lets those
 * finish (bounded by shutdown-grace), then stops. */
#include "srv_int.h"

#include <custos/audit.h>
#include <custos/keyring.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct wctx {
    cu_srv__worker w; /* first: cu_srv__worker_ready casts back */
    EVP_PKEY *audit_key;     /* until the store is ready */
    time_t next_try;         /* the store unreachable: the next attempt to open it */
    char why[256];           /* ... and why the last one failed */
    struct event *stop_ev;
    struct event *drain_ev;
    struct event *audit_ev;  /* worker 0: signs the audit head when due */
    cu_srv__minute *minute;  /* worker 0: writes key uses and refusal summaries each minute */
    struct evhttp_bound_socket *bound[CU_SRV_MAX_LISTEN];
    size_t n_bound;
    struct timespec deadline;
} wctx;

/* A connection's deadline: evhttp's timeout only fires when the client
 * goes quiet, so a client trickling a byte a second held a connection for
 * ever. From accept (TLS handshake included) and again from each reply
 * written, the next request must be complete within `timeout`, or the
 * socket is shut down (libevent then sees the end and frees the
 * connection). Kept with the SSL, which is freed with the connection. */
typedef struct conn {
    struct event *deadline;
    SSL *ssl;
    struct timeval timeout;
    bool cut;     /* the deadline passed */
    bool replied; /* the last request's reply was written */
} conn;

static int conn_idx = -1;
static pthread_once_t conn_once = PTHREAD_ONCE_INIT;

static void conn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    conn *k = ptr;
    if (k == NULL)
        return;
    /* libevent frees the SSL without a TLS shutdown, and OpenSSL then
     * drops the session from the cache (called before it does so): a
     * connection that ended after a reply, not at the deadline, counts
     * as shut down, so that the client resumes for its poll. TLS errors
     * have removed the session already. */
    if (k->replied && !k->cut)
        SSL_set_shutdown(parent, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    event_free(k->deadline);
    free(k);
}

static void conn_init(void)
{
    conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_free);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *k = arg;
    int s = SSL_get_fd(k->ssl);
    k->cut = true;
    if (s >= 0)
        shutdown(s, SHUT_RDWR);
}

static conn *conn_of(struct evhttp_request *req)
{
    SSL *ssl = cu_srv__tls_of(req);
    return ssl != NULL && conn_idx >= 0 ? SSL_get_ex_data(ssl, conn_idx) : NULL;
}

void cu_srv__conn_request(struct evhttp_request *req)
{
    conn *k = conn_of(req);
    if (k != NULL) {
        event_del(k->deadline);
        k->replied = false;
    }
}

void cu_srv__conn_replied(struct evhttp_request *req)
{
    conn *k = conn_of(req);
    if (k != NULL && !k->cut) {
        k->replied = true;
        event_add(k->deadline, &k->timeout);
    }
}

static struct bufferevent *bevcb(struct event_base *base, void *arg)
{
    wctx *c = arg;
    SSL *ssl = SSL_new(c->w.srv->ssl);
    conn *k = calloc(1, sizeof *k);
    if (ssl == NULL || k == NULL || (k->deadline = evtimer_new(base, deadline_cb, k)) == NULL ||
        SSL_set_ex_data(ssl, conn_idx, k) != 1) {
        if (k != NULL && k->deadline != NULL)
            event_free(k->deadline);
        free(k);
        SSL_free(ssl);
        return NULL;
    }
    k->ssl = ssl;
    k->timeout.tv_sec = (time_t)c->w.srv->cfg->timeout;
    event_add(k->deadline, &k->timeout);
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

/* ADDR:PORT, [V6]:PORT. port 0 asks the kernel (tests), then *port says
 * which. */
static int bind_one(const char *spec, unsigned *port, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    size_t hl = (size_t)(colon - spec);
    if (hl >= sizeof host) {
        snprintf(err, errlen, "%s: address too long", spec);
        return -1;
    }
    memcpy(host, spec, hl);
    host[hl] = 0;
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = 0;
    }
    char ps[16];
    snprintf(ps, sizeof ps, "%u", *port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int g = getaddrinfo(host, ps, &hints, &ai);
    if (g != 0) {
        snprintf(err, errlen, "%s: %s", spec, gai_strerror(g));
        return -1;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        /* Accepted sockets inherit it: replies leave in one go instead of
         * waiting for the client's delayed ACK (40 ms per request). */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (*port == 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wctx *c = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    bool late = now.tv_sec > c->deadline.tv_sec ||
                (now.tv_sec == c->deadline.tv_sec && now.tv_nsec >= c->deadline.tv_nsec);
    if (atomic_load(&c->w.srv->inflight) <= 0 || late) {
        struct timeval tv = {0, 50000}; /* lets the last reply leave the socket */
        event_base_loopexit(c->w.base, &tv);
        return;
    }
    struct timeval again = {0, 50000};
    evtimer_add(c->drain_ev, &again);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wctx *c = arg;
    for (size_t i = 0; i < c->n_bound; i++)
        evhttp_del_accept_socket(c->w.http, c->bound[i]);
    c->n_bound = 0;
    clock_gettime(CLOCK_MONOTONIC, &c->deadline);
    c->deadline.tv_sec += c->w.srv->cfg->shutdown_grace;
    drain_cb(-1, 0, c);
}

static void *worker_main(void *arg)
{
    wctx *c = arg;
    event_base_dispatch(c->w.base);
    return NULL;
}

static void log_audit_error(const char *what)
{
    cu_srv__lf f[] = {CU_LF_S("error", cu_err_last()->msg)};
    cu_srv__log(CU_LOG_ERROR, what, f, 1);
}

/* A quiet service still signs what it recorded: a deleted tail is then
 * detected against the last signed head. */
static void audit_cb(evutil_socket_t fd, short what, void *arg)
{
    wctx *c = arg;
    (void)fd;
    (void)what;
    if (cu_audit_sign_if_due(c->w.store) != CU_OK)
        log_audit_error("audit head not signed");
}

static void worker_free(wctx *c)
{
    /* Write what was counted and sign the head on the way out, so the last
     * records are covered. */
    if (c->audit_ev != NULL && c->w.store != NULL)
        cu_srv__audit_final(&c->w);
    cu_srv__minute_stop(c->minute);
    if (c->audit_ev)
        event_free(c->audit_ev);
    if (c->stop_ev)
        event_free(c->stop_ev);
    if (c->drain_ev)
        event_free(c->drain_ev);
    if (c->w.http)
        evhttp_free(c->w.http);
    if (c->w.base)
        event_base_free(c->w.base);
    cu_prov_free(c->w.prov);
    cu_store_close(c->w.store);
    EVP_PKEY_free(c->audit_key);
}

/* The part of a worker that needs the store: its connection, the state
 * kept there (once per process), the audit signer and the engine. */
static cu_rc worker_connect(wctx *c)
{
    cu_srv__srv *srv = c->w.srv;
    const cu_srv_config *cfg = srv->cfg;
    cu_rc rc;
    if (c->w.store == NULL && (rc = cu_srv_state_store_open(srv->st, &c->w.store)) != CU_OK)
        return rc;
    if (srv->ckpt != NULL && (rc = cu_store_wal_defer(c->w.store, cu_srv__ckpt_due, srv->ckpt)) != CU_OK)
        return rc;
    if ((rc = cu_srv__state_load(srv->st, cfg, c->w.store)) != CU_OK)
        return rc;
    /* Every worker signs the chain head every N records or S seconds (the
     * appends are serialized by the store); worker 0 also on a timer. */
    if ((rc = cu_audit_set_signer(c->w.store, c->audit_key, cfg->audit_sign_every, cfg->audit_sign_seconds)) !=
            CU_OK ||
        (rc = cu_audit_set_signer_name(c->w.store, cu_srv__keyuse_get0_name(CU_SRV_KEY_AUDIT))) != CU_OK ||
        (rc = cu_store_set_actor(c->w.store, cu_srv__self_actor())) != CU_OK)
        return rc;
    if (c->w.index == 0 && c->minute == NULL && (rc = cu_srv__minute_start(&c->w, &c->minute)) != CU_OK)
        return rc;
    if (c->w.index == 0 && c->audit_ev == NULL) {
        struct timeval every = {(time_t)(cfg->audit_sign_seconds > 1 ? cfg->audit_sign_seconds / 2 : 1), 0};
        if ((c->audit_ev = event_new(c->w.base, -1, EV_PERSIST, audit_cb, c)) == NULL ||
            event_add(c->audit_ev, &every) != 0)
            return cu_err_set(CU_E_NOMEM, "cannot create the audit timer");
    }
    cu_prov_config pc = {.id_scope = cu_srv_state_id_scope(srv->st), .sas_skew = cfg->sas_skew};
    return cu_prov_new(c->w.store, &pc, &c->w.prov);
}

/* SQLite: the device API's one connection and engine (srv_int.h), set up
 * as a worker's is; the state is loaded already. */
static cu_rc dev_connect(cu_srv__srv *srv)
{
    const cu_srv_config *cfg = srv->cfg;
    cu_rc rc;
    if ((rc = cu_srv_state_store_open(srv->st, &srv->dev_store)) != CU_OK ||
        (rc = cu_store_wal_defer(srv->dev_store, cu_srv__ckpt_due, srv->ckpt)) != CU_OK ||
        (rc = cu_keyring_load_key(cu_srv_state_audit_key_spec(srv->st), NULL, true, &srv->dev_audit_key)) != CU_OK ||
        (rc = cu_audit_set_signer(srv->dev_store, srv->dev_audit_key, cfg->audit_sign_every,
                                  cfg->audit_sign_seconds)) != CU_OK ||
        (rc = cu_audit_set_signer_name(srv->dev_store, cu_srv__keyuse_get0_name(CU_SRV_KEY_AUDIT))) != CU_OK ||
        (rc = cu_store_set_actor(srv->dev_store, cu_srv__self_actor())) != CU_OK)
        return rc;
    cu_prov_config pc = {.id_scope = cu_srv_state_id_scope(srv->st), .sas_skew = cfg->sas_skew};
    return cu_prov_new(srv->dev_store, &pc, &srv->dev_prov);
}

cu_rc cu_srv__worker_ready(cu_srv__worker *w, bool *_unreachable, bool *_throttled)
{
    wctx *c = (wctx *)w;
    *_unreachable = false;
    if (_throttled != NULL)
        *_throttled = false;
    if (w->prov != NULL)
        return CU_OK;
    /* At most one attempt a second per worker: an outage costs each
     * request a refusal, not a connect. */
    time_t now = time(NULL);
    if (now < c->next_try) {
        *_unreachable = true;
        if (_throttled != NULL)
            *_throttled = true;
        return cu_err_set(CU_E_IO, "%s", c->why);
    }
    c->next_try = now + 1;
    cu_rc rc = worker_connect(c);
    if (rc == CU_OK) {
        if (c->why[0] != 0) {
            cu_srv__lf f[] = {CU_LF_N("worker", w->index), CU_LF_S("idScope", cu_srv_state_id_scope(w->srv->st))};
            cu_srv__log(CU_LOG_WARN, "store reachable: serving", f, 2);
        }
        c->why[0] = 0;
        return CU_OK;
    }
    *_unreachable = rc == CU_E_IO && cu_store_last_http_status() == 503;
    if (*_unreachable)
        snprintf(c->why, sizeof c->why, "%.255s", cu_err_last()->msg);
    /* A half-made engine is made again whole on the next attempt. */
    cu_prov_free(w->prov);
    w->prov = NULL;
    return rc;
}

/* epoll's interest changes batched per loop turn: a request turns a
 * connection's events on and off several times (4 epoll_ctl calls a
 * request without this). */
static struct event_base *new_base(void)
{
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return NULL;
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *b = event_base_new_with_config(ec);
    event_config_free(ec);
    return b;
}

static cu_rc worker_init(wctx *c, cu_srv__srv *srv, unsigned index)
{
    const cu_srv_config *cfg = srv->cfg;
    cu_rc rc;
    c->w.srv = srv;
    c->w.index = index;
    if ((c->w.base = new_base()) == NULL || (c->w.http = evhttp_new(c->w.base)) == NULL ||
        (c->stop_ev = event_new(c->w.base, -1, 0, stop_cb, c)) == NULL ||
        (c->drain_ev = evtimer_new(c->w.base, drain_cb, c)) == NULL)
        return cu_err_set(CU_E_NOMEM, "cannot create an event loop");
    evhttp_set_bevcb(c->w.http, bevcb, c);
    evhttp_set_gencb(c->w.http, cu_srv__http_handle, &c->w);
    evhttp_set_max_body_size(c->w.http, (ev_ssize_t)cfg->max_body * 4);
    evhttp_set_max_headers_size(c->w.http, (ev_ssize_t)cfg->max_headers);
    evhttp_set_timeout(c->w.http, (int)cfg->timeout);
    /* The methods no resource takes come to the routes too, which answer
     * 405 with Allow; libevent would answer 501 without it. */
    evhttp_set_allowed_methods(c->w.http, EVHTTP_REQ_GET | EVHTTP_REQ_PUT | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    if ((rc = cu_keyring_load_key(cu_srv_state_audit_key_spec(srv->st), NULL, true, &c->audit_key)) != CU_OK)
        return rc;
    cu_srv__keyuse_name(CU_SRV_KEY_AUDIT, cu_srv_state_audit_key_spec(srv->st));
    bool unreachable = false;
    if ((rc = cu_srv__worker_ready(&c->w, &unreachable, NULL)) == CU_OK)
        return CU_OK;
    /* A shared database that is out: serve 503s until it answers. */
    if (!unreachable)
        return rc;
    c->next_try = 0;
    cu_err_clear();
    return CU_OK;
}

cu_rc cu_srv_run(const cu_srv_config *cfg, cu_srv_state *st)
{
    cu_srv__srv srv;
    wctx *ctx = NULL;
    unsigned n = cfg->workers;
    unsigned ports[CU_SRV_MAX_LISTEN] = {0};
    const char *deflisten = "127.0.0.1:8443";
    const char *const *listen = cfg->n_listen ? (const char *const *)cfg->listen : &deflisten;
    size_t nl = cfg->n_listen ? cfg->n_listen : 1;
    sigset_t sigs, old;
    bool sigs_blocked = false;
    unsigned started = 0;
    cu_rc rc;
    char err[700];

    memset(&srv, 0, sizeof srv);
    srv.cfg = cfg;
    srv.st = st;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&srv.write_lock, &ma);
    pthread_mutexattr_destroy(&ma);
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (unsigned)cpus : 1;
    }
    if (evthread_use_pthreads() != 0)
        return cu_err_set(CU_E_STATE, "libevent threads unavailable");
    pthread_once(&conn_once, conn_init);
    if (conn_idx < 0)
        return cu_err_set(CU_E_NOMEM, "cannot keep connection state");
    signal(SIGPIPE, SIG_IGN);
    if ((rc = cu_srv__tls_ctx_new(st, cfg->tls_tickets, &srv.ssl)) != CU_OK)
        goto cleanup;
    if ((rc = cu_srv__limits_new(cfg->rate_global, cfg->rate_device, &srv.limits)) != CU_OK)
        goto cleanup;
    if ((ctx = calloc(n, sizeof *ctx)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    for (size_t a = 0; a < nl; a++) {
        const char *colon = strrchr(listen[a], ':');
        ports[a] = (unsigned)atoi(colon ? colon + 1 : "0");
    }
    /* A database of the node's own: its log is copied back off the
     * request path (checkpoint.c). */
    if (!cu_srv__state_shared_store(st) && (rc = cu_srv__ckpt_start(&srv, &srv.ckpt)) != CU_OK)
        goto cleanup;
    for (unsigned i = 0; i < n; i++) {
        if ((rc = worker_init(&ctx[i], &srv, i)) != CU_OK)
            goto cleanup;
        for (size_t a = 0; a < nl; a++) {
            char spec[300];
            const char *colon = strrchr(listen[a], ':');
            snprintf(spec, sizeof spec, "%.*s:%u", (int)(colon - listen[a]), listen[a], ports[a]);
            int fd = bind_one(spec, &ports[a], err, sizeof err);
            if (fd < 0) {
                rc = cu_err_set(CU_E_IO, "%s", err);
                goto cleanup;
            }
            struct evhttp_bound_socket *b = evhttp_accept_socket_with_handle(ctx[i].w.http, fd);
            if (b == NULL) {
                close(fd);
                rc = cu_err_set(CU_E_IO, "cannot accept on %s", spec);
                goto cleanup;
            }
            ctx[i].bound[ctx[i].n_bound++] = b;
        }
    }
    if (!cu_srv__state_shared_store(st) && (rc = dev_connect(&srv)) != CU_OK)
        goto cleanup;
    srv.n_workers = n;
    /* Endpoint for `custos service info`, and say where we serve. */
    {
        char ep[300];
        snprintf(ep, sizeof ep, "https://%s:%u", cu_srv_state_host(st), ports[0]);
        cu_srv__state_write_endpoint(st, ep);
        for (size_t a = 0; a < nl; a++) {
            char addr[300];
            const char *colon = strrchr(listen[a], ':');
            snprintf(addr, sizeof addr, "https://%.*s:%u", (int)(colon - listen[a]), listen[a], ports[a]);
            cu_srv__lf f[] = {CU_LF_S("url", addr), CU_LF_S("idScope", cu_srv_state_id_scope(st)),
                          CU_LF_S("state", cu_srv_state_dir(st)), CU_LF_N("workers", n),
                          CU_LF_S("ca", cu_srv_state_ca_file(st))};
            cu_srv__log(CU_LOG_WARN, "custosd serving", f, 5);
        }
        if (!cu_srv__state_loaded(st)) {
            cu_srv__lf f[] = {CU_LF_S("error", ctx[0].why)};
            cu_srv__log(CU_LOG_WARN, "store unreachable at start: 503 until it answers", f, 1);
        }
    }
    /* Signals go to the main thread only. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    sigs_blocked = true;
    for (; started < n; started++)
        if (pthread_create(&ctx[started].w.thread, NULL, worker_main, &ctx[started]) != 0) {
            rc = cu_err_set_sys(CU_E_IO, errno, "cannot start a worker thread");
            break;
        }
    if (rc == CU_OK) {
        int sig = 0;
        sigwait(&sigs, &sig);
        cu_srv__lf f[] = {CU_LF_S("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"),
                      CU_LF_N("inFlight", atomic_load(&srv.inflight))};
        cu_srv__log(CU_LOG_WARN, "custosd stopping", f, 2);
    }
    atomic_store(&srv.stopping, true);
    for (unsigned i = 0; i < started; i++)
        event_active(ctx[i].stop_ev, 0, 0);
    for (unsigned i = 0; i < started; i++)
        pthread_join(ctx[i].w.thread, NULL);
    if (rc == CU_OK) {
        cu_srv__lf f[] = {CU_LF_N("unfinished", atomic_load(&srv.inflight))};
        cu_srv__log(CU_LOG_WARN, "custosd stopped", f, 1);
    }
cleanup:
    if (sigs_blocked)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    for (unsigned i = 0; ctx != NULL && i < n; i++)
        worker_free(&ctx[i]);
    free(ctx);
    cu_prov_free(srv.dev_prov);
    cu_store_close(srv.dev_store);
    EVP_PKEY_free(srv.dev_audit_key);
    cu_srv__ckpt_stop(srv.ckpt);
    cu_srv__limits_free(srv.limits);
    SSL_CTX_free(srv.ssl);
    pthread_mutex_destroy(&srv.write_lock);
    return rc;
}
