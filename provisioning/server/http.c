/* The HTTP layer shared by every route: request parsing (path segments
 * percent-decoded one by one, query, bounded body), replies with the
 * public service's error body, request ids, the access log. */
#include "srv_int.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

bool cu_srv__ieq(const char *a, const char *b) { return a && b && strcasecmp(a, b) == 0; }

void cu_srv__uuid(char out[37])
{
    uint8_t b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        memset(b, 0, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

void cu_srv__sha256_hex(const void *data, size_t len, char out[65])
{
    uint8_t md[32];
    unsigned n = 0;
    static const char HEX[] = "0123456789abcdef";
    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1)
        memset(md, 0, sizeof md);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = HEX[md[i] >> 4];
        out[2 * i + 1] = HEX[md[i] & 15];
    }
    out[64] = 0;
}

void cu_srv__now_iso(char out[40])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%07ldZ", ts.tv_nsec / 100);
}

const char *cu_srv__req_header(cu_srv__req *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

const char *cu_srv__req_query(cu_srv__req *r, const char *name)
{
    return r->query_ok ? evhttp_find_header(&r->query, name) : NULL;
}

bool cu_srv__req_json_type(cu_srv__req *r)
{
    const char *ct = cu_srv__req_header(r, "Content-Type");
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; \t");
    return n == 16 && strncasecmp(ct, "application/json", 16) == 0;
}

/* YYYY-MM-DD with an optional -preview suffix: every dated version the
 * SDKs send (PROTOCOL.md §1.2) and later ones. */
bool cu_srv__api_version_ok(const char *v)
{
    if (v == NULL || strlen(v) < 10)
        return false;
    for (int i = 0; i < 10; i++) {
        bool dash = i == 4 || i == 7;
        if (dash ? v[i] != '-' : (v[i] < '0' || v[i] > '9'))
            return false;
    }
    if (strncmp(v, "2017", 4) < 0)
        return false;
    return v[10] == 0 || strcmp(v + 10, "-preview") == 0;
}

void cu_srv__add_header(cu_srv__req *r, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

static void send_reply(cu_srv__req *r, int status, const char *ctype, const char *data, size_t len)
{
    static const struct {
        int code;
        const char *text;
    } REASONS[] = {{200, "OK"}, {202, "Accepted"}, {204, "No Content"}, {400, "Bad Request"},
                   {401, "Unauthorized"}, {404, "Not Found"}, {405, "Method Not Allowed"}, {409, "Conflict"},
                   {412, "Precondition Failed"}, {413, "Payload Too Large"}, {415, "Unsupported Media Type"},
                   {429, "Too Many Requests"}, {500, "Internal Server Error"}, {503, "Service Unavailable"}};
    const char *reason = "Status";
    for (size_t i = 0; i < sizeof REASONS / sizeof REASONS[0]; i++)
        if (REASONS[i].code == status)
            reason = REASONS[i].text;
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    if (ctype != NULL)
        evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "x-ms-request-id", r->id);
    if (atomic_load(&r->w->srv->stopping))
        evhttp_add_header(h, "Connection", "close");
    struct evbuffer *b = NULL;
    /* HEAD: libevent would send the body, without Content-Length. */
    if (data != NULL && len > 0 && r->method != EVHTTP_REQ_HEAD && (b = evbuffer_new()) != NULL)
        evbuffer_add(b, data, len);
    r->status = status;
    struct evhttp_connection *c = evhttp_request_get_connection(r->req);
    struct bufferevent *bev = c ? evhttp_connection_get_bufferevent(c) : NULL;
    evhttp_send_reply(r->req, status, reason, b);
    if (b != NULL)
        evbuffer_free(b);
    /* evhttp queues the head and the body as two chains, and the TLS
     * bufferevent writes each chain as its own record and syscall (and
     * loopback segment). The write happens on the next loop turn, so one
     * contiguous chain here means one record: ~10% of a keep-alive
     * registration's CPU. Large replies (metrics) stay as they are. */
    if (bev != NULL) {
        struct evbuffer *out = bufferevent_get_output(bev);
        if (evbuffer_get_length(out) <= 16384)
            evbuffer_pullup(out, -1);
    }
}

void cu_srv__reply_json(cu_srv__req *r, int status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(body);
    if (s == NULL) {
        send_reply(r, 500, CU_SRV_JSON_TYPE, "{}", 2);
        return;
    }
    send_reply(r, status, CU_SRV_JSON_TYPE, s, strlen(s));
    free(s);
}

void cu_srv__reply_text(cu_srv__req *r, int status, const char *ctype, const char *text)
{
    send_reply(r, status, ctype, text, text ? strlen(text) : 0);
}

void cu_srv__reply_error(cu_srv__req *r, int status, int code, const char *fmt, ...)
{
    char msg[600], ts[40], cs[16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cu_srv__now_iso(ts);
    snprintf(cs, sizeof cs, "%d", code);
    cu_srv__add_header(r, "x-ms-error-code", cs);
    cu_srv__reply_json(r, status, json_pack("{s:i, s:s, s:s, s:s}", "errorCode", code, "trackingId", r->id,
                                        "message", msg, "timestampUtc", ts));
}

/* Splits the path into percent-decoded segments. A segment that decodes to
 * something holding '/', '\\' or NUL, or to "." / "..", is refused: ids
 * never name paths. */
static int split_path(cu_srv__req *r, const char *path)
{
    if (path == NULL || *path != '/')
        return -1;
    const char *p = path + 1;
    while (*p) {
        size_t n = strcspn(p, "/");
        if (r->nsegs >= CU_MAX_SEGS)
            return -1;
        char *raw = strndup(p, n);
        size_t dlen = 0;
        char *dec = raw ? evhttp_uridecode(raw, 0, &dlen) : NULL;
        free(raw);
        if (dec == NULL)
            return -1;
        r->segs[r->nsegs++] = dec;
        if (dlen != strlen(dec) || strpbrk(dec, "/\\") != NULL || !strcmp(dec, ".") || !strcmp(dec, ".."))
            return -2;
        p += n;
        if (*p == '/') {
            p++;
            if (*p == 0) /* trailing slash: `POST /enrollments/` of the C SDK */
                break;
        }
    }
    return 0;
}

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* A reply is in flight from the handler until libevent has written it
 * (on_complete) or the connection goes away with it unwritten (on_close):
 * libevent frees a request whose client left without reading the reply
 * and never calls its on_complete. A connection carries at most one reply
 * at a time, so the close callback is armed only while one is pending. */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    cu_srv__srv *srv = arg;
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    atomic_fetch_sub(&srv->inflight, 1);
}

static void on_complete(struct evhttp_request *req, void *arg)
{
    cu_srv__srv *srv = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon != NULL)
        evhttp_connection_set_closecb(evcon, NULL, NULL);
    atomic_fetch_sub(&srv->inflight, 1);
    cu_srv__conn_replied(req);
}

