/* Extension: the EK certificate of a TPM, checked against the TPM
 * manufacturers' roots an operator configures (TCG EK Credential Profile). */
#include "internal.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <string.h>

/* TCG EK certificates mark subjectAltName (TPM manufacturer, model,
 * version as a directoryName) critical when the subject is empty; OpenSSL
 * knows SAN. subjectDirectoryAttributes (TPM specification) may be critical
 * too and OpenSSL does not process it: accept exactly that one. */
static int verify_cb(int ok, X509_STORE_CTX *ctx)
{
    if (!ok && X509_STORE_CTX_get_error(ctx) == X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION) {
        X509 *c = X509_STORE_CTX_get_current_cert(ctx);
        int other = 0;
        for (int i = 0; i < X509_get_ext_count(c); i++) {
            X509_EXTENSION *e = X509_get_ext(c, i);
            int nid = OBJ_obj2nid(X509_EXTENSION_get_object(e));
            if (X509_EXTENSION_get_critical(e) && !X509_supported_extension(e) &&
                nid != NID_subject_directory_attributes)
                other = 1;
        }
        return other ? 0 : 1;
    }
    return ok;
}

static X509 *read_cert(const uint8_t *buf, size_t len)
{
    const unsigned char *p = buf;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x != NULL && p == buf + len)
        return x;
    X509_free(x);
    BIO *b = BIO_new_mem_buf(buf, (int)len);
    x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return x;
}

cu_rc cu_tpmsvc_ekcert_verify(const cu_tpmsvc_pub *ek, const uint8_t *cert, size_t cert_len,
                              const char *roots_file, const char *roots_dir,
                              const char *intermediates_file)
{
    cu_rc rc = CU_OK;
    X509 *x = NULL;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    STACK_OF(X509) *untrusted = NULL;
    EVP_PKEY *want = NULL;
    BIO *bio = NULL;

    if (ek == NULL || cert == NULL || cert_len == 0 || cert_len > 65536 ||
        (roots_file == NULL && roots_dir == NULL))
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_ekcert_verify: bad argument");
    ERR_set_mark();
    if ((x = read_cert(cert, cert_len)) == NULL) {
        rc = cu_err_set(CU_E_INVALID_ARG, "EK certificate: neither DER nor PEM");
        goto cleanup;
    }
    if ((store = X509_STORE_new()) == NULL || (ctx = X509_STORE_CTX_new()) == NULL ||
        (untrusted = sk_X509_new_null()) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if (X509_STORE_load_locations(store, roots_file, roots_dir) != 1) {
        rc = cu_err_set(CU_E_IO, "EK roots: cannot load %s", roots_file ? roots_file : roots_dir);
        goto cleanup;
    }
    if (intermediates_file != NULL) {
        if ((bio = BIO_new_file(intermediates_file, "r")) == NULL) {
            rc = cu_err_set(CU_E_IO, "EK intermediates: cannot read %s", intermediates_file);
            goto cleanup;
        }
        X509 *i;
        while ((i = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
            if (!sk_X509_push(untrusted, i)) {
                X509_free(i);
                rc = cu_err_set(CU_E_NOMEM, "out of memory");
                goto cleanup;
            }
    }
    X509_STORE_set_verify_cb(store, verify_cb);
    if (X509_STORE_CTX_init(ctx, store, x, untrusted) != 1) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if (X509_verify_cert(ctx) != 1) {
        rc = cu_err_set(CU_E_VERIFY, "EK certificate: %s",
                        X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
        goto cleanup;
    }
    if ((rc = cu_tpmsvc__pub_pkey(ek, &want)) != CU_OK)
        goto cleanup;
    if (EVP_PKEY_eq(X509_get0_pubkey(x), want) != 1) {
        rc = cu_err_set(CU_E_VERIFY, "EK certificate certifies another key than the device's EK");
        goto cleanup;
    }
cleanup:
    ERR_pop_to_mark();
    BIO_free(bio);
    EVP_PKEY_free(want);
    sk_X509_pop_free(untrusted, X509_free);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    X509_free(x);
    return rc;
}
