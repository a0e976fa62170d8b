/* The registration load generator (see custos/load.h). Each client thread
 * runs its share of devices in turn: PUT register, then (202) GET the
 * operation at once — the generator ignores Retry-After to measure the
 * service, not the wait. */
#include <custos/load.h>
#include <custos/pki.h>
#include <custos/sas.h>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RESP_MAX (64 * 1024)

typedef struct shared {
    const cu_load_config *cfg;
    SSL_CTX *ctx;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    X509 **certs;          /* X.509: per device */
    EVP_PKEY **keys;
    atomic_size_t next;    /* next device index */
    atomic_size_t assigned, refused, failed, errors, retries, handshakes;
    double *lat_ms;        /* per device */
    pthread_mutex_t out_lock;
    pthread_mutex_t err_lock;
    char first_error[256];
    double deadline;
} shared;

typedef struct conn {
    int fd;
    SSL *ssl;
    char buf[RESP_MAX + 1];
    size_t have;
} conn;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* This process's CPU so far: the generator shares the cores with the
 * service, so what it costs is part of any rate measured here. */
static double cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void note_error(shared *sh, const char *fmt, const char *detail)
{
    pthread_mutex_lock(&sh->err_lock);
    if (sh->first_error[0] == 0)
        snprintf(sh->first_error, sizeof sh->first_error, fmt, detail);
    pthread_mutex_unlock(&sh->err_lock);
}

static void conn_close(conn *c)
{
    if (c->ssl != NULL) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    c->ssl = NULL;
    c->fd = -1;
    c->have = 0;
}

static bool conn_open(shared *sh, conn *c, size_t dev)
{
    int one = 1;
    c->fd = socket(sh->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sh->addr, sh->addrlen) != 0) {
        note_error(sh, "connect: %s", strerror(errno));
        conn_close(c);
        return false;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->ssl = SSL_new(sh->ctx);
    if (c->ssl == NULL)
        goto fail;
    SSL_set_tlsext_host_name(c->ssl, sh->cfg->host);
    SSL_set1_host(c->ssl, sh->cfg->host);
    if (sh->cfg->mode == CU_LOAD_X509 &&
        (SSL_use_certificate(c->ssl, sh->certs[dev]) != 1 || SSL_use_PrivateKey(c->ssl, sh->keys[dev]) != 1))
        goto fail;
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_connect(c->ssl) != 1)
        goto fail;
    atomic_fetch_add(&sh->handshakes, 1);
    return true;
fail:;
    char e[160];
    ERR_error_string_n(ERR_get_error(), e, sizeof e);
    ERR_clear_error();
    note_error(sh, "TLS: %s", e);
    conn_close(c);
    return false;
}

