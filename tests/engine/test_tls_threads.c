/* A multi-threaded TLS server whose key is in a SoftHSM2 token, reached
 * through custos: 8 server threads on one listening socket sign on every
 * thread; 8 client threads make 2,000 full handshakes (TLS 1.2 and 1.3, no
 * resumption), each with a client certificate that the server verifies
 * before it answers. Every handshake must succeed and every client must be
 * verified. CUSTOS_TLS_HANDSHAKES overrides the count. */
#include "cu_test.h"

#include <arpa/inet.h>
#include <custos/fixture.h>
#include <custos/token.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PIN "12345678"
#define THREADS 8
#define CLIENT_CERTS 4

static char *dir;
static cu_fixture *hsm;
static OSSL_LIB_CTX *lib;
static OSSL_PROVIDER *p_custos, *p_default;
static EVP_PKEY *ca_key, *client_key[CLIENT_CERTS], *server_key;
static X509 *ca_cert, *client_cert[CLIENT_CERTS], *server_cert;
static SSL_CTX *server_ctx, *client_ctx12, *client_ctx13;
static int listen_fd = -1, port;
static int total = 2000;
static int served, verified, server_errors, client_ok, client_errors;
static int remaining; /* handshakes still to hand out to client threads */

static X509 *make_cert(const char *cn, EVP_PKEY *pub, EVP_PKEY *signer, X509 *issuer, long serial)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_set_pubkey(x, pub);
    if (issuer == NULL) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:TRUE");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, signer, EVP_sha256());
    X509_NAME_free(n);
    return x;
}

static EVP_PKEY *load_token_key(const char *uri)
{
    EVP_PKEY *pk = NULL;
    OSSL_STORE_CTX *s = OSSL_STORE_open_ex(uri, lib, NULL, NULL, NULL, NULL, NULL, NULL);
    if (s == NULL)
        return NULL;
    OSSL_STORE_expect(s, OSSL_STORE_INFO_PKEY);
    OSSL_STORE_INFO *i = OSSL_STORE_load(s);
    if (i != NULL)
        pk = OSSL_STORE_INFO_get1_PKEY(i);
    OSSL_STORE_INFO_free(i);
    OSSL_STORE_close(s);
    return pk;
}

static SSL_CTX *client_ctx(int version)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(c, version);
    SSL_CTX_set_max_proto_version(c, version);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(c), ca_cert);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    return c;
}

