/* What the benchmarks `custos bench sign`, `tls` and `s_server` share: a
 * clock, loading an OpenSSL provider and a key through it (cmd_bench.c), and
 * a certificate for a key (cmd_bench_tls.c). */
#ifndef CU_BENCH_PROV_H
#define CU_BENCH_PROV_H

#include <custos/token.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <time.h>

/* Seconds on clock c (CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID, ...). */
double cu_bench_clock(clockid_t c);

/* The directory of custos.so: $CUSTOS_OSSL_MODULES, else ../lib/ossl-modules
 * beside this program (returns env or buf; NULL if unknown). */
const char *cu_bench_provider_dir(char *buf, size_t len);
/* A new library context with the provider module (a path to its .so) and the
 * default provider; NULL with a message in err. */
OSSL_LIB_CTX *cu_bench_provider_lib(const char *module, char *err, size_t errlen);
/* Unloads the providers of such a context and frees it (NULL is fine). */
void cu_bench_provider_lib_free(OSSL_LIB_CTX *lib);
/* The private key a URI names, through OSSL_STORE in lib; the PIN is handed
 * over as the passphrase (caller frees); NULL with a message in err. */
EVP_PKEY *cu_bench_provider_key(OSSL_LIB_CTX *lib, const char *uri, const char *pin, char *err, size_t errlen);

/* For the TLS benchmarks: the EC or RSA private key a URI names on tok, its
 * URI (caller frees) and a software key of the same type and size, the
 * "file" key. Prints what went wrong; returns an exit status. */
int cu_bench_tls_keys(cu_token *tok, const char *uri, cu_object **_key, char **_key_uri, EVP_PKEY **_file);
/* A self-signed certificate (CN=bench, an hour) for the key, signed by it:
 * through the provider of lib for a token key; NULL on failure. */
X509 *cu_bench_self_signed(EVP_PKEY *key, OSSL_LIB_CTX *lib);

#endif
