/* X.509: certificate decoding, thumbprints and chain verification. */
#include <custos/x509.h>

#include "prov_int.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cu_x509_chain {
    X509 *leaf;
    STACK_OF(X509) *extra;
};

static bool looks_pem(const char *s, size_t len)
{
    static const char tag[] = "-----BEGIN ";
    while (len > 0 && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')) {
        s++;
        len--;
    }
    return len >= sizeof tag - 1 && memcmp(s, tag, sizeof tag - 1) == 0;
}

static cu_rc decode_pem_one(const char *s, size_t len, X509 **_out)
{
    BIO *b = BIO_new_mem_buf(s, (int)len);
    char *name = NULL, *hdr = NULL;
    unsigned char *der = NULL;
    long dlen = 0;
    cu_rc rc = CU_OK;

    if (b == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    if (PEM_read_bio(b, &name, &hdr, &der, &dlen) != 1) {
        rc = cu_err_set(CU_E_INVALID_ARG, "not a PEM certificate");
        goto cleanup;
    }
    if (strcmp(name, "CERTIFICATE") != 0) {
        rc = cu_err_set(CU_E_INVALID_ARG, "PEM block is '%.40s', not CERTIFICATE", name);
        goto cleanup;
    }
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, dlen);
    if (x == NULL || p != der + dlen) {
        X509_free(x);
        rc = cu_err_set(CU_E_INVALID_ARG, "the certificate's DER does not parse");
        goto cleanup;
    }
    *_out = x;
cleanup:
    ERR_clear_error();
    OPENSSL_free(name);
    OPENSSL_free(hdr);
    OPENSSL_free(der);
    BIO_free(b);
    return rc;
}

/* ---- decoded-certificate cache ----
 *
 * The engine decodes the certificates of the groups and CAs that could
 * issue a device's chain on every X.509 registration, and OpenSSL 3.0
 * decodes a public key slowly (a decoder context per key): a fifth of
 * custosd's CPU per registration. Decoded certificates are kept by the
 * SHA-256 of the text they came from, so the cache needs no invalidation:
 * a changed group or CA certificate is other text, and whether an entry
 * exists, is enabled or is trusted is still read (and its seal checked)
 * from the store every time. Only public data is kept: certificates.
 * Direct-mapped and bounded (CACHE_SLOTS certificates); a slot is replaced
 * when another text maps to it. CUSTOS_X509_CACHE=0 turns it off
 * (benchmarks compare with and without). */
#define CACHE_SLOTS 1024
typedef struct cache_slot {
    uint8_t md[32];
    X509 *x;
} cache_slot;
static cache_slot cache[CACHE_SLOTS];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_on;

static void cache_init(void)
{
    const char *e = getenv("CUSTOS_X509_CACHE");
    cache_on = e == NULL || strcmp(e, "0") != 0;
    /* OpenSSL registers its own exit handler when it initialises; ours,
     * registered after it, runs before it. */
    if (cache_on && (OPENSSL_init_crypto(0, NULL) != 1 || atexit(cu_x509_cache_clear) != 0))
        cache_on = false;
}

static X509 *cache_get(const uint8_t md[32])
{
    X509 *x = NULL;
    cache_slot *sl = &cache[(md[0] | (md[1] << 8)) % CACHE_SLOTS];
    pthread_mutex_lock(&cache_lock);
    if (sl->x != NULL && memcmp(sl->md, md, 32) == 0 && X509_up_ref(sl->x) == 1)
        x = sl->x;
    pthread_mutex_unlock(&cache_lock);
    return x;
}

static void cache_put(const uint8_t md[32], X509 *x)
{
    X509 *old = NULL;
    cache_slot *sl = &cache[(md[0] | (md[1] << 8)) % CACHE_SLOTS];
    if (X509_up_ref(x) != 1)
        return;
    pthread_mutex_lock(&cache_lock);
    old = sl->x;
    memcpy(sl->md, md, 32);
    sl->x = x;
    pthread_mutex_unlock(&cache_lock);
    X509_free(old);
}

void cu_x509_cache_clear(void)
{
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        X509_free(cache[i].x);
        cache[i].x = NULL;
    }
    pthread_mutex_unlock(&cache_lock);
}

static cu_rc decode_uncached(const char *text, size_t len, X509 **_out);

