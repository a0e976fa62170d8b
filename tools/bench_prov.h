/* What `custos bench sign` and `custos bench tls` share (cmd_bench.c): a
 * clock, and loading an OpenSSL provider and a key through it. */
#ifndef CU_BENCH_PROV_H
#define CU_BENCH_PROV_H

#include <openssl/evp.h>
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

#endif
