/* Custos: the store — enrollments, groups, CA certificates, hubs and
 * registration records, behind one interface.
 *
 * A backend (SQLite, PostgreSQL) only keeps sealed documents and index
 * keys: the common layer above it validates, stamps etags and timestamps,
 * wraps enrollment secrets with the keyring and seals every row with it,
 * and checks the seal of every row it reads. So someone who can
 * write to the database can neither read a key nor add a trust anchor nor
 * flip a status. */
#ifndef CUSTOS_STORE_H
#define CUSTOS_STORE_H

#include <custos/audit.h>
#include <custos/enrollment.h>
#include <custos/keyring.h>
#include <custos/rc.h>
#include <custos/record.h>

#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cu_store cu_store;

/* What the store holds. The numbers are stored: never renumber. */
typedef enum cu_store_kind {
    CU_KIND_ENROLLMENT = 1,
    CU_KIND_GROUP = 2,
    CU_KIND_CA = 3,
    CU_KIND_HUB = 4,
    CU_KIND_REGISTRATION = 5,
    CU_KIND_TPM_CHALLENGE = 6,
    CU_KIND_OPERATION = 7,
} cu_store_kind;

/* ---- backend interface ---- */

/* Every function returns CU_OK or an error with cu_err set; "not found" is
 * CU_E_OBJECT_NOT_FOUND. ids are already lower-cased by the common layer. */
typedef struct cu_store_backend {
    const char *name;
    cu_rc (*begin)(void *b);
    cu_rc (*commit)(void *b);
    void (*rollback)(void *b);
    /* *_body is a heap string; seal is 32 bytes. */
    cu_rc (*get)(void *b, int kind, const char *id, char **_body, uint8_t seal[32]);
    /* Insert or replace the document and replace its index keys; keys
     * NULL: a kind that never has any (hubs, operations, TPM
     * challenges), so there are none to replace. */
    cu_rc (*put)(void *b, int kind, const char *id, const char *body, const uint8_t seal[32],
                 const char *const *keys, size_t nkeys);
    cu_rc (*del)(void *b, int kind, const char *id);
    /* ids > after (NULL: from the start) in order, at most limit. */
    cu_rc (*list)(void *b, int kind, const char *after, size_t limit, char ***_ids, size_t *_n);
    /* ids > after (NULL: from the start) whose index keys include key, in
     * order, at most limit. */
    cu_rc (*find)(void *b, int kind, const char *key, const char *after, size_t limit, char ***_ids,
                  size_t *_n);
    cu_rc (*count)(void *b, int kind, uint64_t *_n);
    cu_rc (*meta_get)(void *b, const char *name, char **_value);
    cu_rc (*meta_put)(void *b, const char *name, const char *value);
    /* Schema 1's unchained event table; no longer called (kept for the
     * layout of this table). */
    cu_rc (*audit)(void *b, const char *event_json);
    void (*close)(void *b);

    /* ---- the audit log (audit.h) ----
     * Rows only: the common layer (core/audit.c) numbers, chains, hashes and
     * signs them. It calls audit_last and audit_append inside the write
     * transaction, which must serialize appends so that two writers never
     * chain onto the same predecessor (SQLite: BEGIN IMMEDIATE already
     * holds the one write lock; PostgreSQL: audit_last takes
     * pg_advisory_xact_lock on the log, then reads the last record in a
     * statement of its own, so its snapshot sees the last committed append;
     * the lock holds until commit). Rows are never updated or deleted by
     * Custos. */
    /* The last record's seq and hash (seq 0, zero hash when empty). */
    cu_rc (*audit_last)(void *b, uint64_t *_seq, uint8_t hash[32]);
    cu_rc (*audit_append)(void *b, const cu_audit_record *r);
    /* Records with seq >= from, in seq order, at most limit; a row that is
     * not of its form is still returned (zero-filled where it is not), for
     * the verifier to name. */
    cu_rc (*audit_read)(void *b, uint64_t from, size_t limit, cu_audit_record **_r, size_t *_n);
    /* Keeps an existing head at h->seq (never replaces one: a head that
     * names another hash there is the evidence of a rewritten tail). */
    cu_rc (*audit_head_put)(void *b, const cu_audit_head *h);
    cu_rc (*audit_heads_read)(void *b, uint64_t from, size_t limit, cu_audit_head **_h, size_t *_n);

    /* Optional (NULL: the backend keeps no shared counters). Counts one
     * request against key in a fixed window of window seconds; *_wait is 0
     * while at most limit were counted in it, else the seconds left. */
    cu_rc (*rate_hit)(void *b, const char *key, unsigned window, unsigned limit, unsigned *_wait);
    /* Optional, with rate_hit: takes back one request counted in key's
     * current window (one that turned out not to be the device's). */
    cu_rc (*rate_undo)(void *b, const char *key);
    /* Optional (NULL: always reachable, as an embedded database is). One
     * round trip to the database, reconnecting if due. */
    cu_rc (*ping)(void *b);
    /* Optional (NULL: no write-ahead log for the process to look after;
     * cu_store_wal_defer). */
    cu_rc (*wal_defer)(void *b, void (*due)(void *arg), void *arg);
    cu_rc (*checkpoint)(void *b, unsigned long *_left);
    /* Optional: a document's index keys in bytewise order (none: *_n 0),
     * for custos store migrate's verification (NULL: not a target). */
    cu_rc (*doc_keys)(void *b, int kind, const char *id, char ***_keys, size_t *_n);
} cu_store_backend;