/* Whether this worker can reach its store now: on a shared database one
 * round trip (reconnecting if due), which /healthz and /metrics report.
 * The node's gauge takes only answers of the database: a worker that
 * tried less than a second ago repeats its last error without asking,
 * and another worker may have got through since. */
static bool store_probe(cu_srv__req *r, char *why, size_t len)
{
    bool unreachable = false, throttled = false;
    cu_rc rc = cu_srv__worker_ready(r->w, &unreachable, &throttled);
    if (rc == CU_OK)
        rc = cu_store_ping(r->w->store);
    bool up = rc == CU_OK;
    snprintf(why, len, "%.*s", (int)len - 1, up ? "" : cu_err_last()->msg);
    if (!throttled)
        cu_srv__metrics_store_up(up);
    return up;
}

void cu_srv__retry_after(cu_srv__req *r, unsigned seconds)
{
    char v[16];
    snprintf(v, sizeof v, "%u", seconds ? seconds : 1);
    cu_srv__add_header(r, "Retry-After", v);
}

void cu_srv__reply_store_down(cu_srv__req *r)
{
    cu_srv__retry_after(r, r->w->srv->cfg->retry_after);
    cu_srv__reply_error(r, 503, 503000, "service unavailable: the store cannot be reached (tracking id %s)", r->id);
}

static void route(cu_srv__req *r)
{
    char why[300];
    if (r->nsegs == 1 && r->method != EVHTTP_REQ_GET &&
        (!strcmp(r->segs[0], "healthz") || !strcmp(r->segs[0], "metrics"))) {
        r->route = r->segs[0];
        cu_srv__add_header(r, "Allow", "GET");
        cu_srv__reply_error(r, 405, 405000, "method not allowed");
        return;
    }
    if (r->nsegs == 1 && r->method == EVHTTP_REQ_GET && !strcmp(r->segs[0], "healthz")) {
        r->route = "healthz";
        if (atomic_load(&r->w->srv->stopping)) {
            cu_srv__reply_error(r, 503, 503000, "shutting down");
        } else if (store_probe(r, why, sizeof why)) {
            cu_srv__reply_json(r, 200, json_pack("{s:s, s:s}", "status", "ok", "store", "ok"));
        } else {
            /* Still 200: every node shares the database, and a balancer
             * that took them all out would leave devices with refused
             * connections instead of the 503 + Retry-After they retry on. */
            cu_srv__reply_json(r, 200, json_pack("{s:s, s:s, s:s}", "status", "degraded", "store", "unreachable",
                                                 "error", why));
        }
        return;
    }
    if (r->nsegs == 1 && r->method == EVHTTP_REQ_GET && !strcmp(r->segs[0], "metrics")) {
        r->route = "metrics";
        store_probe(r, why, sizeof why);
        char *m = cu_srv__metrics_render();
        if (m == NULL)
            cu_srv__reply_error(r, 500, 500000, "out of memory");
        else
            cu_srv__reply_text(r, 200, "text/plain; version=0.0.4", m);
        free(m);
        return;
    }
    /* A node that started while its database was out has no engine yet. */
    bool unreachable = false, throttled = false;
    if (cu_srv__worker_ready(r->w, &unreachable, &throttled) != CU_OK) {
        r->route = "unavailable";
        cu_srv__metrics_store_error();
        if (unreachable) {
            if (!throttled)
                cu_srv__metrics_store_up(false);
            cu_srv__reply_store_down(r);
        } else {
            cu_srv__lf f[] = {CU_LF_S("reqid", r->id), CU_LF_S("error", cu_err_last()->msg)};
            cu_srv__log(CU_LOG_ERROR, "cannot serve: the state in the store", f, 2);
            cu_srv__reply_error(r, 500, 500000, "internal error (tracking id %s)", r->id);
        }
        return;
    }
    if (cu_srv__device_api(r) || cu_srv__service_api(r))
        return;
    r->route = "unknown";
    cu_srv__reply_error(r, 404, 404000, "no such resource");
}

