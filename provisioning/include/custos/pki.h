/* Custos: a small certificate factory for test chains (`custos pki`, the
 * tests, proof-of-possession certificates). Keys are EC P-256 made by
 * OpenSSL; the lead may add token-held keys through the provider. */
#ifndef CUSTOS_PKI_H
#define CUSTOS_PKI_H

#include <custos/rc.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cu_pki_spec {
    const char *cn;          /* subject CN (required) */
    const char *org;         /* subject O, or NULL */
    bool ca;                 /* basicConstraints CA:TRUE + keyCertSign; else an end entity */
    int pathlen;             /* for a CA: pathLenConstraint, or -1 for none */
    long not_before;         /* seconds relative to now (e.g. -3600) */
    long not_after;          /* seconds relative to now (e.g. 365*86400) */
    bool client_auth;        /* end entity: extendedKeyUsage clientAuth */
} cu_pki_spec;

/* A fresh EC P-256 key. */
cu_rc cu_pki_keygen(EVP_PKEY **_key);
/* Issues a certificate for subject_key signed by issuer_key (issuer NULL:
 * self-signed), SHA-256, random serial, SKI/AKI. */
cu_rc cu_pki_issue(const cu_pki_spec *spec, EVP_PKEY *subject_key, X509 *issuer,
                   EVP_PKEY *issuer_key, X509 **_cert);

/* PEM helpers (write files 0600 for keys). */
cu_rc cu_pki_write_cert(const char *path, X509 *cert, bool append);
cu_rc cu_pki_write_key(const char *path, EVP_PKEY *key);
cu_rc cu_pki_read_key(const char *path, EVP_PKEY **_key);
cu_rc cu_pki_read_cert(const char *path, X509 **_cert);

#ifdef __cplusplus
}
#endif
#endif