/* Opens a store over a backend (takes b; the keyring is borrowed and must
 * outlive the store). Refuses a keyring other than the one the store was
 * created with. */
cu_rc cu_store_open_backend(const cu_store_backend *ops, void *b, cu_keyring *kr, cu_store **_out);
/* SQLite at path (created, WAL, migrated to the current schema). */
cu_rc cu_store_open_sqlite(const char *path, cu_keyring *kr, cu_store **_out);
/* SQLite at path for the audit log only, without the service keyring (an
 * auditor's copy of the database and the audit key's public part are
 * enough to verify): cu_audit_read/verify/export, and with writable also
 * cu_audit_sign_head. Every sealed document read or write fails. Read-only
 * needs the current schema (CU_STORE_SCHEMA_VERSION); writable migrates. */
cu_rc cu_store_open_audit_only(const char *path, bool writable, cu_store **_out);
/* The state directory convention: DIR/custos.db (DIR created 0700). */
cu_rc cu_store_open_dir(const char *state_dir, cu_keyring *kr, cu_store **_out);
/* PostgreSQL (libpq): conninfo is a postgresql:// URI or a "key=value"
 * string. The password comes from password_file (first line; NULL: none),
 * else libpq's own PGPASSWORD / PGPASSFILE / ~/.pgpass — never from argv.
 * Migrated to the current schema; every error names host:port/dbname,
 * never the password. One connection per store: open one per thread. */
cu_rc cu_store_open_postgres(const char *conninfo, const char *password_file, cu_keyring *kr, cu_store **_out);
/* True for "postgresql://...", "postgres://..." and "postgresql:KEY=VALUE ...". */
bool cu_store_spec_is_postgres(const char *spec);
/* Opens what spec names: PostgreSQL (above), "sqlite:PATH", a state
 * directory (DIR/custos.db) or an SQLite file. */
cu_rc cu_store_open_spec(const char *spec, const char *password_file, cu_keyring *kr, cu_store **_out);
/* cu_store_open_audit_only for any spec (a PostgreSQL one migrates). */
cu_rc cu_store_open_audit_only_spec(const char *spec, const char *password_file, bool writable,
                                    cu_store **_out);
