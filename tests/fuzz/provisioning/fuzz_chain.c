/* libFuzzer: the certificate-chain input a device presents (PEM bundle),
 * single certificates in every accepted encoding, and chain verification
 * against a fixed anchor. */
#include <custos/pki.h>
#include <custos/x509.h>

#include <stdint.h>
#include <stdlib.h>

static STACK_OF(X509) *anchors;

static void init(void)
{
    EVP_PKEY *k = NULL;
    X509 *ca = NULL;
    cu_pki_spec s = {.cn = "Fuzz Root", .ca = true, .pathlen = -1, .not_before = -3600, .not_after = 86400};
    anchors = sk_X509_new_null();
    if (cu_pki_keygen(&k) == CU_OK && cu_pki_issue(&s, k, NULL, k, &ca) == CU_OK)
        sk_X509_push(anchors, ca);
    EVP_PKEY_free(k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (anchors == NULL)
        init();
    cu_x509_chain *chain = NULL;
    if (cu_x509_chain_from_pem((const char *)data, size, &chain) == CU_OK) {
        STACK_OF(X509) *path = NULL;
        char reason[512], *cn = NULL;
        if (cu_x509_verify(chain, anchors, 0, &path, reason, sizeof reason) == CU_OK)
            sk_X509_pop_free(path, X509_free);
        if (cu_x509_subject_cn(cu_x509_chain_get0_leaf(chain), &cn) == CU_OK)
            free(cn);
        cu_x509_chain_free(chain);
    }
    X509 *x = NULL;
    if (cu_x509_decode((const char *)data, size, &x) == CU_OK) {
        char fp[65];
        (void)cu_x509_sha256_hex(x, fp);
        free(cu_x509_to_pem(x));
        X509_free(x);
    }
    return 0;
}
