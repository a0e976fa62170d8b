/* Test chains: key generation and certificate issuance. */
#include <custos/pki.h>

#include "prov_int.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

cu_rc cu_pki_keygen(EVP_PKEY **_key)
{
    cu_prov__return_val_if_fail(_key != NULL, CU_E_INVALID_ARG);
    *_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (*_key == NULL)
        return cu_err_set(CU_E_CRYPTO, "EC key generation failed");
    return CU_OK;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ex == NULL)
        return 0;
    int ok = X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return ok;
}

cu_rc cu_pki_issue(const cu_pki_spec *spec, EVP_PKEY *subject_key, X509 *issuer,
                   EVP_PKEY *issuer_key, X509 **_cert)
{
    cu_prov__return_val_if_fail(spec != NULL && spec->cn != NULL && subject_key != NULL &&
                               issuer_key != NULL && _cert != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    BIGNUM *bn = BN_new();
    char bc[64];
    int ok = x != NULL && name != NULL && bn != NULL;

    *_cert = NULL;
    ok = ok && X509_set_version(x, 2) && BN_rand(bn, 120, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) &&
         BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), spec->not_before) &&
         X509_gmtime_adj(X509_getm_notAfter(x), spec->not_after);
    if (spec->org != NULL)
        ok = ok && X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)spec->org, -1, -1, 0);
    ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)spec->cn, -1, -1, 0);
    ok = ok && X509_set_subject_name(x, name) &&
         X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) &&
         X509_set_pubkey(x, subject_key);
    if (spec->ca) {
        if (spec->pathlen >= 0)
            snprintf(bc, sizeof bc, "critical,CA:TRUE,pathlen:%d", spec->pathlen);
        else
            snprintf(bc, sizeof bc, "critical,CA:TRUE");
        ok = ok && add_ext(x, issuer ? issuer : x, NID_basic_constraints, bc) &&
             add_ext(x, issuer ? issuer : x, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
    } else {
        ok = ok && add_ext(x, issuer ? issuer : x, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(x, issuer ? issuer : x, NID_key_usage, "critical,digitalSignature");
        if (spec->client_auth)
            ok = ok && add_ext(x, issuer ? issuer : x, NID_ext_key_usage, "clientAuth");
    }
    ok = ok && add_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash");
    ok = ok && add_ext(x, issuer ? issuer : x, NID_authority_key_identifier, "keyid:always");
    ok = ok && X509_sign(x, issuer_key, EVP_sha256()) > 0;
    if (!ok) {
        ERR_clear_error();
        rc = cu_err_set(CU_E_CRYPTO, "cannot issue the certificate '%s'", spec->cn);
        X509_free(x);
    } else {
        *_cert = x;
    }
    BN_free(bn);
    X509_NAME_free(name);
    return rc;
}

cu_rc cu_pki_write_cert(const char *path, X509 *cert, bool append)
{
    cu_prov__return_val_if_fail(path != NULL && cert != NULL, CU_E_INVALID_ARG);
    FILE *f = fopen(path, append ? "a" : "w");
    if (f == NULL)
        return cu_err_set_sys(CU_E_IO, errno, "cannot write %s", path);
    int ok = PEM_write_X509(f, cert);
    if (fclose(f) != 0 || !ok)
        return cu_err_set(CU_E_IO, "cannot write %s", path);
    return CU_OK;
}

cu_rc cu_pki_write_key(const char *path, EVP_PKEY *key)
{
    cu_prov__return_val_if_fail(path != NULL && key != NULL, CU_E_INVALID_ARG);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return cu_err_set_sys(CU_E_IO, errno, "cannot write %s", path);
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return cu_err_set_sys(CU_E_IO, errno, "cannot write %s", path);
    }
    int ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    if (fclose(f) != 0 || !ok)
        return cu_err_set(CU_E_IO, "cannot write %s", path);
    return CU_OK;
}

cu_rc cu_pki_read_key(const char *path, EVP_PKEY **_key)
{
    cu_prov__return_val_if_fail(path != NULL && _key != NULL, CU_E_INVALID_ARG);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return cu_err_set_sys(CU_E_IO, errno, "cannot read %s", path);
    *_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (*_key == NULL) {
        ERR_clear_error();
        return cu_err_set(CU_E_INVALID_ARG, "%s: not a PEM private key", path);
    }
    return CU_OK;
}

cu_rc cu_pki_read_cert(const char *path, X509 **_cert)
{
    cu_prov__return_val_if_fail(path != NULL && _cert != NULL, CU_E_INVALID_ARG);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return cu_err_set_sys(CU_E_IO, errno, "cannot read %s", path);
    *_cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (*_cert == NULL) {
        ERR_clear_error();
        return cu_err_set(CU_E_INVALID_ARG, "%s: not a PEM certificate", path);
    }
    return CU_OK;
}
