/* Custos: a load generator for device registrations (`custos bench load`
 * and the load tests): many concurrent devices against one service, over
 * keep-alive connections (symmetric key) or a fresh TLS handshake per
 * device (X.509). A small blocking HTTP/1.1 client on OpenSSL, one thread
 * per concurrent client, so the generator costs less than the service. */
#ifndef CUSTOS_LOAD_H
#define CUSTOS_LOAD_H

#include <custos/rc.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cu_load_mode { CU_LOAD_SYMKEY = 0, CU_LOAD_X509 = 1 } cu_load_mode;

typedef struct cu_load_config {
    const char *host;          /* name the server certificate covers (SNI, verification) */
    const char *connect;       /* address to connect to; NULL: host */
    unsigned port;
    const char *ca_file;
    const char *id_scope;
    cu_load_mode mode;
    size_t count;              /* registrations */
    unsigned concurrency;      /* clients (threads) */
    const char *prefix;        /* registration ids: <prefix><n> */
    size_t first;              /* first n */
    /* symmetric key: an enrollment group key (devices derive theirs) */
    const uint8_t *group_key;
    size_t group_key_len;
    /* X.509: device certificates are issued by this CA before timing */
    X509 *ca_cert;
    EVP_PKEY *ca_key;
    bool retry;                /* on a transport error, reconnect and retry the device (restarts) */
    unsigned max_seconds;      /* give up after this long; 0: 600 */
    FILE *successes;           /* if set: one line per assigned registration id */
} cu_load_config;

typedef struct cu_load_result {
    size_t assigned, refused, failed, errors, retries, handshakes;
    double seconds;            /* wall time of the timed phase */
    double cpu_seconds;        /* the generator's own CPU (user + system) in it */
    double p50_ms, p99_ms, max_ms;
    char first_error[256];
} cu_load_result;

cu_rc cu_load_run(const cu_load_config *cfg, cu_load_result *_res);

#ifdef __cplusplus
}
#endif
#endif
