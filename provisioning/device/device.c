/* The device's side of the registration protocol (PROTOCOL.md §1): PUT
 * register, then GET the operation every Retry-After seconds until the
 * answer is final. One libcurl handle, so the poll reuses the connection
 * (and, for X.509, the TLS session). TPM: the first PUT is answered with a
 * challenge, taken by tpm.c, and the PUT repeated with the TPM's SAS. */
#include "dev_int.h"

#include <custos/keyring.h>
#include <custos/x509.h>

#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MAX_RESPONSE (256 * 1024)

typedef struct xfer {
    char *buf;
    size_t len;
    bool overflow;
    long retry_after; /* -1 when absent */
} xfer;

typedef struct tls_keys {
    const cu_dev_config *cfg;
    EVP_PKEY *key;
    cu_rc rc;
    char err[300];
} tls_keys;

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    xfer *x = arg;
    size_t add = sz * n;
    if (x->len + add > MAX_RESPONSE) {
        x->overflow = true;
        return 0;
    }
    char *nb = realloc(x->buf, x->len + add + 1);
    if (nb == NULL)
        return 0;
    memcpy(nb + x->len, p, add);
    x->len += add;
    nb[x->len] = 0;
    x->buf = nb;
    return add;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    xfer *x = arg;
    size_t len = sz * n;
    if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
        long v = strtol(p + 12, NULL, 10);
        x->retry_after = v >= 1 && v <= 300 ? v : 1; /* the C SDK's rule */
    }
    return len;
}

/* Puts the device's certificate chain and key (possibly a token key through
 * the provider) into libcurl's SSL_CTX. */
