/* Custos: the audit log — append-only, hash-chained records of every
 * provisioning decision, every change to enrollments, groups, CA
 * certificates, hubs and settings, token administration and the service's
 * key uses; with periodically signed chain heads.
 *
 * The chain logic lives here (core/audit.c), over any store backend: a
 * backend only keeps rows (cu_store_backend.audit_*) and serializes appends
 * inside its write transaction. docs/audit.md describes the canonical form,
 * the chain, the signed heads and what each verification failure means. */
#ifndef CUSTOS_AUDIT_H
#define CUSTOS_AUDIT_H

#include <custos/rc.h>

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cu_store;

#define CU_AUDIT_TYPE_MAX 48   /* bytes with the NUL */
#define CU_AUDIT_ACTOR_MAX 160 /* bytes with the NUL */

/* One record. In the chain, hash = SHA-256(canonical bytes) and prev is the
 * hash of record seq-1 (32 zero bytes for seq 1). */
typedef struct cu_audit_record {
    uint64_t seq;                   /* 1, 2, 3, ... without gaps */
    char at[32];                    /* 2026-11-27T22:34:57.1234567Z */
    char type[CU_AUDIT_TYPE_MAX];   /* "registration", "enrollment.update", ... */
    char actor[CU_AUDIT_ACTOR_MAX]; /* "cli:root@host", "service-api:policy", "device:<id>" */
    char *payload;                  /* compact JSON object (heap) */
    uint8_t prev[32];
    uint8_t hash[32];
} cu_audit_record;

/* A signed chain head: the service's audit key signed (seq, hash, at). */
typedef struct cu_audit_head {
    uint64_t seq;
    char at[32];
    uint8_t hash[32];
    char key_id[65]; /* lower-case hex SHA-256 of the public key's SubjectPublicKeyInfo DER */
    uint8_t *sig;    /* heap */
    size_t sig_len;
} cu_audit_head;

void cu_audit_records_free(cu_audit_record *r, size_t n);
void cu_audit_heads_free(cu_audit_head *h, size_t n);

/* The canonical bytes of a record (caller frees with free()):
 *   "custos-audit-v1" 0x00
 *   seq (8 bytes, big-endian)
 *   at, type, actor, payload, each as a 4-byte big-endian length + bytes
 *   prev (32 bytes)
 * Length prefixes make every field boundary unambiguous. */
cu_rc cu_audit_canonical(const cu_audit_record *r, uint8_t **_buf, size_t *_len);
/* SHA-256 of the canonical bytes. */
cu_rc cu_audit_record_hash(const cu_audit_record *r, uint8_t out[32]);
/* The bytes a head signature covers:
 *   "custos-audit-head-v1" 0x00, seq (8 bytes BE), hash (32), at (4-byte BE length + bytes). */
cu_rc cu_audit_head_message(const cu_audit_head *h, uint8_t **_buf, size_t *_len);
/* Key id of a public key (hex SHA-256 of its SubjectPublicKeyInfo DER). */
cu_rc cu_audit_key_id(EVP_PKEY *key, char out[65]);

/* ---- writing ---- */

/* Appends a record to the chain inside the store's current transaction
 * (or its own): the record is committed with the change it describes or
 * not at all. payload_json must be a JSON object; the actor is the store's
 * (cu_store_set_actor) when actor is NULL. May sign the head (see
 * cu_audit_set_signer). *_seq (may be NULL) receives the new seq. */
cu_rc cu_audit_append(struct cu_store *s, const char *type, const char *actor, const char *payload_json,
                      uint64_t *_seq);

/* Signs the chain head automatically inside an append's transaction after
 * every_n records or every_secs seconds since the last signed head or this
 * call, whichever is later (either 0: that trigger off). Takes a new reference to key (NULL: stop signing).
 * The key may live in a token: only EVP_DigestSign is used (SHA-256; none
 * for Ed25519/Ed448). The store keeps it until closed or replaced. */