cu_rc cu_x509_decode(const char *text, size_t len, X509 **_out)
{
    cu_prov__return_val_if_fail(text != NULL && _out != NULL, CU_E_INVALID_ARG);
    uint8_t md[32];
    *_out = NULL;
    if (len > CU_X509_MAX_INPUT)
        return cu_err_set(CU_E_INVALID_ARG, "certificate larger than %d bytes", CU_X509_MAX_INPUT);
    pthread_once(&cache_once, cache_init);
    if (!cache_on || EVP_Digest(text, len, md, NULL, EVP_sha256(), NULL) != 1)
        return decode_uncached(text, len, _out);
    if ((*_out = cache_get(md)) != NULL)
        return CU_OK;
    cu_rc rc = decode_uncached(text, len, _out);
    if (rc == CU_OK)
        cache_put(md, *_out);
    return rc;
}

static cu_rc decode_uncached(const char *text, size_t len, X509 **_out)
{
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    cu_rc rc = CU_OK;

    if (looks_pem(text, len))
        return decode_pem_one(text, len, _out);
    /* base64 of PEM (C service SDK) or of DER; tolerate line breaks. */
    char *flat = malloc(len + 1);
    size_t n = 0;
    if (flat == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    for (size_t i = 0; i < len; i++)
        if (text[i] != '\n' && text[i] != '\r')
            flat[n++] = text[i];
    flat[n] = 0;
    if (cu_prov__b64_decode(flat, n, &raw, &rawlen) != CU_OK) {
        rc = cu_err_set(CU_E_INVALID_ARG, "certificate is neither PEM nor base64");
        goto cleanup;
    }
    if (looks_pem((const char *)raw, rawlen)) {
        rc = decode_pem_one((const char *)raw, rawlen, _out);
    } else {
        const unsigned char *p = raw;
        X509 *x = d2i_X509(NULL, &p, (long)rawlen);
        if (x == NULL || p != raw + rawlen) {
            X509_free(x);
            rc = cu_err_set(CU_E_INVALID_ARG, "base64 content is not a DER certificate");
        } else {
            *_out = x;
        }
        ERR_clear_error();
    }
cleanup:
    free(flat);
    OPENSSL_free(raw);
    return rc;
}

char *cu_x509_to_pem(X509 *cert)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *p = NULL;
    if (b != NULL && PEM_write_bio_X509(b, cert) == 1) {
        long n = BIO_get_mem_data(b, &p);
        if ((out = malloc((size_t)n + 1)) != NULL) {
            memcpy(out, p, (size_t)n);
            out[n] = 0;
        }
    }
    BIO_free(b);
    return out;
}

cu_rc cu_x509_sha256_hex(X509 *cert, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    if (cert == NULL || X509_digest(cert, EVP_sha256(), md, &n) != 1 || n != 32)
        return cu_err_set(CU_E_CRYPTO, "cannot hash the certificate");
    cu_prov__hex(md, 32, out);
    return CU_OK;
}

cu_rc cu_x509_sha1_hex_upper(X509 *cert, char out[41])
{
    unsigned char md[20];
    unsigned int n = 0;
    if (cert == NULL || X509_digest(cert, EVP_sha1(), md, &n) != 1 || n != 20)
        return cu_err_set(CU_E_CRYPTO, "cannot hash the certificate");
    cu_prov__hex(md, 20, out);
    for (char *p = out; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    return CU_OK;
}

cu_rc cu_x509_name_key(const X509_NAME *name, char out[65])
{
    const unsigned char *der = NULL;
    size_t dlen = 0;
    unsigned char md[32];
    if (name == NULL || X509_NAME_get0_der((X509_NAME *)name, &der, &dlen) != 1 ||
        EVP_Digest(der, dlen, md, NULL, EVP_sha256(), NULL) != 1)
        return cu_err_set(CU_E_CRYPTO, "cannot hash a certificate name");
    cu_prov__hex(md, 32, out);
    return CU_OK;
}

cu_rc cu_x509_subject_cn(X509 *cert, char **_cn)
{
    cu_prov__return_val_if_fail(cert != NULL && _cn != NULL, CU_E_INVALID_ARG);
    X509_NAME *n = X509_get_subject_name(cert);
    int i = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
    *_cn = NULL;
    if (i < 0)
        return cu_err_set(CU_E_INVALID_ARG, "the certificate's subject has no CN");
    if (X509_NAME_get_index_by_NID(n, NID_commonName, i) >= 0)
        return cu_err_set(CU_E_INVALID_ARG, "the certificate's subject has several CNs");
    unsigned char *u = NULL;
    int len = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i)));
    if (len < 0)
        return cu_err_set(CU_E_INVALID_ARG, "the certificate's CN is not a string");
    if ((int)strlen((char *)u) != len) {
        OPENSSL_free(u);
        return cu_err_set(CU_E_INVALID_ARG, "the certificate's CN contains a NUL");
    }
    *_cn = strdup((char *)u);
    OPENSSL_free(u);
    return *_cn ? CU_OK : cu_err_set(CU_E_NOMEM, "out of memory");
}