void cu_store_close(cu_store *s);
const char *cu_store_backend_name(const cu_store *s);
/* What cu_store_migrate_from_sqlite did. */
typedef struct cu_store_migrate_report {
    uint64_t docs, keys, settings; /* upserted (all of the source's) */
    uint64_t audit_records;        /* audit records copied */
    uint64_t audit_skipped;        /* ... already in the target (a re-run) */
    uint64_t audit_heads;          /* signed heads (kept if already there) */
    char docs_sha256[65];          /* checksum of the documents, equal on both sides */
    char audit_last_hash[65];      /* the chain's last hash, equal on both sides */
} cu_store_migrate_report;
/* Called as the copy goes: phase ("audit log", "documents", "verify"). */
typedef void (*cu_store_progress_fn)(void *arg, const char *phase, uint64_t done, uint64_t total);
/* Copies the SQLite store at sqlite_path into dst (any backend, opened
 * with the same keyring): documents with their index keys and seals,
 * settings, audit records and heads; then verifies counts, checksums and
 * the audit chain on both sides. Re-runnable (upserts; audit records
 * already there are checked, not copied). Refuses (CU_E_STATE, nothing
 * written) a target whose audit log is not the beginning of the source's.
 * @retval CU_E_VERIFY the verification pass found a difference */
cu_rc cu_store_migrate_from_sqlite(const char *sqlite_path, cu_store *dst, cu_store_progress_fn progress, void *arg,
                                   cu_store_migrate_report *_rep);
/* Schema version of the SQLite backend. */
#define CU_STORE_SCHEMA_VERSION 3

/* Who the changes made through this store are attributed to in the audit
 * log, e.g. "cli:root@host" or "service-api:policy-name" (copied, at most
 * CU_AUDIT_ACTOR_MAX-1 bytes). Default "local:<user>@<host>" of the process. */
cu_rc cu_store_set_actor(cu_store *s, const char *actor);
const char *cu_store_get0_actor(const cu_store *s);

/* Transactions nest (only the outermost commits). Use them around bulk
 * imports; single operations open their own. */
cu_rc cu_store_begin(cu_store *s);
cu_rc cu_store_commit(cu_store *s);
void cu_store_rollback(cu_store *s);

/* Plain key/value settings (id scope, default allocation policy, ...),
 * sealed too. */
cu_rc cu_store_setting_get(cu_store *s, const char *name, char **_value);
cu_rc cu_store_setting_put(cu_store *s, const char *name, const char *value);

/* A request window shared by every process on the store (per-device rate
 * limits across custosd nodes): see cu_store_backend.rate_hit.
 * @retval CU_E_UNSUPPORTED the backend has none (SQLite: one node, whose
 *         memory is enough) */
cu_rc cu_store_rate_hit(cu_store *s, const char *key, unsigned window, unsigned limit, unsigned *_wait);
/* Takes back one request cu_store_rate_hit counted (never below zero). */
cu_rc cu_store_rate_undo(cu_store *s, const char *key);

/* Whether the database answers now (custosd's /healthz): CU_OK, or
 * CU_E_IO with cu_store_last_http_status() 503. Touches no row and no key. */
cu_rc cu_store_ping(cu_store *s);

/* SQLite's write-ahead log, copied back off the request path: a
 * connection that defers no longer checkpoints at its commits (the copy
 * and two fsyncs, while holding the write lock); instead, after a commit
 * that leaves the log as long as a checkpoint was due at, it calls
 * due(arg) on the committing thread (which must only signal), and someone
 * calls cu_store_checkpoint, as custosd does from a thread of its own.
 * cu_store_checkpoint copies what no reader still needs, without waiting
 * for readers or writers; *_left: the pages it had to leave. Both are
 * no-ops (CU_OK, 0 left) on a backend without such a log (PostgreSQL
 * checkpoints by itself). */
cu_rc cu_store_wal_defer(cu_store *s, void (*due)(void *arg), void *arg);
cu_rc cu_store_checkpoint(cu_store *s, unsigned long *_left);