cu_rc cu_audit_set_signer(struct cu_store *s, EVP_PKEY *key, unsigned every_n, unsigned every_secs);
/* The key of cu_audit_set_signer, or NULL (borrowed). */
EVP_PKEY *cu_audit_get0_signer(struct cu_store *s);
/* Signs the current head now with key (or the signer set above when key is
 * NULL), in its own transaction. Nothing to sign (empty log, or the head is
 * already signed) is CU_OK with *_seq = the head's seq. */
cu_rc cu_audit_sign_head(struct cu_store *s, EVP_PKEY *key, uint64_t *_seq);
/* For a service timer: signs when the signer is set, the head is unsigned
 * and every_secs have passed since the last signed head (or the signer was
 * set). An automatic
 * signature that failed (the key's token unavailable) does not fail the
 * change being recorded; it is retried after 10 s and this call tries it
 * at once and returns its error for the service to log. */
cu_rc cu_audit_sign_if_due(struct cu_store *s);

/* The service's own key uses, counted per key per minute in memory (for
 * the whole process, thread-safe) and written as one "key.use" record per
 * key per minute when the minute is over (through whichever store the next
 * call passes). key_id names the key (a pkcs11: URI without PIN, or a
 * label); at most 255 bytes. */
cu_rc cu_audit_key_use(struct cu_store *s, const char *key_id);
/* The same with an explicit count and time (now 0: the clock). */
cu_rc cu_audit_key_use_n(struct cu_store *s, const char *key_id, unsigned long count, time_t now);
/* Writes every pending count now: at shutdown (cu_store_close writes only
 * the minutes that are over), or before a report. */
cu_rc cu_audit_key_use_flush(struct cu_store *s);
/* Counts n uses of a key in the minute of now (0: the clock) in memory
 * only: it never writes, so it may be called on any thread, inside another
 * transaction, or where no store is at hand (a TLS handshake callback, a
 * keyring). role ("tls-server", "keyring", "audit", ...) and op (what the
 * use was: "handshake", "mac", "wrap", "sign", ...) may be NULL; each is a
 * word of at most 23 bytes. The record then carries "role" and "uses"
 * (the count by op, at most 6 ops a minute; more are counted as "other").
 * The counts are written by cu_audit_key_use_flush_due (e.g. a timer at each
 * minute boundary) or cu_audit_key_use_flush (at shutdown). */
cu_rc cu_audit_key_count(const char *key_id, const char *role, const char *op, unsigned long n, time_t now);
/* Writes the counts of the minutes that are over, one "key.use" record per
 * key per minute. */
cu_rc cu_audit_key_use_flush_due(struct cu_store *s);
/* Counts every head this store signs with the signer of
 * cu_audit_set_signer (automatic or cu_audit_sign_head with key NULL) as a
 * use of key_name (role "audit", op "sign") with cu_audit_key_count. NULL:
 * not counted (the default: only a service records its own key uses). */
cu_rc cu_audit_set_signer_name(struct cu_store *s, const char *key_name);

/* Token administration from the command line (custos token ...): appends a
 * "token.<kind>" record to the audit log of the state directory state_dir
 * (created if needed; the log needs no service keyring). kind is one of
 * keygen, import, destroy, pin-change, login-failed (or another short
 * lower-case word); token_desc says which token (label, serial, kind);
 * key_uri names the key (any pin-value / pin-source is removed before it is
 * written); result is "ok" or the failure. Any of token_desc, key_uri,
 * result may be NULL. */
cu_rc cu_audit_token_event(const char *state_dir, const char *actor, const char *kind, const char *token_desc,
                           const char *key_uri, const char *result);
/* The same into an open store (one opened for the audit log only will do):
 * custosd's own token logins. */
cu_rc cu_audit_token_event_to(struct cu_store *s, const char *actor, const char *kind, const char *token_desc,
                              const char *key_uri, const char *result);

