/* Helpers shared by the token commands of the CLI. */
#ifndef CU_TOKEN_UTIL_H
#define CU_TOKEN_UTIL_H

#include <custos/fixture.h>
#include <custos/token.h>
#include <stdbool.h>

typedef struct cu_tok_target {
    cu_fixture *fixture; /* when opened through a token directory */
    bool started;        /* this command started the token's swtpm: stop it again */
    cu_token *tok;
    char *pin;
    const char *uri;
} cu_tok_target;

/* Opens the token a URI and/or token directory names, with a PIN from
 * pin_source, CUSTOS_PIN, the URI, or a prompt. Prints errors; returns an
 * exit status. */
int cu_tok_target_open(const char *dir, const char *uri, const char *pin_source, bool need_pin, cu_tok_target *t);
void cu_tok_target_free(cu_tok_target *t);

/* Prints "label":…,"manufacturer":…,"model":…,"serial":… (no braces) to stdout. */
void cu_tok_json_fields(const cu_token_desc *d);

/* Runs fn(arg, fd) in a child process and returns its exit status; fd is the
 * write end of a pipe whose bytes the parent collects into *_out (caller
 * frees; may be NULL). A PKCS#11 module reads its configuration (SOFTHSM2_CONF,
 * TPM2_PKCS11_STORE...) once per process, so each token directory of one kind
 * needs a process of its own. */
int cu_tok_run_isolated(int (*fn)(void *arg, int fd), void *arg, uint8_t **_out, size_t *_len);

/* The state whose store records token administration when no --state is
 * given, if its store exists (or $CUSTOS_STORE's). */
#define CU_TOK_DEFAULT_STATE "./var"
/* The audit help line of the administrative token commands. */
#define CU_TOK_AUDIT_HELP                                                                                     \
    "Recorded in the audit log as a token.* record (token.login-failed: a refused PIN):\n"                    \
    "with --state DIR in that state's store (made if need be); without it in the\n"                          \
    "store every other command uses, the one $CUSTOS_STORE names, else ./var/custos.db,\n"                    \
    "when that store exists; where there is none nothing is recorded (no store is\n"                         \
    "made for it).\n"

/* Opens a token for an administrative command (a PIN needed); a refused PIN
 * is recorded as token.login-failed in the audit log (cu_tok_audit). */
int cu_tok_open_audited(const char *state, const char *dir, const char *uri, const char *pin_source,
                        cu_tok_target *t);
/* A token.<kind> record in STATE's audit log (state NULL: the default
 * state's, or $CUSTOS_STORE's, when that store exists; else nothing):
 * the token as t (or d) describes it, else target; key_uri's PINs are
 * removed. A failure to write is printed, not returned. */
void cu_tok_audit(const char *state, const char *kind, const cu_tok_target *t, const char *target,
                  const char *key_uri, const char *result);
void cu_tok_audit_desc(const char *state, const char *kind, const cu_token_desc *d, const char *target,
                       const char *key_uri, const char *result);

int cu_tok_parse_hex(const char *hex, uint8_t *out, size_t max, size_t *_len);
/* Reads a PEM or DER certificate file into DER (caller frees); prints errors. */
int cu_tok_read_cert(const char *path, uint8_t **_der, size_t *_len);

#endif