/* Sends one request and reads the answer: status, body, Connection: close. */
static int exchange(conn *c, const char *req, size_t rlen, const char **_body, bool *_close)
{
    size_t off = 0;
    while (off < rlen) {
        int w = SSL_write(c->ssl, req + off, (int)(rlen - off));
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    c->have = 0;
    char *hend = NULL;
    for (;;) {
        c->buf[c->have] = 0;
        if ((hend = strstr(c->buf, "\r\n\r\n")) != NULL)
            break;
        if (c->have >= RESP_MAX)
            return -1;
        int n = SSL_read(c->ssl, c->buf + c->have, (int)(RESP_MAX - c->have));
        if (n <= 0)
            return -1;
        c->have += (size_t)n;
    }
    int status = 0;
    if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    size_t hlen = (size_t)(hend + 4 - c->buf), clen = 0;
    *_close = false;
    for (char *l = strstr(c->buf, "\r\n") + 2; l < hend; l = strstr(l, "\r\n") + 2) {
        if (strncasecmp(l, "Content-Length:", 15) == 0)
            clen = (size_t)strtoul(l + 15, NULL, 10);
        else if (strncasecmp(l, "Connection:", 11) == 0 && strcasestr(l, "close") != NULL && strcasestr(l, "close") < strstr(l, "\r\n"))
            *_close = true;
    }
    if (hlen + clen > RESP_MAX)
        return -1;
    while (c->have < hlen + clen) {
        int n = SSL_read(c->ssl, c->buf + c->have, (int)(hlen + clen - c->have));
        if (n <= 0)
            return -1;
        c->have += (size_t)n;
    }
    c->buf[hlen + clen] = 0;
    *_body = c->buf + hlen;
    return status;
}

static bool field(const char *body, const char *key, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(body, pat);
    if (p == NULL)
        return false;
    p += strlen(pat);
    size_t l = strcspn(p, "\"");
    snprintf(out, n, "%.*s", (int)(l < n - 1 ? l : n - 1), p);
    return true;
}

typedef enum { R_ASSIGNED, R_REFUSED, R_FAILED, R_TRANSPORT, R_PROTOCOL } outcome;

static outcome register_one(shared *sh, conn *c, size_t dev, const char *regid)
{
    const cu_load_config *cfg = sh->cfg;
    char *token = NULL, req[4096], status[32], opid[128];
    const char *body = NULL;
    bool close_after = false;
    outcome o = R_PROTOCOL;
    int st;

    if (c->ssl == NULL && !conn_open(sh, c, dev))
        return R_TRANSPORT;
    if (cfg->mode == CU_LOAD_SYMKEY) {
        uint8_t dk[32];
        if (cu_sas_derive_key(cfg->group_key, cfg->group_key_len, regid, dk) != CU_OK ||
            cu_sas_sign(dk, sizeof dk, cfg->id_scope, regid, (uint64_t)time(NULL) + 3600, "registration", &token) != CU_OK)
            return R_PROTOCOL;
    }
    char jb[200];
    int bl = snprintf(jb, sizeof jb, "{\"registrationId\":\"%s\"}", regid);
    int rl = snprintf(req, sizeof req,
                      "PUT /%s/registrations/%s/register?api-version=2021-06-01 HTTP/1.1\r\nHost: %s:%u\r\n"
                      "Accept: application/json\r\nContent-Type: application/json; charset=utf-8\r\n"
                      "UserAgent: custos-bench/0.1\r\n%s%s%sContent-Length: %d\r\n\r\n%s",
                      cfg->id_scope, regid, cfg->host, cfg->port, token ? "Authorization: " : "", token ? token : "",
                      token ? "\r\n" : "", bl, jb);
    st = exchange(c, req, (size_t)rl, &body, &close_after);
    if (st < 0) {
        o = R_TRANSPORT;
        goto out;
    }
    for (int polls = 0; polls < 50; polls++) {
        status[0] = 0;
        field(body, "status", status, sizeof status);
        if (st == 401 || st == 403 || st == 404) {
            o = R_REFUSED;
            goto out;
        }
        if (st == 429 || st >= 500) {
            o = R_TRANSPORT; /* transient: retried when asked to */
            goto out;
        }
        if ((st != 200 && st != 202) || status[0] == 0)
            goto out;
        if (!strcmp(status, "assigned")) {
            o = R_ASSIGNED;
            goto out;
        }
        if (!strcmp(status, "failed")) {
            o = R_FAILED;
            goto out;
        }
        if (strcmp(status, "assigning") != 0 || !field(body, "operationId", opid, sizeof opid))
            goto out;
        if (close_after) {
            conn_close(c);
            if (!conn_open(sh, c, dev)) {
                o = R_TRANSPORT;
                goto out;
            }
        }
        rl = snprintf(req, sizeof req,
                      "GET /%s/registrations/%s/operations/%s?api-version=2021-06-01 HTTP/1.1\r\nHost: %s:%u\r\n"
                      "Accept: application/json\r\nUserAgent: custos-bench/0.1\r\n%s%s%s\r\n",
                      cfg->id_scope, regid, opid, cfg->host, cfg->port, token ? "Authorization: " : "",
                      token ? token : "", token ? "\r\n" : "");
        if ((st = exchange(c, req, (size_t)rl, &body, &close_after)) < 0) {
            o = R_TRANSPORT;
            goto out;
        }
    }
out:
    if (o == R_PROTOCOL && body != NULL)
        note_error(sh, "unexpected answer: %.200s", body);
    if (o == R_TRANSPORT || close_after || cfg->mode == CU_LOAD_X509)
        conn_close(c);
    free(token);
    return o;
}

static void *client(void *arg)
{
    shared *sh = arg;
    const cu_load_config *cfg = sh->cfg;
    conn c = {.fd = -1};
    char regid[140];
    for (;;) {
        size_t dev = atomic_fetch_add(&sh->next, 1);
        if (dev >= cfg->count)
            break;
        snprintf(regid, sizeof regid, "%s%zu", cfg->prefix, cfg->first + dev);
        double t0 = now_s();
        outcome o;
        for (;;) {
            o = register_one(sh, &c, dev, regid);
            if (o != R_TRANSPORT || !cfg->retry || now_s() > sh->deadline)
                break;
            atomic_fetch_add(&sh->retries, 1);
            usleep(20000); /* the service is restarting */
        }
        sh->lat_ms[dev] = (now_s() - t0) * 1000.0;
        switch (o) {
        case R_ASSIGNED:
            atomic_fetch_add(&sh->assigned, 1);
            if (cfg->successes != NULL) {
                pthread_mutex_lock(&sh->out_lock);
                fprintf(cfg->successes, "%s\n", regid);
                fflush(cfg->successes);
                pthread_mutex_unlock(&sh->out_lock);
            }
            break;
        case R_REFUSED: atomic_fetch_add(&sh->refused, 1); break;
        case R_FAILED: atomic_fetch_add(&sh->failed, 1); break;
        default: atomic_fetch_add(&sh->errors, 1); break;
        }
        if (now_s() > sh->deadline)
            break;
    }
    conn_close(&c);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static cu_rc issue_devices(shared *sh)
{
    const cu_load_config *cfg = sh->cfg;
    char cn[140];
    if ((sh->certs = calloc(cfg->count, sizeof *sh->certs)) == NULL ||
        (sh->keys = calloc(cfg->count, sizeof *sh->keys)) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    for (size_t i = 0; i < cfg->count; i++) {
        snprintf(cn, sizeof cn, "%s%zu", cfg->prefix, cfg->first + i);
        cu_pki_spec spec = {.cn = cn, .client_auth = true, .not_before = -3600, .not_after = 86400};
        cu_rc rc = cu_pki_keygen(&sh->keys[i]);
        if (rc == CU_OK)
            rc = cu_pki_issue(&spec, sh->keys[i], cfg->ca_cert, cfg->ca_key, &sh->certs[i]);
        if (rc != CU_OK)
            return rc;
    }
    return CU_OK;
}

cu_rc cu_load_run(const cu_load_config *cfg, cu_load_result *res)
{
    shared *sh = calloc(1, sizeof *sh);
    pthread_t *th = NULL;
    unsigned started = 0;
    cu_rc rc = CU_OK;
    memset(res, 0, sizeof *res);
    if (sh == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    sh->cfg = cfg;
    pthread_mutex_init(&sh->out_lock, NULL);
    pthread_mutex_init(&sh->err_lock, NULL);
    if (cfg->count == 0 || cfg->concurrency == 0 || cfg->host == NULL || cfg->ca_file == NULL ||
        cfg->id_scope == NULL || cfg->prefix == NULL ||
        (cfg->mode == CU_LOAD_SYMKEY ? cfg->group_key == NULL : (cfg->ca_cert == NULL || cfg->ca_key == NULL))) {
        rc = cu_err_set(CU_E_INVALID_ARG, "load: incomplete configuration");
        goto cleanup;
    }
    char ps[16];
    snprintf(ps, sizeof ps, "%u", cfg->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(cfg->connect ? cfg->connect : cfg->host, ps, &hints, &ai) != 0) {
        rc = cu_err_set(CU_E_IO, "cannot resolve %s", cfg->connect ? cfg->connect : cfg->host);
        goto cleanup;
    }
    memcpy(&sh->addr, ai->ai_addr, ai->ai_addrlen);
    sh->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    if ((sh->ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
        SSL_CTX_load_verify_locations(sh->ctx, cfg->ca_file, NULL) != 1) {
        rc = cu_err_set(CU_E_CRYPTO, "cannot load the CA file %s", cfg->ca_file);
        goto cleanup;
    }
    SSL_CTX_set_verify(sh->ctx, SSL_VERIFY_PEER, NULL);
    /* Every X.509 device makes a full handshake: no session reuse. */
    SSL_CTX_set_session_cache_mode(sh->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(sh->ctx, SSL_OP_NO_TICKET);
    if ((sh->lat_ms = calloc(cfg->count, sizeof *sh->lat_ms)) == NULL ||
        (th = calloc(cfg->concurrency, sizeof *th)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if (cfg->mode == CU_LOAD_X509 && (rc = issue_devices(sh)) != CU_OK)
        goto cleanup;
    double t0 = now_s(), c0 = cpu_s();
    sh->deadline = t0 + (cfg->max_seconds ? cfg->max_seconds : 600);
    for (; started < cfg->concurrency; started++)
        if (pthread_create(&th[started], NULL, client, sh) != 0)
            break;
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    res->seconds = now_s() - t0;
    res->cpu_seconds = cpu_s() - c0;
    res->assigned = atomic_load(&sh->assigned);
    res->refused = atomic_load(&sh->refused);
    res->failed = atomic_load(&sh->failed);
    res->errors = atomic_load(&sh->errors);
    res->retries = atomic_load(&sh->retries);
    res->handshakes = atomic_load(&sh->handshakes);
    size_t done = res->assigned + res->refused + res->failed + res->errors;
    if (done > 0) {
        qsort(sh->lat_ms, cfg->count, sizeof *sh->lat_ms, cmp_d);
        /* Devices never started (deadline) sit at 0 at the front. */
        double *l = sh->lat_ms + (cfg->count - done);
        res->p50_ms = l[done / 2];
        res->p99_ms = l[(size_t)((double)done * 0.99) < done ? (size_t)((double)done * 0.99) : done - 1];
        res->max_ms = l[done - 1];
    }
    snprintf(res->first_error, sizeof res->first_error, "%s", sh->first_error);
    if (started < cfg->concurrency)
        rc = cu_err_set(CU_E_IO, "could only start %u clients", started);
cleanup:
    if (sh->certs != NULL)
        for (size_t i = 0; i < cfg->count; i++) {
            X509_free(sh->certs[i]);
            EVP_PKEY_free(sh->keys[i]);
        }
    free(sh->certs);
    free(sh->keys);
    free(sh->lat_ms);
    free(th);
    SSL_CTX_free(sh->ctx);
    pthread_mutex_destroy(&sh->out_lock);
    pthread_mutex_destroy(&sh->err_lock);
    free(sh);
    return rc;
}