static int suite_init(void)
{
    char path[600], uri[2048];
    cu_token *t = NULL;
    cu_object *o = NULL;
    uint8_t id = 1;
    const char *n = getenv("CUSTOS_TLS_HANDSHAKES");
    if (n != NULL && atoi(n) > 0)
        total = atoi(n);
    if ((dir = cu_test_mkdtemp("tlsthreads")) == NULL)
        return -1;
    snprintf(path, sizeof path, "%s/hsm", dir);
    if (cu_fixture_create(CU_FIXTURE_SOFTHSM2, path, "tls-hsm", "87654321", PIN, NULL, &hsm) != CU_OK
        || cu_fixture_token_open(hsm, PIN, &t) != CU_OK
        || cu_token_keygen(t, CU_KEYGEN_EC_P256, "server", &id, 1, &o) != CU_OK) {
        fprintf(stderr, "token: %s\n", cu_err_last()->msg);
        return -1;
    }
    cu_object_free(o);
    cu_token_unref(t);

    const char *tu = cu_fixture_get0_uri(hsm), *q = strchr(tu, '?');
    snprintf(uri, sizeof uri, "%.*s;object=server%s&pin-value=%s", (int)(q - tu), tu, q, PIN);
    if ((lib = OSSL_LIB_CTX_new()) == NULL
        || !OSSL_PROVIDER_set_default_search_path(lib, getenv("CUSTOS_OSSL_MODULES"))
        || (p_custos = OSSL_PROVIDER_load(lib, "custos")) == NULL
        || (p_default = OSSL_PROVIDER_load(lib, "default")) == NULL
        || (server_key = load_token_key(uri)) == NULL) {
        ERR_print_errors_fp(stderr);
        return -1;
    }

    ca_key = EVP_EC_gen("P-256");
    ca_cert = make_cert("test-ca", ca_key, ca_key, NULL, 1);
    server_cert = make_cert("server", server_key, ca_key, ca_cert, 2);
    for (int i = 0; i < CLIENT_CERTS; i++) {
        char cn[32];
        snprintf(cn, sizeof cn, "client-%d", i);
        client_key[i] = EVP_EC_gen("P-256");
        client_cert[i] = make_cert(cn, client_key[i], ca_key, ca_cert, 10 + i);
    }

    server_ctx = SSL_CTX_new_ex(lib, NULL, TLS_server_method());
    if (server_ctx == NULL || SSL_CTX_use_certificate(server_ctx, server_cert) != 1
        || SSL_CTX_use_PrivateKey(server_ctx, server_key) != 1 || SSL_CTX_check_private_key(server_ctx) != 1) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    X509_STORE_add_cert(SSL_CTX_get_cert_store(server_ctx), ca_cert);
    SSL_CTX_set_verify(server_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_session_cache_mode(server_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(server_ctx, SSL_OP_NO_TICKET);
    client_ctx12 = client_ctx(TLS1_2_VERSION);
    client_ctx13 = client_ctx(TLS1_3_VERSION);

    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(listen_fd, 128) != 0
        || getsockname(listen_fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    port = ntohs(a.sin_port);
    return 0;
}

static int suite_cleanup(void)
{
    if (listen_fd >= 0)
        close(listen_fd);
    SSL_CTX_free(server_ctx);
    SSL_CTX_free(client_ctx12);
    SSL_CTX_free(client_ctx13);
    EVP_PKEY_free(server_key);
    X509_free(server_cert);
    for (int i = 0; i < CLIENT_CERTS; i++) {
        EVP_PKEY_free(client_key[i]);
        X509_free(client_cert[i]);
    }
    EVP_PKEY_free(ca_key);
    X509_free(ca_cert);
    OSSL_PROVIDER_unload(p_custos);
    OSSL_PROVIDER_unload(p_default);
    OSSL_LIB_CTX_free(lib);
    cu_fixture_destroy(hsm);
    cu_fixture_free(hsm);
    cu_test_rmtree(dir);
    free(dir);
    return 0;
}

static void *server_thread(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            break;
        SSL *s = SSL_new(server_ctx);
        SSL_set_fd(s, fd);
        int ok = 0;
        if (SSL_accept(s) == 1) {
            X509 *peer = SSL_get0_peer_certificate(s);
            char cn[64] = "";
            if (peer != NULL)
                X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
            ok = peer != NULL && SSL_get_verify_result(s) == X509_V_OK && strncmp(cn, "client-", 7) == 0;
            /* The client waits for this byte: it learns that we verified it. */
            if (ok && SSL_write(s, "1", 1) == 1)
                __atomic_add_fetch(&verified, 1, __ATOMIC_RELAXED);
            else
                ok = 0;
        }
        if (!ok) {
            __atomic_add_fetch(&server_errors, 1, __ATOMIC_RELAXED);
            ERR_print_errors_fp(stderr);
        }
        SSL_shutdown(s);
        SSL_free(s);
        close(fd);
        ERR_clear_error();
        if (__atomic_add_fetch(&served, 1, __ATOMIC_ACQ_REL) >= total)
            break;
    }
    return NULL;
}

static void *client_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)port) };
    for (int n = 0;; n++) {
        if (__atomic_sub_fetch(&remaining, 1, __ATOMIC_ACQ_REL) < 0)
            break;
        int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;
        SSL *s = SSL_new((me + n) % 2 ? client_ctx13 : client_ctx12);
        int which = (me + n) % CLIENT_CERTS;
        SSL_use_certificate(s, client_cert[which]);
        SSL_use_PrivateKey(s, client_key[which]);
        char b = 0;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            SSL_set_fd(s, fd);
            ok = SSL_connect(s) == 1 && SSL_get_verify_result(s) == X509_V_OK && SSL_read(s, &b, 1) == 1
                 && b == '1';
        }
        __atomic_add_fetch(ok ? &client_ok : &client_errors, 1, __ATOMIC_RELAXED);
        if (!ok)
            ERR_print_errors_fp(stderr);
        SSL_shutdown(s);
        SSL_free(s);
        close(fd);
        ERR_clear_error();
    }
    return NULL;
}

static void test_threads(void)
{
    pthread_t srv[THREADS], cli[THREADS];
    struct timespec t0, t1;
    remaining = total;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < THREADS; i++)
        CU_ASSERT_FATAL(pthread_create(&srv[i], NULL, server_thread, NULL) == 0);
    for (int i = 0; i < THREADS; i++)
        CU_ASSERT_FATAL(pthread_create(&cli[i], NULL, client_thread, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(cli[i], NULL);
    /* Server threads still in accept(): end them. */
    shutdown(listen_fd, SHUT_RDWR);
    for (int i = 0; i < THREADS; i++)
        pthread_join(srv[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("\n%d handshakes in %.2f s (%.0f/s): %d clients ok, %d verified by the server, "
           "%d server errors, %d client errors\n",
           total, s, total / s, client_ok, verified, server_errors, client_errors);
    CU_ASSERT(client_ok == total);
    CU_ASSERT(verified == total);
    CU_ASSERT(server_errors == 0);
    CU_ASSERT(client_errors == 0);
}

static const cu_test_case cases[] = {
    { "8 server threads, token key, 2000 verified mutual handshakes", test_threads },
    { NULL, NULL },
};

int main(void)
{
    if (cu_test_add_suite("engine-tls-threads", suite_init, suite_cleanup, cases) != 0)
        return 1;
    return cu_test_run();
}