void cu_srv__http_handle(struct evhttp_request *req, void *arg)
{
    cu_srv__worker *w = arg;
    cu_srv__req r;
    memset(&r, 0, sizeof r);
    r.req = req;
    r.w = w;
    r.mech = -1;
    clock_gettime(CLOCK_MONOTONIC, &r.t0);
    cu_srv__uuid(r.id);
    r.method = evhttp_request_get_command(req);
    cu_srv__conn_request(req);
    atomic_fetch_add(&w->srv->inflight, 1);
    evhttp_request_set_on_complete_cb(req, on_complete, w->srv);
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_close, w->srv);
    cu_srv__metrics_inflight(1);

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t blen = evbuffer_get_length(in);
    int sp;
    TAILQ_INIT(&r.query);
    if (query != NULL)
        r.query_ok = evhttp_parse_query_str(query, &r.query) == 0;
    else
        r.query_ok = true;

    if ((sp = split_path(&r, path)) != 0) {
        r.route = "invalid";
        cu_srv__reply_error(&r, 400, 400000, sp == -2 ? "a path segment is not a valid identifier"
                                                  : "malformed request path");
    } else if (!r.query_ok) {
        r.route = "invalid";
        cu_srv__reply_error(&r, 400, 400000, "malformed query string");
    } else if (blen > w->srv->cfg->max_body) {
        r.route = "invalid";
        cu_srv__reply_error(&r, 413, 413000, "request body larger than %zu bytes", w->srv->cfg->max_body);
    } else if ((r.body = malloc(blen + 1)) == NULL) {
        cu_srv__reply_error(&r, 500, 500000, "out of memory");
    } else {
        evbuffer_remove(in, r.body, blen);
        r.body[blen] = 0;
        r.body_len = blen;
        route(&r);
    }
    if (r.status == 0) /* a route that forgot to answer is a bug, not a hang */
        cu_srv__reply_error(&r, 500, 500000, "no reply");
    cu_srv__metrics_http(r.status);
    cu_srv__metrics_inflight(-1);
    if (cu_srv__log_on(CU_LOG_INFO)) {
        static const char *const M[] = {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH"};
        int mi = 0;
        for (unsigned t = (unsigned)r.method; t > 1; t >>= 1)
            mi++;
        char peer[64] = "";
        struct evhttp_connection *c = evhttp_request_get_connection(req);
        if (c != NULL) {
            char *addr = NULL;
            ev_uint16_t port = 0;
            evhttp_connection_get_peer(c, &addr, &port);
            snprintf(peer, sizeof peer, "%s:%u", addr ? addr : "?", port);
        }
        cu_srv__lf f[] = {CU_LF_S("reqid", r.id), CU_LF_S("method", mi < 9 ? M[mi] : "?"),
                      CU_LF_S("path", path ? path : ""), CU_LF_S("route", r.route ? r.route : ""),
                      CU_LF_N("status", r.status), CU_LF_N("ms", since(&r.t0) * 1000.0),
                      CU_LF_S("peer", peer), CU_LF_N("worker", w->index),
                      /* the Node SDK's own id per request, to correlate */
                      CU_LF_S("clientRequestId", cu_srv__req_header(&r, "Request-Id"))};
        cu_srv__log(CU_LOG_INFO, "request", f, sizeof f / sizeof f[0]);
    }
    for (size_t i = 0; i < r.nsegs; i++)
        free(r.segs[i]);
    evhttp_clear_headers(&r.query);
    free(r.body);
}

double cu_srv__req_elapsed(cu_srv__req *r) { return since(&r->t0); }
