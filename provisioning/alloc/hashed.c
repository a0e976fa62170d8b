/* hashed (and geoLatency) allocation: weighted rendezvous hashing. */
#include <custos/alloc.h>

#include "../core/prov_int.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A uniform number in (0,1) from SHA-256(lower(id) 0x00 lower(hub)). */
static double unit_hash(const char *id, const char *hub)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char md[32];
    char *a = cu_prov__lower_dup(id), *b = cu_prov__lower_dup(hub);
    double u = 0.5;
    if (c && a && b && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
        EVP_DigestUpdate(c, a, strlen(a) + 1) == 1 && EVP_DigestUpdate(c, b, strlen(b)) == 1 &&
        EVP_DigestFinal_ex(c, md, NULL) == 1) {
        uint64_t x = 0;
        for (int i = 0; i < 7; i++) /* 56 bits fit a double exactly */
            x = x << 8 | md[i];
        u = ((double)x + 0.5) / 72057594037927936.0;
    }
    EVP_MD_CTX_free(c);
    free(a);
    free(b);
    return u;
}

cu_rc cu_alloc_hashed(const cu_hub *hubs, size_t n, const char *registration_id, size_t *_idx)
{
    cu_prov__return_val_if_fail((hubs != NULL || n == 0) && registration_id != NULL && _idx != NULL,
                           CU_E_INVALID_ARG);
    double best = -1.0;
    size_t which = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        if (!hubs[i].apply || hubs[i].weight == 0)
            continue;
        /* -w/ln(u): the max over hubs picks hub i with probability w_i/sum(w). */
        double score = -(double)hubs[i].weight / log(unit_hash(registration_id, hubs[i].name));
        if (score > best) {
            best = score;
            which = i;
        }
    }
    if (which == (size_t)-1)
        return cu_err_set(CU_E_OBJECT_NOT_FOUND, "no hub can receive new devices "
                                                 "(none linked, or none with applyAllocationPolicy)");
    *_idx = which;
    return CU_OK;
}
