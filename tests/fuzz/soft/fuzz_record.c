/* libFuzzer target: the custos-soft record decoder (object and token
 * records). Anything the decoder accepts must re-encode to the same bytes
 * (DER is canonical) and decode again. Built with CUSTOS_FUZZING, which
 * makes the decoder ignore the trailing digest (else no mutation would get
 * past it); so the last DIGEST bytes are not compared. */
#include "soft.h"

#include <openssl/crypto.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cs_object_rec r;
    if (cs_object_rec_decode(data, size, &r) == CS_REC_OK) {
        unsigned char *der = NULL;
        size_t len = 0;
        /* re-encode without sealing: the stored secret is kept as is */
        if (cs_object_rec_encode(&r, NULL, NULL, 0, &der, &len) != CS_REC_OK)
            abort();
        if (len != size || memcmp(der, data, size - 32) != 0)
            abort(); /* accepted input that is not canonical */
        cs_object_rec r2;
        if (cs_object_rec_decode(der, len, &r2) != CS_REC_OK)
            abort();
        /* (encoding sets r.aad to the header's DER; decoding only when
         * there is a secret it authenticates) */
        if (r2.has_secret != r.has_secret ||
            (r.has_secret && (r2.aad_len != r.aad_len || memcmp(r.aad, r2.aad, r.aad_len) != 0)))
            abort();
        cs_object_rec_clear(&r2);
        OPENSSL_free(der);
        cs_object_rec_clear(&r);
    }
    cs_token_rec t;
    if (cs_token_rec_decode(data, size, &t) == CS_REC_OK) {
        unsigned char *der = NULL;
        size_t len = 0;
        if (cs_token_rec_encode(&t, &der, &len) != CS_REC_OK)
            abort();
        if (len != size || memcmp(der, data, size - 32) != 0)
            abort();
        OPENSSL_free(der);
        cs_token_rec_clear(&t);
    }
    return 0;
}
