/* libcurl with a client key held in a SoftHSM2 token: custos is loaded into
 * the default library context and the key and certificate are handed to
 * curl's SSL_CTX from CURLOPT_SSL_CTX_FUNCTION. The server (a thread here)
 * requires and verifies the client certificate. */
#include "cu_test.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <custos/fixture.h>
#include <custos/token.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
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
#include <unistd.h>

#define PIN "12345678"

static char *dir, key_uri[2048], ca_file[600];
static cu_fixture *hsm;
static OSSL_PROVIDER *p_custos, *p_default;
static EVP_PKEY *ca_key, *server_key;
static X509 *ca_cert, *server_cert, *client_cert;
static int listen_fd = -1, port;
static char server_saw[64];

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
    } else {
        X509V3_CTX v;
        X509V3_set_ctx(&v, issuer, x, NULL, NULL, 0);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v, NID_subject_alt_name, "IP:127.0.0.1");
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
    OSSL_STORE_CTX *s = OSSL_STORE_open(uri, NULL, NULL, NULL, NULL);
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

static int suite_init(void)
{
    char path[600];
    cu_token *t = NULL;
    cu_object *o = NULL;
    uint8_t id = 1;
    if ((dir = cu_test_mkdtemp("curl")) == NULL) {
        fprintf(stderr, "no temporary directory\n");
        return -1;
    }
    snprintf(path, sizeof path, "%s/hsm", dir);
    if (cu_fixture_create(CU_FIXTURE_SOFTHSM2, path, "curl-hsm", "87654321", PIN, NULL, &hsm) != CU_OK
        || cu_fixture_token_open(hsm, PIN, &t) != CU_OK
        || cu_token_keygen(t, CU_KEYGEN_EC_P256, "client", &id, 1, &o) != CU_OK) {
        fprintf(stderr, "token: %s\n", cu_err_last()->msg);
        return -1;
    }
    cu_object_free(o);
    cu_token_unref(t);
    const char *tu = cu_fixture_get0_uri(hsm), *q = strchr(tu, '?');
    snprintf(key_uri, sizeof key_uri, "%.*s;object=client%s&pin-value=%s", (int)(q - tu), tu, q, PIN);

    /* custos in the default library context, where curl makes its SSL_CTX. */
    if (!OSSL_PROVIDER_set_default_search_path(NULL, getenv("CUSTOS_OSSL_MODULES"))
        || (p_custos = OSSL_PROVIDER_load(NULL, "custos")) == NULL
        || (p_default = OSSL_PROVIDER_load(NULL, "default")) == NULL) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    EVP_PKEY *client_key = load_token_key(key_uri);
    if (client_key == NULL) {
        fprintf(stderr, "cannot load %s\n", key_uri);
        ERR_print_errors_fp(stderr);
        return -1;
    }
    ca_key = EVP_EC_gen("P-256");
    server_key = EVP_EC_gen("P-256");
    ca_cert = make_cert("curl-ca", ca_key, ca_key, NULL, 1);
    server_cert = make_cert("127.0.0.1", server_key, ca_key, ca_cert, 2);
    client_cert = make_cert("curl-client", client_key, ca_key, ca_cert, 3);
    EVP_PKEY_free(client_key);

    snprintf(ca_file, sizeof ca_file, "%s/ca.pem", dir);
    FILE *f = fopen(ca_file, "w");
    if (f == NULL || !PEM_write_X509(f, ca_cert)) {
        fprintf(stderr, "cannot write %s\n", ca_file);
        return -1;
    }
    fclose(f);

    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(listen_fd, 8) != 0
        || getsockname(listen_fd, (struct sockaddr *)&a, &al) != 0) {
        perror("listen");
        return -1;
    }
    port = ntohs(a.sin_port);
    return 0;
}

static int suite_cleanup(void)
{
    if (listen_fd >= 0)
        close(listen_fd);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(server_key);
    X509_free(ca_cert);
    X509_free(server_cert);
    X509_free(client_cert);
    OSSL_PROVIDER_unload(p_custos);
    OSSL_PROVIDER_unload(p_default);
    cu_fixture_destroy(hsm);
    cu_fixture_free(hsm);
    cu_test_rmtree(dir);
    free(dir);
    return 0;
}

/* One HTTPS request: require a verified client certificate, answer "hello". */
static void *server(void *arg)
{
    (void)arg;
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(c, server_cert);
    SSL_CTX_use_PrivateKey(c, server_key);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(c), ca_cert);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    int fd = accept(listen_fd, NULL, NULL);
    SSL *s = SSL_new(c);
    SSL_set_fd(s, fd);
    char req[1024];
    if (SSL_accept(s) == 1 && SSL_get_verify_result(s) == X509_V_OK && SSL_read(s, req, sizeof req) > 0) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(SSL_get0_peer_certificate(s)), NID_commonName,
                                  server_saw, sizeof server_saw);
        const char *resp = "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        SSL_write(s, resp, (int)strlen(resp));
    } else {
        ERR_print_errors_fp(stderr);
    }
    SSL_shutdown(s);
    SSL_free(s);
    close(fd);
    SSL_CTX_free(c);
    return NULL;
}

/* The documented callback: certificate and token key into curl's SSL_CTX. */
static CURLcode ssl_ctx_cb(CURL *curl, void *sslctx, void *uri)
{
    (void)curl;
    EVP_PKEY *key = load_token_key(uri);
    int ok = key != NULL && SSL_CTX_use_certificate(sslctx, client_cert) == 1
             && SSL_CTX_use_PrivateKey(sslctx, key) == 1 && SSL_CTX_check_private_key(sslctx) == 1;
    if (!ok)
        ERR_print_errors_fp(stderr);
    EVP_PKEY_free(key);
    return ok ? CURLE_OK : CURLE_SSL_CERTPROBLEM;
}

static size_t collect(char *p, size_t size, size_t n, void *userdata)
{
    char *body = userdata;
    size_t have = strlen(body), add = size * n;
    if (have + add < 64) {
        memcpy(body + have, p, add);
        body[have + add] = '\0';
    }
    return add;
}

static void test_curl_client_key_in_token(void)
{
    pthread_t th;
    char url[64], body[64] = "";
    CU_ASSERT_FATAL(pthread_create(&th, NULL, server, NULL) == 0);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/", port);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CAINFO, ca_file);
    curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
    curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, (void *)key_uri);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK)
        fprintf(stderr, "curl: %s\n", curl_easy_strerror(rc));
    CU_ASSERT(rc == CURLE_OK);
    CU_ASSERT_STRING_EQUAL(body, "hello");
    curl_easy_cleanup(h);
    pthread_join(th, NULL);
    CU_ASSERT_STRING_EQUAL(server_saw, "curl-client");
}

static const cu_test_case cases[] = {
    { "libcurl: client key in the token via CURLOPT_SSL_CTX_FUNCTION", test_curl_client_key_in_token },
    { NULL, NULL },
};

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (cu_test_add_suite("engine-curl", suite_init, suite_cleanup, cases) != 0)
        return 1;
    int r = cu_test_run();
    curl_global_cleanup();
    return r;
}
