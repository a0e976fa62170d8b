/* custosd's own certificates and keys: the CA clients trust, the server
 * certificate with its subjectAltNames. */
#include "srv_int.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <custos/keyring.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static cu_rc ossl_fail(const char *what)
{
    char buf[256];
    unsigned long e = ERR_peek_last_error();
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return cu_err_set(CU_E_CRYPTO, "%s: %s", what, e ? buf : "OpenSSL error");
}

static bool is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static cu_rc add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ex == NULL)
        return ossl_fail("certificate extension");
    int ok = X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return ok ? CU_OK : ossl_fail("certificate extension");
}

cu_rc cu_srv__srv_issue_server_cert(EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key, const char *const *names,
                                size_t n, X509 **_cert)
{
    X509 *c = X509_new();
    X509_NAME *subj = X509_NAME_new();
    BIGNUM *bn = BN_new();
    char *san = NULL;
    size_t cap = 1;
    cu_rc rc = CU_E_CRYPTO;
    for (size_t i = 0; i < n; i++)
        cap += strlen(names[i]) + 6;
    if (c == NULL || subj == NULL || bn == NULL || (san = calloc(1, cap)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strcat(san, ",");
        strcat(san, is_ip(names[i]) ? "IP:" : "DNS:");
        strcat(san, names[i]);
    }
    if (!X509_set_version(c, 2) || !BN_rand(bn, 127, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) ||
        !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c)) ||
        !X509_NAME_add_entry_by_txt(subj, "O", MBSTRING_ASC, (const unsigned char *)"Custos", -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_UTF8, (const unsigned char *)names[0], -1, -1, 0) ||
        !X509_set_subject_name(c, subj) || !X509_set_issuer_name(c, X509_get_subject_name(ca)) ||
        !X509_gmtime_adj(X509_getm_notBefore(c), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(c), 825L * 86400) || !X509_set_pubkey(c, key)) {
        rc = ossl_fail("server certificate");
        goto cleanup;
    }
    if ((rc = add_ext(c, ca, NID_basic_constraints, "critical,CA:FALSE")) != CU_OK ||
        (rc = add_ext(c, ca, NID_key_usage, "critical,digitalSignature,keyEncipherment")) != CU_OK ||
        (rc = add_ext(c, ca, NID_ext_key_usage, "serverAuth")) != CU_OK ||
        (rc = add_ext(c, ca, NID_subject_key_identifier, "hash")) != CU_OK ||
        (rc = add_ext(c, ca, NID_authority_key_identifier, "keyid")) != CU_OK ||
        (rc = add_ext(c, ca, NID_subject_alt_name, san)) != CU_OK)
        goto cleanup;
    if (!X509_sign(c, ca_key, EVP_sha256())) {
        rc = ossl_fail("signing the server certificate");
        goto cleanup;
    }
    *_cert = c;
    c = NULL;
    rc = CU_OK;
cleanup:
    X509_free(c);
    X509_NAME_free(subj);
    BN_free(bn);
    free(san);
    return rc;
}

bool cu_srv__srv_cert_covers(X509 *cert, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int ok = is_ip(names[i]) ? X509_check_ip_asc(cert, names[i], 0)
                                 : X509_check_host(cert, names[i], 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL);
        if (ok != 1)
            return false;
    }
    return X509_cmp_time(X509_get0_notAfter(cert), NULL) > 0;
}