/* After a refusal with CU_E_STATE: the HTTP status it stands for, 409 (the
 * entry exists, or is still referenced, or — PostgreSQL — another node
 * changed it concurrently: retry) or 412 (stale etag); after CU_E_IO 503
 * when the database is unreachable (retry later); 0 otherwise.
 * The other refusals map directly: CU_E_OBJECT_NOT_FOUND 404,
 * CU_E_INVALID_ARG 400, CU_E_VERIFY (a row failed its seal) 500. Per thread.
 * (A distinct cu_rc for each would be better; see the report to the lead.) */
int cu_store_last_http_status(void);

/* ---- enrollments and groups ---- */

enum {
    CU_STORE_CREATE = 1 << 0,  /* fail with CU_E_STATE if the entry exists */
    CU_STORE_REPLACE = 1 << 1, /* fail with CU_E_OBJECT_NOT_FOUND if it does not */
};

/* Writes an enrollment or group. if_match (NULL: none) must equal the stored
 * etag (stale → CU_E_STATE, "412"). On success e carries its new etag and
 * timestamps. Groups on caReferences need a verified CA of that name.
 * Refusals write a reason and write nothing. */
cu_rc cu_store_enr_put(cu_store *s, cu_enr *e, const char *if_match, unsigned flags,
                       char *reason, size_t reason_len);
cu_rc cu_store_enr_get(cu_store *s, cu_enr_kind kind, const char *id, cu_enr **_out);
cu_rc cu_store_enr_delete(cu_store *s, cu_enr_kind kind, const char *id, const char *if_match,
                          char *reason, size_t reason_len);

/* Paging over ids in order: start with after = NULL, then the last id. */
cu_rc cu_store_list(cu_store *s, cu_store_kind kind, const char *after, size_t limit,
                    char ***_ids, size_t *_n);
void cu_store_ids_free(char **ids, size_t n);
cu_rc cu_store_count(cu_store *s, cu_store_kind kind, uint64_t *_n);

/* Groups whose signing certificate (or referenced CA) is exactly cert. */
cu_rc cu_store_groups_by_cert(cu_store *s, X509 *cert, char ***_ids, size_t *_n);
/* Symmetric-key groups (to try the derived keys of each), all of them (at
 * most CU_STORE_MAX_SYMKEY_GROUPS_CEILING). */
cu_rc cu_store_symkey_groups(cu_store *s, char ***_ids, size_t *_n);

/* How many symmetric-key enrollment groups a store may hold. A device names
 * no group, so the engine tries every one of them for a token it cannot
 * verify otherwise: two key unwraps and up to four HMACs per group, for any
 * token of an unknown id (docs/provisioning.md). Creating a group (or
 * turning one into a symmetric-key group) past the limit is refused
 * (CU_E_INVALID_ARG, 400, the limit named); lowering it removes nothing.
 * The setting "maxSymmetricKeyGroups" holds it; the default is generous
 * (the public service allows 100). */
#define CU_STORE_DEFAULT_MAX_SYMKEY_GROUPS 1000
#define CU_STORE_MAX_SYMKEY_GROUPS_CEILING 1000000
cu_rc cu_store_symkey_group_limit(cu_store *s, unsigned long *_max);
/* @retval CU_E_INVALID_ARG max is 0 or above the ceiling */
cu_rc cu_store_set_symkey_group_limit(cu_store *s, unsigned long max);
/* Pushes onto anchors every trusted certificate (group signing certificates
 * and verified CAs, seals checked) whose subject is name (new references). */
cu_rc cu_store_anchors_by_subject(cu_store *s, const X509_NAME *name, STACK_OF(X509) *anchors);

/* ---- CA certificates (proof of possession) ---- */

/* Registers a CA certificate under name; verified = "verified on upload". */
cu_rc cu_store_ca_add(cu_store *s, const char *name, const char *cert_text, bool verified,
                      char *reason, size_t reason_len);
/* The CA as JSON (name, certificate, subject, thumbprint, isVerified, ...). */
cu_rc cu_store_ca_get_json(cu_store *s, const char *name, char **_json);
cu_rc cu_store_ca_get_cert(cu_store *s, const char *name, X509 **_cert, bool *_verified);
/* Issues a fresh verification code (caller frees). */
cu_rc cu_store_ca_gen_code(cu_store *s, const char *name, const char *if_match, char **_code,
                           char *reason, size_t reason_len);
