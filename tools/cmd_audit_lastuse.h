/* The "last use" of each key in `custos audit custody`: what the audit log
 * of a state directory last said about a token key — the service's
 * key.use records (one per key per minute) and the token.keygen /
 * token.import records of the command line — matched to the key by the
 * pkcs11: URI the record names it with. */
#ifndef CU_CMD_AUDIT_LASTUSE_H
#define CU_CMD_AUDIT_LASTUSE_H

#include <custos/token.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cu_lastuse cu_lastuse;

/* Reads the audit log of state_dir (read-only, no keyring needed): the
 * store $CUSTOS_STORE names (with $CUSTOS_STORE_PASSWORD_FILE) when set,
 * else its custos.db. A state without a database has no log
 * (cu_lastuse_have_log false). Returns CU_EXIT_OK, or CU_EXIT_FAIL with a
 * message. */
int cu_lastuse_load(const char *state_dir, cu_lastuse **_out);
/* The same from the store spec names (a custosd config's `store`, with
 * its password file pw), which comes before $CUSTOS_STORE; spec NULL: as
 * cu_lastuse_load. */
int cu_lastuse_load_spec(const char *state_dir, const char *spec, const char *pw, cu_lastuse **_out);
void cu_lastuse_free(cu_lastuse *lu);
bool cu_lastuse_have_log(const cu_lastuse *lu);
size_t cu_lastuse_records(const cu_lastuse *lu); /* key.use, keygen, import records read */

/* What the log last said about a key. */
typedef struct cu_lastuse_hit {
    bool found;
    uint64_t seq;
    char type[48];   /* key.use, token.keygen, token.import */
    char at[32];     /* key.use: the minute; otherwise the record's time */
    unsigned long count; /* key.use: uses in that minute */
    char role[24];   /* key.use: the key's role for the service, if said */
    char actor[160];
} cu_lastuse_hit;

/* The last record (highest seq) whose key URI names this key: every
 * token attribute it has (token, serial, manufacturer, model) and every
 * object attribute (object = label, id, type) must be the key's, and it
 * must name the object (object= or id=). id_hex: the key's CKA_ID in
 * lower-case hex. */
void cu_lastuse_find(const cu_lastuse *lu, const cu_token_desc *tok, const char *label, const char *id_hex,
                     cu_class cls, cu_lastuse_hit *_hit);

/* The last key.use record of a key file: custosd names one "file:" and its
 * absolute path. */
void cu_lastuse_find_file(const cu_lastuse *lu, const char *path, cu_lastuse_hit *_hit);

/* Whether a pkcs11: URI names this key (as cu_lastuse_find matches), and
 * whether it names this token: it has a token attribute (token, serial,
 * manufacturer, model) and each it has is the token's. */
bool cu_lastuse_uri_names_key(const char *uri, const cu_token_desc *tok, const char *label, const char *id_hex,
                              cu_class cls);
bool cu_lastuse_uri_names_token(const char *uri, const cu_token_desc *tok);

/* The hit in words: "2026-11-28T00:57Z: 12 uses that minute (key.use #10,
 * keyring, custosd@vm)", "generated 2026-...: no use recorded since
 * (token.keygen #5)", "never recorded", or, without a log, "unknown (no
 * audit log read: give --state DIR)". */
void cu_lastuse_text(const cu_lastuse *lu, const cu_lastuse_hit *h, char *out, size_t size);

#endif