char *cu_x509_name_str(const X509_NAME *name)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *p = NULL;
    if (b != NULL && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        long n = BIO_get_mem_data(b, &p);
        if ((out = malloc((size_t)n + 1)) != NULL) {
            memcpy(out, p, (size_t)n);
            out[n] = 0;
        }
    }
    BIO_free(b);
    return out;
}

static void asn1_time_str(const ASN1_TIME *t, char out[32])
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) {
        strcpy(out, "");
        return;
    }
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *cu_prov__x509_info(X509 *cert)
{
    char sha1[41], sha256[65], nb[32], na[32];
    char *subj = cu_x509_name_str(X509_get_subject_name(cert));
    char *iss = cu_x509_name_str(X509_get_issuer_name(cert));
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *serial = bn ? BN_bn2hex(bn) : NULL;
    json_t *j = NULL;

    if (subj && iss && serial && cu_x509_sha1_hex_upper(cert, sha1) == CU_OK &&
        cu_x509_sha256_hex(cert, sha256) == CU_OK) {
        asn1_time_str(X509_get0_notBefore(cert), nb);
        asn1_time_str(X509_get0_notAfter(cert), na);
        j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "subjectName", subj,
                      "sha1Thumbprint", sha1, "sha256Thumbprint", sha256, "issuerName", iss,
                      "notBeforeUtc", nb, "notAfterUtc", na, "serialNumber", serial, "version",
                      (json_int_t)X509_get_version(cert) + 1);
    }
    free(subj);
    free(iss);
    OPENSSL_free(serial);
    BN_free(bn);
    return j;
}