/* Proof of possession: cert_text must be signed by the CA's key, carry the
 * current verification code as its subject CN and be within its validity
 * period now. The code is one-time: a success removes it, so verifying
 * again (even with a fresh proof of the same code) is refused (CU_E_STATE,
 * "no verification code was issued") until a new code is issued.
 * if_match: the CA's etag (stale: CU_E_STATE, 412), NULL or "*" for any. */
cu_rc cu_store_ca_verify(cu_store *s, const char *name, const char *if_match,
                         const char *cert_text, char *reason, size_t reason_len);
cu_rc cu_store_ca_delete(cu_store *s, const char *name, const char *if_match, char *reason,
                         size_t reason_len);

/* ---- hubs ---- */
cu_rc cu_store_hub_put(cu_store *s, const cu_hub *hub, char *reason, size_t reason_len);
cu_rc cu_store_hub_get(cu_store *s, const char *name, cu_hub *_hub);
cu_rc cu_store_hub_delete(cu_store *s, const char *name);
/* All hubs in name order (*_hubs freed with free()). */
cu_rc cu_store_hub_list(cu_store *s, cu_hub **_hubs, size_t *_n);

/* ---- TPM challenges ---- */
/* Keeps the pending challenge of the latest 401 issued to a registration id
 * (replacing any earlier one): the string cu_tpmsvc_challenge_seal made,
 * which wraps the identity key with the keyring and binds it to the scope,
 * the id, the EK and an expiry. Kept in the store so that any node serving
 * the same store can verify the device's SAS. */
cu_rc cu_store_tpm_challenge_put(cu_store *s, const char *registration_id, const char *sealed);
/* *_sealed: caller frees. @retval CU_E_OBJECT_NOT_FOUND none pending */
cu_rc cu_store_tpm_challenge_get(cu_store *s, const char *registration_id, char **_sealed);
/* Consumes the pending challenge: a challenge answers one registration, so
 * the same SAS cannot register the device again while the challenge lives.
 * @retval CU_E_OBJECT_NOT_FOUND none pending
 * @retval CU_E_STATE another attempt took it first (409, PostgreSQL) */
cu_rc cu_store_tpm_challenge_del(cu_store *s, const char *registration_id);

/* ---- operations ---- */
/* What a device polls after its PUT: one per registration id (the latest
 * attempt, replacing any earlier one), text of the service's (custosd:
 * server/ops.c), sealed like every row. One row in the documents table, so
 * that it costs a registration's commit one page. */
cu_rc cu_store_op_put(cu_store *s, const char *registration_id, const char *text);
/* *_text: caller frees. @retval CU_E_OBJECT_NOT_FOUND none */
cu_rc cu_store_op_get(cu_store *s, const char *registration_id, char **_text);
/* The keyring the store was opened with (borrowed). */
cu_keyring *cu_store_get0_keyring(cu_store *s);

/* ---- registration records ---- */
cu_rc cu_store_reg_get(cu_store *s, const char *registration_id, cu_reg_record *_rec);
/* Writes the record (new etag, timestamps) and, when audit_json (a JSON
 * object) is given, a "registration" audit record in one transaction.
 * (cu_prov_register writes its own decision record in the same
 * transaction instead.) */
cu_rc cu_store_reg_put(cu_store *s, cu_reg_record *rec, const char *audit_json);
/* Registration ids of the devices provisioned through a group, paged like
 * cu_store_list (POST /registrations/{groupId}/query). */
cu_rc cu_store_reg_list_by_group(cu_store *s, const char *group_id, const char *after, size_t limit,
                                 char ***_ids, size_t *_n);
cu_rc cu_store_reg_delete(cu_store *s, const char *registration_id, const char *if_match,
                          char *reason, size_t reason_len);

#ifdef __cplusplus
}
#endif
#endif
