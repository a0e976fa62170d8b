/* Internal helpers shared by the files of libcustos_prov (cu_prov__ prefix: not
 * part of the public API, never declared in include/custos/). */
#ifndef CU_PROV_INT_H
#define CU_PROV_INT_H

#include <custos/rc.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Precondition check: records the failed expression and returns rc. */
#define cu_prov__return_val_if_fail(expr, rc)                                              \
    do {                                                                               \
        if (!(expr))                                                                   \
            return cu_err_set((rc), "%s: precondition failed: %s", __func__, #expr);   \
    } while (0)

/* Strict base64 (RFC 4648, padding required, no whitespace). *out is
 * NUL-terminated for convenience (caller frees with OPENSSL_clear_free). */
cu_rc cu_prov__b64_decode(const char *s, size_t len, uint8_t **out, size_t *outlen);
/* Base64 with padding; returns a heap string or NULL. */
char *cu_prov__b64_encode(const uint8_t *data, size_t len);

/* Percent-decoding with case-insensitive hex; '+' stays '+'. Rejects a '%'
 * not followed by two hex digits and decoded NULs. */
cu_rc cu_prov__pct_decode(const char *s, size_t len, char **out);

/* Lower-case hex of data into out (2*len+1 bytes). */
void cu_prov__hex(const uint8_t *data, size_t len, char *out);

/* "2022-08-31T22:02:50.5163352Z" for the current time (or t_override if
 * non-zero, for tests). out must hold 32 bytes. */
void cu_prov__timestamp(char out[32]);
/* Parses the same form (1 to 7 fractional digits optional). */
cu_rc cu_prov__timestamp_parse(const char *s, time_t *out);

/* A fresh quoted GUID-like etag: "\"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\"". */
void cu_prov__etag_new(char out[48]);

/* Writes a refusal reason into buf (if not NULL) and records it as the
 * thread's error; returns rc. */
cu_rc cu_prov__refuse(cu_rc rc, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ASCII case-insensitive equality. */
bool cu_prov__ieq(const char *a, const char *b);
/* Lower-cased heap copy. */
char *cu_prov__lower_dup(const char *s);

/* Registration ids: <= 128 chars of [A-Za-z0-9-._:], first and last char
 * alphanumeric (last may be '-'). */
bool cu_prov__regid_valid(const char *s);

#endif

/* ---- enrollment internals (enrollment.c) ---- */
#include <jansson.h>
struct cu_enr;
/* The enrollment's JSON (borrowed; the store edits etag and timestamps). */
json_t *cu_prov__enr_json(const struct cu_enr *e);
/* Wraps stored JSON that has already been validated once (takes j). */
cu_rc cu_prov__enr_wrap(int kind, json_t *j, struct cu_enr **_out);
/* Sets (or with val NULL removes) a top-level string field. */
cu_rc cu_prov__enr_set_str(struct cu_enr *e, const char *key, const char *val);
/* Borrowed attestation.symmetricKey object or NULL. */
json_t *cu_prov__enr_symkey_obj(const struct cu_enr *e);
/* Removes key material from a copy of an enrollment JSON (for output). */
void cu_prov__strip_keys(json_t *enr);

/* ---- x509 internals (x509.c) ---- */
#include <openssl/x509.h>
/* X509CertificateInfo JSON of the public API (new reference). */
json_t *cu_prov__x509_info(X509 *cert);

/* ---- store/record internals ---- */
#include <custos/record.h>
struct cu_store;
/* DeviceRegistrationState JSON; internal=true adds the bookkeeping fields. */
json_t *cu_prov__reg_record_json(const cu_reg_record *r, bool internal);

/* ---- engine internals (resolve.c / prov.c) ---- */
#include <custos/prov.h>
struct cu_prov {
    cu_store *store;
    char id_scope[64];
    unsigned skew;
    time_t now;
    long webhook_timeout_ms;
};
/* Runs attestation and precedence; on PROVISION *_enr is the deciding entry
 * (caller frees). Never writes. */
cu_rc cu_prov__resolve(cu_prov *p, const cu_prov_request *req, cu_prov_explain *ex, struct cu_enr **_enr);
/* The id scope TPM challenges are sealed to ("-" when the engine has none). */
const char *cu_prov__tpm_scope(const cu_prov *p);

/* ---- audit internals (core/audit.c, core/audit_events.c, store.c) ---- */
#include <custos/audit.h>
#include <openssl/evp.h>
/* The audit state a store carries (one per connection). */
typedef struct cu_prov__audit_cfg {
    char actor[CU_AUDIT_ACTOR_MAX];
    bool off;                 /* benchmarks only: no records written */
    EVP_PKEY *signer;         /* automatic head signatures, or NULL */
    char signer_id[65];       /* its key id, computed once (encoding a key is slow) */
    char signer_name[256];    /* counted as a key use per signature when set */
    unsigned every_n, every_secs;
    bool signed_known;        /* last_signed_* read from the store */
    uint64_t last_signed_seq;
    time_t last_signed_time;  /* not before signer_since */
    time_t signer_since;      /* when the signer was set: the time trigger's start */
    time_t retry_at;          /* after a failed automatic signature */
    cu_rc sign_rc;            /* that failure, for cu_audit_sign_if_due */
    char sign_msg[256];
} cu_prov__audit_cfg;
cu_prov__audit_cfg *cu_prov__store_audit_cfg(struct cu_store *s);
const struct cu_store_backend *cu_prov__store_backend(struct cu_store *s, void **_b);
/* Counts a write in the current transaction (a failure after it poisons
 * the outer transaction). */
void cu_prov__store_note_write(struct cu_store *s);
/* Appends a change record {"id","before","after"} (before/after may be NULL;
 * borrowed) of type "<domain>.<action>". */
cu_rc cu_prov__audit_change(struct cu_store *s, const char *type, const char *id, json_t *before, json_t *after);
/* A copy of an enrollment's JSON fit for the audit log: keys removed, the
 * webhook URL's query (often a function key) redacted. New reference. */
json_t *cu_prov__audit_enr_json(const struct cu_enr *e);
/* A store over b without a keyring (cu_store_open_audit_only). */
cu_rc cu_prov__store_open_unbound(const struct cu_store_backend *ops, void *b, struct cu_store **_out);
/* Sets what cu_store_last_http_status says for this thread (backends:
 * 409 on a concurrent change, 503 when the database is unreachable). */
void cu_prov__store_set_last_http(int status);
/* A PostgreSQL store without a keyring (cu_store_open_audit_only_spec). */
cu_rc cu_prov__store_open_postgres_audit(const char *conninfo, const char *password_file, struct cu_store **_out);
/* Writes the key-use counts of minutes before the current one. */
cu_rc cu_prov__audit_key_use_flush_finished(struct cu_store *s);
/* The decision record of a registration attempt (new reference). */
json_t *cu_prov__audit_decision(const cu_prov_request *req, const cu_prov_result *res);