static CURLcode ssl_ctx_cb(CURL *curl, void *sslctx, void *arg)
{
    (void)curl;
    tls_keys *k = arg;
    SSL_CTX *ctx = sslctx;
    if (SSL_CTX_use_certificate_chain_file(ctx, k->cfg->cert_file) != 1) {
        k->rc = cu_err_set(CU_E_CRYPTO, "cannot use the certificate file %s", k->cfg->cert_file);
        return CURLE_SSL_CERTPROBLEM;
    }
    if (SSL_CTX_use_PrivateKey(ctx, k->key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        k->rc = cu_err_set(CU_E_CRYPTO, "the key does not fit the certificate");
        return CURLE_SSL_CERTPROBLEM;
    }
    return CURLE_OK;
}

static void set_str(char *dst, size_t n, json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    snprintf(dst, n, "%s", v ? v : "");
}

/* Reads a DeviceRegistrationResult or an error body into res. */
static void read_answer(cu_dev_result *res, json_t *j)
{
    json_t *rs = json_object_get(j, "registrationState");
    set_str(res->status, sizeof res->status, j, "status");
    set_str(res->operation_id, sizeof res->operation_id, j, "operationId");
    if (json_is_object(rs)) {
        set_str(res->assigned_hub, sizeof res->assigned_hub, rs, "assignedHub");
        set_str(res->device_id, sizeof res->device_id, rs, "deviceId");
        set_str(res->substatus, sizeof res->substatus, rs, "substatus");
        if (json_is_integer(json_object_get(rs, "errorCode")))
            res->error_code = (int)json_integer_value(json_object_get(rs, "errorCode"));
        if (json_is_string(json_object_get(rs, "errorMessage")))
            set_str(res->message, sizeof res->message, rs, "errorMessage");
    }
    if (json_is_integer(json_object_get(j, "errorCode")))
        res->error_code = (int)json_integer_value(json_object_get(j, "errorCode"));
    if (json_is_string(json_object_get(j, "message")))
        set_str(res->message, sizeof res->message, j, "message");
}

static char *url_of(const cu_dev_config *cfg, const char *regid, const char *op_id)
{
    char *e_scope = curl_easy_escape(NULL, cfg->id_scope, 0);
    char *e_reg = curl_easy_escape(NULL, regid, 0);
    char *e_op = op_id ? curl_easy_escape(NULL, op_id, 0) : NULL;
    char *url = NULL;
    const char *ver = cfg->api_version ? cfg->api_version : "2021-06-01";
    if (e_scope && e_reg && (op_id == NULL || e_op)) {
        size_t n = strlen(cfg->host) + strlen(e_scope) + strlen(e_reg) + (e_op ? strlen(e_op) : 0) + 128;
        if ((url = malloc(n)) != NULL) {
            if (op_id)
                snprintf(url, n, "https://%s/%s/registrations/%s/operations/%s?api-version=%s", cfg->host, e_scope,
                         e_reg, e_op, ver);
            else
                snprintf(url, n, "https://%s/%s/registrations/%s/register?api-version=%s", cfg->host, e_scope, e_reg,
                         ver);
        }
    }
    curl_free(e_scope);
    curl_free(e_reg);
    curl_free(e_op);
    return url;
}

const char *cu_dev_outcome_str(cu_dev_outcome o)
{
    switch (o) {
    case CU_DEV_ASSIGNED: return "assigned";
    case CU_DEV_REFUSED: return "refused";
    case CU_DEV_FAILED: return "failed";
    default: return "error";
    }
}

void cu_dev_result_clear(cu_dev_result *res)
{
    if (res == NULL)
        return;
    free(res->response_json);
    memset(res, 0, sizeof *res);
}

static cu_rc registration_id(const cu_dev_config *cfg, char out[129])
{
    if (cfg->registration_id != NULL) {
        snprintf(out, 129, "%s", cfg->registration_id);
        return CU_OK;
    }
    if (cfg->cert_file == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "a registration id is needed");
    FILE *f = fopen(cfg->cert_file, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    char *cn = NULL;
    if (f)
        fclose(f);
    cu_rc rc = x ? cu_x509_subject_cn(x, &cn) : cu_err_set(CU_E_INVALID_ARG, "cannot read %s", cfg->cert_file);
    if (rc == CU_OK)
        snprintf(out, 129, "%s", cn);
    free(cn);
    X509_free(x);
    return rc;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

cu_rc cu_dev_register(const cu_dev_config *cfg, cu_dev_result *res)
{
    CURL *c = NULL;
    struct curl_slist *hdr = NULL;
    char *token = NULL, *url = NULL, *body = NULL, *authz = NULL, errbuf[CURL_ERROR_SIZE] = "";
    tls_keys keys = {.cfg = cfg};
    xfer x = {0};
    json_t *req = NULL, *ans = NULL;
    cu_dev__tpm tpm;
    cu_rc rc = CU_OK;
    bool x509 = !cfg->tpm && cfg->cert_file != NULL;
    double deadline = now_s() + (cfg->timeout ? cfg->timeout : 120);

    memset(res, 0, sizeof *res);
    memset(&tpm, 0, sizeof tpm);
    res->outcome = CU_DEV_ERROR;
    if (cfg->host == NULL || cfg->id_scope == NULL || cfg->ca_file == NULL ||
        (cfg->tpm ? cfg->cert_file != NULL || cfg->key != NULL || cfg->symkey_uri != NULL || cfg->key_file != NULL
         : x509  ? cfg->key == NULL
                 : (cfg->symkey_uri == NULL) == (cfg->key_file == NULL))) {
        rc = cu_err_set(CU_E_INVALID_ARG, "need host, id scope, CA file, and either a certificate with its key, "
                                          "exactly one symmetric key, or the TPM");
        goto cleanup;
    }
    if (cfg->tpm) {
        if ((rc = cu_dev__tpm_open(cfg, &tpm)) != CU_OK)
            goto cleanup;
        snprintf(res->registration_id, sizeof res->registration_id, "%s",
                 cfg->registration_id ? cfg->registration_id : tpm.regid);
    } else if ((rc = registration_id(cfg, res->registration_id)) != CU_OK) {
        goto cleanup;
    }
    if (x509 && (rc = cu_keyring_load_key(cfg->key, cfg->provider_path, true, &keys.key)) != CU_OK)
        goto cleanup;
    if (!x509 && !cfg->tpm) {
        uint64_t se = (uint64_t)time(NULL) + 3600;
        if ((rc = cu_dev_sas_token(cfg, res->registration_id, se, &token)) != CU_OK)
            goto cleanup;
        size_t n = strlen(token) + 32;
        if ((authz = malloc(n)) == NULL) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
        snprintf(authz, n, "Authorization: %s", token);
    }
    req = json_pack("{s:s}", "registrationId", res->registration_id);
    if (req != NULL && cfg->payload_json != NULL) {
        json_error_t e;
        json_t *pl = json_loads(cfg->payload_json, JSON_DECODE_ANY, &e);
        if (pl == NULL) {
            rc = cu_err_set(CU_E_INVALID_ARG, "payload is not JSON: %s", e.text);
            goto cleanup;
        }
        json_object_set_new(req, "payload", pl);
    }
    /* TPM: the EK and SRK go with every PUT, the first one without a SAS. */
    if (req != NULL && cfg->tpm &&
        json_object_set_new(req, "tpm", json_pack("{s:s, s:s}", "endorsementKey", tpm.ek_b64, "storageRootKey",
                                                  tpm.srk_b64)) != 0) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if (req == NULL || (body = json_dumps(req, JSON_COMPACT)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if ((c = curl_easy_init()) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "cannot create a libcurl handle");
        goto cleanup;
    }
    hdr = curl_slist_append(hdr, "Accept: application/json");
    hdr = curl_slist_append(hdr, "Content-Type: application/json; charset=utf-8");
    hdr = curl_slist_append(hdr, "UserAgent: custos-device/0.1");
    if (authz != NULL)
        hdr = curl_slist_append(hdr, authz);
    if (hdr == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_CAINFO, cfg->ca_file);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (x509) {
        curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
        curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, &keys);
    }

    bool put = true;
    for (;;) {
        free(url);
        url = url_of(cfg, res->registration_id, put ? NULL : res->operation_id);
        if (url == NULL) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
        curl_easy_setopt(c, CURLOPT_URL, url);
        if (put) {
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        } else {
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
            curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
            res->polls++;
        }
        /* --timeout covers the whole registration: each request gets what
         * is left of it (0 would mean no limit to libcurl). */
        double left = deadline - now_s();
        if (left <= 0) {
            rc = cu_err_set(CU_E_IO, "no answer before the deadline");
            goto cleanup;
        }
        long left_ms = left * 1000 < 1 ? 1 : (long)(left * 1000);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, left_ms);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, left_ms);
        free(x.buf);
        x = (xfer){.retry_after = -1};
        CURLcode cc = curl_easy_perform(c);
        if (cc != CURLE_OK) {
            rc = keys.rc != CU_OK ? keys.rc
                                  : cu_err_set(CU_E_IO, "%s: %s", curl_easy_strerror(cc), errbuf[0] ? errbuf : "");
            snprintf(res->message, sizeof res->message, "%s", cu_err_last()->msg);
            goto cleanup;
        }
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        res->http_status = (int)code;
        free(res->response_json);
        res->response_json = x.buf ? strdup(x.buf) : NULL;
        json_decref(ans);
        json_error_t e;
        ans = x.buf ? json_loads(x.buf, 0, &e) : NULL;
        if (ans != NULL)
            read_answer(res, ans);
        if (code == 429 || code >= 500) {
            /* Transient (PROTOCOL.md §1.6): wait and try again. */
            if (now_s() + (x.retry_after > 0 ? x.retry_after : 1) > deadline) {
                rc = cu_err_set(CU_E_IO, "service busy (HTTP %ld) until the deadline", code);
                snprintf(res->message, sizeof res->message, "%s", cu_err_last()->msg);
                goto cleanup;
            }
            sleep((unsigned)(x.retry_after > 0 ? x.retry_after : 1));
            continue;
        }
        if (code == 401 && cfg->tpm && put && authz == NULL && ans != NULL && cu_dev__tpm_is_challenge(ans)) {
            /* The TPM challenge: activate it in the TPM, sign the SAS there
             * and send the same PUT again with it (polls reuse it). */
            res->message[0] = 0;
            res->error_code = 0;
            if ((rc = cu_dev__tpm_answer(&tpm, cfg, res->registration_id, ans, &authz)) != CU_OK)
                goto cleanup;
            struct curl_slist *more = curl_slist_append(hdr, authz);
            if (more == NULL) {
                rc = cu_err_set(CU_E_NOMEM, "out of memory");
                goto cleanup;
            }
            hdr = more;
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
            continue;
        }
        if (code == 401 || code == 403 || code == 404) {
            res->outcome = CU_DEV_REFUSED;
            goto cleanup;
        }
        if ((code != 200 && code != 202) || ans == NULL || res->status[0] == 0) {
            rc = cu_err_set(CU_E_IO, "unexpected answer: HTTP %ld%s%s", code, res->message[0] ? ": " : "",
                            res->message);
            snprintf(res->message, sizeof res->message, "%s", cu_err_last()->msg);
            goto cleanup;
        }
        if (!strcasecmp(res->status, "assigned")) {
            /* TPM: the hub key comes as a second blob for the TPM. */
            if (cfg->tpm && (rc = cu_dev__tpm_assigned(&tpm, ans)) != CU_OK) {
                snprintf(res->message, sizeof res->message, "%s", cu_err_last()->msg);
                goto cleanup;
            }
            res->outcome = CU_DEV_ASSIGNED;
            goto cleanup;
        }
        if (!strcasecmp(res->status, "failed")) {
            res->outcome = CU_DEV_FAILED;
            goto cleanup;
        }
        if (strcasecmp(res->status, "assigning") != 0 || res->operation_id[0] == 0) {
            res->outcome = CU_DEV_REFUSED; /* disabled, unassigned */
            goto cleanup;
        }
        long wait = cfg->no_wait ? 0 : x.retry_after > 0 ? x.retry_after : 2;
        if (now_s() + (double)wait > deadline) {
            rc = cu_err_set(CU_E_IO, "still assigning at the deadline");
            snprintf(res->message, sizeof res->message, "%s", cu_err_last()->msg);
            goto cleanup;
        }
        if (wait > 0)
            sleep((unsigned)wait);
        put = false;
    }
cleanup:
    if (rc != CU_OK && res->message[0] == 0)
        snprintf(res->message, sizeof res->message, "%s", cu_err_last()->msg);
    if (rc != CU_OK)
        res->outcome = CU_DEV_ERROR;
    json_decref(ans);
    json_decref(req);
    curl_slist_free_all(hdr);
    if (c)
        curl_easy_cleanup(c);
    free(x.buf);
    free(url);
    free(body);
    if (authz) {
        OPENSSL_cleanse(authz, strlen(authz));
        free(authz);
    }
    free(token);
    EVP_PKEY_free(keys.key);
    cu_dev__tpm_close(&tpm);
    return rc;
}
