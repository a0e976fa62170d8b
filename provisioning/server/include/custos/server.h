/* Custos: custosd, the HTTPS provisioning service — configuration, state
 * directory and the server itself. The `custosd` executable and the
 * `custos service` command are thin layers over this API. */
#ifndef CUSTOS_SERVER_H
#define CUSTOS_SERVER_H

#include <custos/keyring.h>
#include <custos/rc.h>
#include <custos/store.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CU_SRV_MAX_LISTEN 8
#define CU_SRV_MAX_NAMES 16
#define CU_SRV_MAX_HUBS 50
#define CU_SRV_POLICY "provisioningserviceowner"
/* The label of the audit key custosd makes in its token (no audit-key set). */
#define CU_SRV_AUDIT_LABEL "custos-audit"

typedef enum cu_srv_log_format { CU_SRV_LOG_TEXT = 0, CU_SRV_LOG_JSON = 1 } cu_srv_log_format;

/* Everything custosd can be told; cu_srv_config_init sets the defaults that
 * docs/custosd.md lists. Strings are heap copies owned by the config. */
typedef struct cu_srv_config {
    char *state_dir;                     /* ./var */
    char *listen[CU_SRV_MAX_LISTEN];     /* ADDR:PORT; 127.0.0.1:8443 when none */
    size_t n_listen;
    char *names[CU_SRV_MAX_NAMES];       /* extra host names for the certificate */
    size_t n_names;
    char *id_scope;                      /* used on first start only; NULL: generated */
    char *store;                         /* sqlite:PATH or postgresql://...; NULL: STATE/custos.db */
    char *store_password_file;           /* PostgreSQL password (first line); NULL: libpq's PGPASSWORD etc. */
    char *hubs[CU_SRV_MAX_HUBS];         /* NAME[,WEIGHT] linked at start */
    size_t n_hubs;
    char *server_key;                    /* FILE or pkcs11: URI; NULL: STATE/server.key */
    char *server_cert;                   /* FILE; NULL: STATE/server.crt */
    char *keyring;                       /* pkcs11: URI of the store's MAC key; NULL: STATE/keyring.key */
    char *provider_path;                 /* where custos.so lives (pkcs11: keys) */
    char *audit_key;                     /* FILE or pkcs11: URI signing audit heads; NULL: STATE/audit.key */
    unsigned audit_sign_every;           /* sign the audit head every N records; 1000 */
    unsigned audit_sign_seconds;         /* ... or after S seconds; 60 */
    unsigned workers;                    /* 0: one per CPU */
    size_t max_body;                     /* bytes; 96 KiB */
    size_t max_headers;                  /* bytes; 16 KiB */
    unsigned timeout;                    /* slow-client read/write timeout, seconds; 30 */
    unsigned retry_after;                /* seconds sent with `assigning`; 2 */
    bool reply_final;                    /* answer the PUT with the final state (not 202) */
    unsigned rate_global;                /* new registrations per second; 0 = no limit */
    unsigned rate_device;                /* requests per device per 10 s; 0 = no limit */
    unsigned sas_skew;                   /* seconds; 300 */
    unsigned shutdown_grace;             /* seconds to finish work on SIGTERM; 10 */
    unsigned tls_tickets;                /* TLS 1.3 session tickets per handshake; 1 */
    bool error_detail;                   /* tell devices why they were refused */
    cu_srv_log_format log_format;
    int log_level;                       /* 0 error, 1 warn, 2 info, 3 debug */
    char *log_file;                      /* NULL: stderr */
} cu_srv_config;

void cu_srv_config_init(cu_srv_config *cfg);
void cu_srv_config_clear(cu_srv_config *cfg);
/* Sets one option by its config-file name ("listen", "workers", ...).
 * Repeatable options append. @retval CU_OK, CU_E_INVALID_ARG (message set) */
cu_rc cu_srv_config_set(cu_srv_config *cfg, const char *key, const char *value);
/* Reads a key = value file (# comments, blank lines). */
cu_rc cu_srv_config_load(cu_srv_config *cfg, const char *path);

/* The opened state directory: keyring, store, id scope, policy key,
 * certificates. */
typedef struct cu_srv_state cu_srv_state;

/* Opens the state; with create it makes whatever is missing (first start:
 * id scope, policy key, CA and server certificate, one linked hub).
 * Safe to call concurrently with a running custosd (SQLite WAL). */
cu_rc cu_srv_state_open(const cu_srv_config *cfg, bool create, cu_srv_state **_out);
void cu_srv_state_free(cu_srv_state *st);
const char *cu_srv_state_id_scope(const cu_srv_state *st);
const char *cu_srv_state_dir(const cu_srv_state *st);
cu_keyring *cu_srv_state_keyring(cu_srv_state *st);
/* A new store connection (one per thread). */
cu_rc cu_srv_state_store_open(cu_srv_state *st, cu_store **_out);
/* The shared access policy key (raw bytes, borrowed). */
const uint8_t *cu_srv_state_policy_key(const cu_srv_state *st, size_t *_len);
/* Paths of the CA certificate clients must trust, and the server's. */
const char *cu_srv_state_ca_file(const cu_srv_state *st);
const char *cu_srv_state_cert_file(const cu_srv_state *st);
const char *cu_srv_state_key_spec(const cu_srv_state *st);
/* The audit head signing key: a file or a pkcs11: URI. */
const char *cu_srv_state_audit_key_spec(const cu_srv_state *st);
/* The host name devices and service clients use (first configured name,
 * else "localhost"). */
const char *cu_srv_state_host(const cu_srv_state *st);
/* Every name the server answers to (host names, localhost, 127.0.0.1). */
size_t cu_srv_state_names(const cu_srv_state *st, const char *const **_names);
void *cu_srv_state_libctx(cu_srv_state *st); /* OSSL_LIB_CTX* */

/* What `custos service info` prints. */
typedef struct cu_srv_info {
    char id_scope[64];
    char endpoint[300];           /* https://HOST:PORT as last started */
    char connection_string[600];  /* HostName=...;SharedAccessKeyName=...;SharedAccessKey=... */
    char ca_file[4096];
    char state_dir[4096];
} cu_srv_info;
cu_rc cu_srv_info_get(cu_srv_state *st, cu_srv_info *_info);

/* Runs the service until SIGTERM/SIGINT (waited for inside; block both in
 * every thread before calling), then finishes the replies in flight and
 * returns. Once the listeners are bound it writes STATE/endpoint. */
cu_rc cu_srv_run(const cu_srv_config *cfg, cu_srv_state *st);

#ifdef __cplusplus
}
#endif
#endif