cu_rc cu_x509_chain_from_pem(const char *pem, size_t len, cu_x509_chain **_out)
{
    cu_prov__return_val_if_fail(pem != NULL && _out != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    BIO *b = NULL;
    cu_x509_chain *c = NULL;
    char *name = NULL, *hdr = NULL;
    unsigned char *der = NULL;
    long dlen = 0;
    int count = 0;

    *_out = NULL;
    if (len > CU_X509_MAX_INPUT) {
        rc = cu_err_set(CU_E_INVALID_ARG, "certificate chain larger than %d bytes", CU_X509_MAX_INPUT);
        goto cleanup;
    }
    if ((b = BIO_new_mem_buf(pem, (int)len)) == NULL || (c = calloc(1, sizeof *c)) == NULL ||
        (c->extra = sk_X509_new_null()) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    for (;;) {
        if (PEM_read_bio(b, &name, &hdr, &der, &dlen) != 1) {
            unsigned long e = ERR_peek_last_error();
            ERR_clear_error();
            if (ERR_GET_REASON(e) == PEM_R_NO_START_LINE && count > 0)
                break; /* end of the bundle */
            rc = cu_err_set(CU_E_INVALID_ARG, count ? "certificate %d of the chain: bad PEM"
                                                    : "no PEM certificate in the chain%.0d", count + 1);
            goto cleanup;
        }
        if (strcmp(name, "CERTIFICATE") != 0) {
            rc = cu_err_set(CU_E_INVALID_ARG, "block %d of the chain is '%.40s', not CERTIFICATE",
                            count + 1, name);
            goto cleanup;
        }
        if (++count > CU_X509_MAX_CHAIN) {
            rc = cu_err_set(CU_E_INVALID_ARG, "more than %d certificates in the chain", CU_X509_MAX_CHAIN);
            goto cleanup;
        }
        const unsigned char *p = der;
        X509 *x = d2i_X509(NULL, &p, dlen);
        if (x == NULL || p != der + dlen) {
            X509_free(x);
            ERR_clear_error();
            rc = cu_err_set(CU_E_INVALID_ARG, "certificate %d of the chain does not parse", count);
            goto cleanup;
        }
        if (c->leaf == NULL) {
            c->leaf = x;
        } else if (!sk_X509_push(c->extra, x)) {
            X509_free(x);
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
        OPENSSL_free(name);
        OPENSSL_free(hdr);
        OPENSSL_free(der);
        name = hdr = NULL;
        der = NULL;
    }
    *_out = c;
    c = NULL;
cleanup:
    OPENSSL_free(name);
    OPENSSL_free(hdr);
    OPENSSL_free(der);
    BIO_free(b);
    cu_x509_chain_free(c);
    return rc;
}

cu_rc cu_x509_chain_from_certs(X509 *leaf, STACK_OF(X509) *extra, cu_x509_chain **_out)
{
    cu_prov__return_val_if_fail(leaf != NULL && _out != NULL, CU_E_INVALID_ARG);
    cu_x509_chain *c = calloc(1, sizeof *c);
    if (c == NULL || (c->extra = sk_X509_new_null()) == NULL)
        goto nomem;
    if (sk_X509_num(extra) > CU_X509_MAX_CHAIN - 1) {
        cu_x509_chain_free(c);
        return cu_err_set(CU_E_INVALID_ARG, "more than %d certificates in the chain", CU_X509_MAX_CHAIN);
    }
    X509_up_ref(leaf);
    c->leaf = leaf;
    for (int i = 0; i < sk_X509_num(extra); i++) {
        X509 *x = sk_X509_value(extra, i);
        if (X509_cmp(x, leaf) == 0)
            continue; /* some TLS stacks repeat the leaf */
        X509_up_ref(x);
        if (!sk_X509_push(c->extra, x)) {
            X509_free(x);
            goto nomem;
        }
    }
    *_out = c;
    return CU_OK;
nomem:
    cu_x509_chain_free(c);
    return cu_err_set(CU_E_NOMEM, "out of memory");
}

void cu_x509_chain_free(cu_x509_chain *chain)
{
    if (chain == NULL)
        return;
    X509_free(chain->leaf);
    sk_X509_pop_free(chain->extra, X509_free);
    free(chain);
}

X509 *cu_x509_chain_get0_leaf(const cu_x509_chain *chain) { return chain ? chain->leaf : NULL; }
STACK_OF(X509) *cu_x509_chain_get0_extra(const cu_x509_chain *chain) { return chain ? chain->extra : NULL; }

cu_rc cu_x509_check_time(X509 *cert, time_t now, char *reason, size_t reason_len)
{
    time_t t = now ? now : time(NULL);
    char *subj = cu_x509_name_str(X509_get_subject_name(cert));
    cu_rc rc = CU_OK;
    if (X509_cmp_time(X509_get0_notBefore(cert), &t) >= 0)
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len, "certificate '%s' is not yet valid",
                        subj ? subj : "?");
    else if (X509_cmp_time(X509_get0_notAfter(cert), &t) <= 0)
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len, "certificate '%s' has expired", subj ? subj : "?");
    free(subj);
    return rc;
}

cu_rc cu_x509_verify(const cu_x509_chain *chain, STACK_OF(X509) *anchors, time_t now,
                     STACK_OF(X509) **_path, char *reason, size_t reason_len)
{
    cu_prov__return_val_if_fail(chain != NULL && _path != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    X509_STORE *st = NULL;
    X509_STORE_CTX *ctx = NULL;

    *_path = NULL;
    if (sk_X509_num(anchors) == 0) {
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len,
                        "no enrollment group or verified CA certificate is an issuer of this chain "
                        "(unknown root or missing intermediates)");
        goto cleanup;
    }
    if ((st = X509_STORE_new()) == NULL || (ctx = X509_STORE_CTX_new()) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < sk_X509_num(anchors); i++)
        if (X509_STORE_add_cert(st, sk_X509_value(anchors, i)) != 1)
            ERR_clear_error(); /* a duplicate anchor is harmless */
    if (X509_STORE_CTX_init(ctx, st, chain->leaf, chain->extra) != 1) {
        rc = cu_err_set(CU_E_CRYPTO, "cannot set up chain verification");
        goto cleanup;
    }
    X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
    /* A group may sit on an intermediate: its certificate is an anchor even
     * though it is not self-signed. */
    X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN);
    X509_VERIFY_PARAM_set_depth(vp, CU_X509_MAX_CHAIN);
    if (now)
        X509_VERIFY_PARAM_set_time(vp, now);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
    if (X509_verify_cert(ctx) != 1) {
        int err = X509_STORE_CTX_get_error(ctx);
        int depth = X509_STORE_CTX_get_error_depth(ctx);
        X509 *bad = X509_STORE_CTX_get_current_cert(ctx);
        char *subj = bad ? cu_x509_name_str(X509_get_subject_name(bad)) : NULL;
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len, "certificate chain does not verify: %s "
                        "(depth %d%s%s)", X509_verify_cert_error_string(err), depth,
                        subj ? ", " : "", subj ? subj : "");
        free(subj);
        ERR_clear_error();
        goto cleanup;
    }
    if ((*_path = X509_STORE_CTX_get1_chain(ctx)) == NULL)
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
cleanup:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    return rc;
}
