/* TLS for custosd: the server key (file or token through the provider), and
 * a client-certificate request that accepts any chain at the TLS layer —
 * whether the chain is trusted is the engine's decision, per enrollment; the
 * handshake only proves the device holds the leaf's key. */
#include "srv_int.h"

#include <custos/keyring.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

/* Replaces OpenSSL's chain building for client certificates: there is no
 * trust store at this layer (the engine evaluates the chain against the
 * enrollments), so building one would only burn time on every handshake.
 * The client's CertificateVerify is still checked by the TLS stack. */
static int accept_chain(X509_STORE_CTX *ctx, void *arg)
{
    (void)arg;
    X509_STORE_CTX_set_error(ctx, X509_V_OK);
    return 1;
}

static void info_cb(const SSL *ssl, int where, int ret)
{
    if (where & SSL_CB_HANDSHAKE_DONE) {
        cu_srv__metrics_tls(true);
        /* A resumed session proves nothing with the server key: only a
         * full handshake is a use of it. */
        if (!SSL_session_reused(ssl))
            cu_srv__keyuse_count(CU_SRV_KEY_TLS, "handshake");
    } else if ((where & SSL_CB_ALERT) && (where & SSL_CB_WRITE) && ret != 0 && (ret >> 8) == SSL3_AL_FATAL)
        cu_srv__metrics_tls(false);
}

cu_rc cu_srv__tls_ctx_new(cu_srv_state *st, unsigned tickets, SSL_CTX **_out)
{
    EVP_PKEY *key = NULL;
    cu_rc rc = CU_OK;
    SSL_CTX *ctx = SSL_CTX_new_ex(cu_srv_state_libctx(st), NULL, TLS_server_method());
    static const unsigned char SID_CTX[] = "custosd";
    char buf[256];
    if (ctx == NULL)
        return cu_err_set(CU_E_CRYPTO, "SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* A device closes its connection without a TLS shutdown (close_notify)
     * as often as not: OpenSSL 3 takes that end for a fatal error, sends an
     * alert and drops the session, which the device then cannot resume for
     * its poll. HTTP frames its own messages, so the end is an end. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (SSL_CTX_use_certificate_chain_file(ctx, cu_srv_state_cert_file(st)) != 1) {
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        rc = cu_err_set(CU_E_CRYPTO, "server certificate %s: %s", cu_srv_state_cert_file(st), buf);
        goto fail;
    }
    if ((rc = cu_keyring_load_key(cu_srv_state_key_spec(st), NULL, true, &key)) != CU_OK)
        goto fail;
    cu_srv__keyuse_name(CU_SRV_KEY_TLS, cu_srv_state_key_spec(st));
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        rc = cu_err_set(CU_E_CRYPTO, "server key does not fit the certificate: %s", buf);
        goto fail;
    }
    /* The certificate of a trust anchor may be left out of the chain
     * (RFC 8446 4.4.2): clients trust the CA file, and each certificate
     * sent is one more for every client to decode on every handshake. */
    STACK_OF(X509) *chain = NULL, *sent = sk_X509_new_null();
    SSL_CTX_get0_chain_certs(ctx, &chain);
    for (int i = 0; sent != NULL && i < sk_X509_num(chain); i++) {
        X509 *x = sk_X509_value(chain, i);
        if (X509_check_issued(x, x) != X509_V_OK && !sk_X509_push(sent, x)) {
            sk_X509_free(sent);
            sent = NULL;
        }
    }
    if (sent == NULL || SSL_CTX_set1_chain(ctx, sent) != 1) {
        sk_X509_free(sent);
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto fail;
    }
    sk_X509_free(sent);
    /* Ask for a client certificate, never require one (symmetric-key
     * devices have none), and leave trust to the engine. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, accept_chain, NULL);
    SSL_CTX_set_verify_depth(ctx, CU_X509_MAX_CHAIN);
    /* Needed for session resumption once client certificates are asked for. */
    SSL_CTX_set_session_id_context(ctx, SID_CTX, sizeof SID_CTX - 1);
    SSL_CTX_set_info_callback(ctx, info_cb);
    /* One TLS 1.3 ticket by default, not two: a client resumes once (the
     * poll after the PUT, PROTOCOL.md §10), and each ticket costs a copy of
     * the session with its peer certificate (~9% of an X.509 registration).
     * tls-tickets = 0 turns resumption off. */
    SSL_CTX_set_num_tickets(ctx, tickets);
    /* Stateful TLS 1.3 tickets: the session stays in this process's cache
     * and the ticket only names it. A stateless ticket is the session
     * encrypted, and OpenSSL makes it by encoding the session and decoding
     * it again, peer certificate included: 8% of an X.509 registration.
     * A ticket only ever worked against this process (its ticket keys are
     * its own), so nothing is lost. The cache is bounded, and a session is
     * kept five minutes: the poll follows the PUT within seconds. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_sess_set_cache_size(ctx, 4096);
    SSL_CTX_set_timeout(ctx, 300);
    EVP_PKEY_free(key);
    ERR_clear_error();
    *_out = ctx;
    return CU_OK;
fail:
    EVP_PKEY_free(key);
    SSL_CTX_free(ctx);
    return rc;
}

SSL *cu_srv__tls_of(struct evhttp_request *req)
{
    struct evhttp_connection *c = evhttp_request_get_connection(req);
    struct bufferevent *bev = c ? evhttp_connection_get_bufferevent(c) : NULL;
    return bev ? bufferevent_openssl_get_ssl(bev) : NULL;
}