/* ---- reading ---- */

/* Records with seq >= from_seq, in order, at most limit (callee-allocated;
 * free with cu_audit_records_free). */
cu_rc cu_audit_read(struct cu_store *s, uint64_t from_seq, size_t limit, cu_audit_record **_r, size_t *_n);
/* Signed heads with seq >= from_seq, in order, at most limit. */
cu_rc cu_audit_heads_read(struct cu_store *s, uint64_t from_seq, size_t limit, cu_audit_head **_h, size_t *_n);
/* The record as one line of JSON (no newline; caller frees):
 * {"seq":..,"at":..,"type":..,"actor":..,"payload":{..},"prev":hex,"hash":hex} */
char *cu_audit_record_to_json(const cu_audit_record *r);
/* Exports records with seq >= since_seq and (when since is not 0) time >=
 * since as JSON lines through line() (stops at its first error). */
cu_rc cu_audit_export(struct cu_store *s, uint64_t since_seq, time_t since,
                      cu_rc (*line)(void *ctx, const char *json), void *ctx);

/* ---- verifying ---- */

typedef enum cu_audit_fault {
    CU_AUDIT_OK = 0,
    CU_AUDIT_MISSING,         /* a seq is absent: the record was deleted */
    CU_AUDIT_LINK,            /* prev is not the predecessor's hash: reordered, inserted, or the
                                 predecessor replaced */
    CU_AUDIT_EDITED,          /* the record's content does not give its hash: edited */
    CU_AUDIT_MALFORMED,       /* a field is not of its form (hash length, payload not JSON) */
    CU_AUDIT_HEAD_MISMATCH,   /* a signed head names another hash than the record at its seq:
                                 records up to it were rewritten (and re-chained) */
    CU_AUDIT_HEAD_SIGNATURE,  /* a head's signature does not verify with the given key(s) */
    CU_AUDIT_TRUNCATED,       /* a signed head is beyond the last record: the tail was deleted */
} cu_audit_fault;

const char *cu_audit_fault_str(cu_audit_fault f);



typedef struct cu_audit_report {
    uint64_t records;          /* records read */
    uint64_t last_seq;         /* the last record's seq (0: empty) */
    uint64_t heads;            /* signed heads read */
    uint64_t heads_verified;   /* of those, signatures verified (0 without a key) */
    uint8_t last_hash[32];     /* the last record's hash */
    uint64_t last_signed_seq;  /* the last signed head's seq (0: none) */
    char last_signed_at[32];
    uint8_t last_signed_hash[32];
    cu_audit_fault fault;      /* the first failure, in seq order */
    uint64_t fault_seq;        /* the first record that does not verify */
    char what[512];            /* what is wrong there, in words */
} cu_audit_report;

/* Checks the whole chain from seq 1 and every signed head: hashes, links,
 * gaps, and (when keys are given) each head's signature by one of keys
 * (public keys; several for a rotated audit key). Stops at the first
 * failure.
 * @retval CU_OK the log verifies
 * @retval CU_E_VERIFY a failure, described in *_rep (fault, fault_seq, what)
 * @retval store errors (the check could not run) */
cu_rc cu_audit_verify(struct cu_store *s, EVP_PKEY *const *keys, size_t nkeys, cu_audit_report *_rep);

/* After a verification, checks a head kept elsewhere (a previous verify's
 * output, an export): the record seq must still be in the log with that
 * hash. This catches what the log cannot show by itself: the tail cut off
 * together with the heads signed over it. _rep must be the report of a
 * cu_audit_verify of the same store that returned CU_OK.
 * @retval CU_OK, CU_E_VERIFY (fault TRUNCATED or HEAD_MISMATCH in *_rep) */
cu_rc cu_audit_check_kept_head(struct cu_store *s, uint64_t seq, const uint8_t hash[32], cu_audit_report *_rep);

#ifdef __cplusplus
}
#endif
#endif
