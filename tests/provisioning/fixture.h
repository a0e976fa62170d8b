/* Shared fixtures of the provisioning tests: a temporary store under the
 * software keyring, and test PKI. */
#ifndef CU_PROV_FIXTURE_H
#define CU_PROV_FIXTURE_H

#include <custos/enrollment.h>
#include <custos/keyring.h>
#include <custos/pki.h>
#include <custos/prov.h>
#include <custos/store.h>
#include <custos/x509.h>

#include <cu_test.h>

typedef struct fx {
    char *dir;
    char *spec;    /* what the store is: DIR, or a PostgreSQL URI with its own schema */
    char *schema;  /* PostgreSQL: the schema made for this fixture */
    cu_keyring *kr;
    cu_store *store;
    cu_prov *prov;
} fx;

/* Fresh directory, software keyring with a fixed test key, store, engine
 * (id scope "0ne00000001", skew 60 s). Returns 0 on success.
 * The backend: SQLite in the directory, or with CUSTOS_TEST_STORE=postgresql
 * a fresh schema in the server of tests/common/pg_fixture.sh whose
 * directory is CUSTOS_TEST_PG_DIR. */
int fx_open(fx *f, const char *tag);
void fx_close(fx *f);
/* True when the fixture runs on PostgreSQL. */
bool fx_is_pg(void);
/* Another store over the same database (kr borrowed). */
cu_rc fx_store_reopen(fx *f, cu_keyring *kr, cu_store **_s);
/* Runs one SQL statement straight on the database, behind the store's back
 * (tampering tests); returns the rows it changed, or -1. */
int fx_sql(fx *f, const char *sql);

/* A CA or device certificate with its key. */
typedef struct tcert {
    X509 *cert;
    EVP_PKEY *key;
} tcert;

/* Issues: ca = CA:TRUE, else a client-auth end entity; issuer NULL = self. */
int tc_make(tcert *out, const char *cn, bool ca, const tcert *issuer, long nb, long na);
void tc_free(tcert *t);
/* Replaces one extension of t's certificate (value NULL: removes it) and
 * signs it again with issuer's key (issuer NULL: t's own): certificates a
 * CA would not issue. Returns 0 on success. */
int tc_set_ext(tcert *t, const tcert *issuer, int nid, const char *value);
/* PEM of one certificate (caller frees). */
char *tc_pem(const tcert *t);
/* The same, escaped for a JSON string (newlines as \n; caller frees). */
char *tc_pem_json(const tcert *t);
/* A chain of leaf + intermediates as cu_x509_chain (NULL-terminated list). */
cu_x509_chain *tc_chain(const tcert *leaf, ...);

/* The seed document's PKI: root -> A -> devices 1-3, root -> B -> devices
 * 4-5; each device's chain is what it sends, its leaf and the intermediate
 * (not the root). fx_seed_make returns 0, or -1 with what it made freed. */
typedef struct fx_seed {
    tcert root, ca_a, ca_b, dev[5];
    cu_x509_chain *chain[5];
} fx_seed;
extern const char *const fx_seed_ids[5];
int fx_seed_make(fx_seed *s);
void fx_seed_free(fx_seed *s);

/* Adds an enrollment from JSON (printf-style); returns the cu_rc. */
cu_rc fx_put_json(fx *f, cu_enr_kind kind, char *reason, size_t rlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* An X.509 group / individual enrollment for cert with status. */
cu_rc fx_group_x509(fx *f, const char *id, const tcert *ca, bool enabled);
cu_rc fx_individual_x509(fx *f, const char *regid, const tcert *leaf, bool enabled);
/* Registers a device by X.509 chain; returns the outcome. */
cu_prov_outcome fx_register_x509(fx *f, const char *regid, const cu_x509_chain *chain, char *reason,
                                 size_t rlen);
/* True if a registration record exists for regid. */
bool fx_has_record(fx *f, const char *regid);
/* The marshalled TPM2B_PUBLIC an RSA-2048 EK (or SRK) of the standard
 * template would have for rsa's public key: FX_TPM_PUB_LEN bytes, or 0 if
 * rsa is not RSA-2048. */
#define FX_TPM_PUB_LEN 316
size_t fx_tpm_rsa_pub(EVP_PKEY *rsa, uint8_t out[FX_TPM_PUB_LEN]);
/* Base64 of n bytes (caller frees). */
char *fx_b64(const uint8_t *p, size_t n);
/* fx_b64 of fx_tpm_rsa_pub (caller frees); NULL on error. */
char *fx_tpm_rsa_pub_b64(EVP_PKEY *rsa);

#endif
