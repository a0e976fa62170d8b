/* The mechanisms custos-soft implements, and what C_GetMechanismInfo says
 * about them. Key sizes: bits for RSA, EC and generic secret generation,
 * bytes for the HMAC signing mechanisms (as the spec has it). Everything
 * listed here is implemented; soft_module signs and verifies with every
 * signing mechanism at its smallest and largest key size, and checks that
 * sizes just outside are refused. */
#include "soft.h"

#include <openssl/rsa.h>

#define SV (CKF_SIGN | CKF_VERIFY)
#define EC_FLAGS (CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS)

static const cs_mech mechs[] = {
    {CKM_EC_KEY_PAIR_GEN, CKK_EC, NULL, 0, false, {256, 384, CKF_GENERATE_KEY_PAIR | EC_FLAGS}},
    {CKM_RSA_PKCS_KEY_PAIR_GEN, CKK_RSA, NULL, 0, false, {2048, 4096, CKF_GENERATE_KEY_PAIR}},
    {CKM_GENERIC_SECRET_KEY_GEN, CKK_GENERIC_SECRET, NULL, 0, false, {128, 4096, CKF_GENERATE}},
    {CKM_ECDSA, CKK_EC, NULL, 0, false, {256, 384, SV | EC_FLAGS}},
    {CKM_ECDSA_SHA1, CKK_EC, "SHA1", 0, true, {256, 384, SV | EC_FLAGS}},
    {CKM_ECDSA_SHA224, CKK_EC, "SHA224", 0, true, {256, 384, SV | EC_FLAGS}},
    {CKM_ECDSA_SHA256, CKK_EC, "SHA256", 0, true, {256, 384, SV | EC_FLAGS}},
    {CKM_ECDSA_SHA384, CKK_EC, "SHA384", 0, true, {256, 384, SV | EC_FLAGS}},
    {CKM_ECDSA_SHA512, CKK_EC, "SHA512", 0, true, {256, 384, SV | EC_FLAGS}},
    {CKM_RSA_PKCS, CKK_RSA, NULL, RSA_PKCS1_PADDING, false, {2048, 4096, SV}},
    {CKM_SHA1_RSA_PKCS, CKK_RSA, "SHA1", RSA_PKCS1_PADDING, true, {2048, 4096, SV}},
    {CKM_SHA224_RSA_PKCS, CKK_RSA, "SHA224", RSA_PKCS1_PADDING, true, {2048, 4096, SV}},
    {CKM_SHA256_RSA_PKCS, CKK_RSA, "SHA256", RSA_PKCS1_PADDING, true, {2048, 4096, SV}},
    {CKM_SHA384_RSA_PKCS, CKK_RSA, "SHA384", RSA_PKCS1_PADDING, true, {2048, 4096, SV}},
    {CKM_SHA512_RSA_PKCS, CKK_RSA, "SHA512", RSA_PKCS1_PADDING, true, {2048, 4096, SV}},
    {CKM_RSA_PKCS_PSS, CKK_RSA, NULL, RSA_PKCS1_PSS_PADDING, false, {2048, 4096, SV}},
    {CKM_SHA1_RSA_PKCS_PSS, CKK_RSA, "SHA1", RSA_PKCS1_PSS_PADDING, true, {2048, 4096, SV}},
    {CKM_SHA224_RSA_PKCS_PSS, CKK_RSA, "SHA224", RSA_PKCS1_PSS_PADDING, true, {2048, 4096, SV}},
    {CKM_SHA256_RSA_PKCS_PSS, CKK_RSA, "SHA256", RSA_PKCS1_PSS_PADDING, true, {2048, 4096, SV}},
    {CKM_SHA384_RSA_PKCS_PSS, CKK_RSA, "SHA384", RSA_PKCS1_PSS_PADDING, true, {2048, 4096, SV}},
    {CKM_SHA512_RSA_PKCS_PSS, CKK_RSA, "SHA512", RSA_PKCS1_PSS_PADDING, true, {2048, 4096, SV}},
    {CKM_SHA256_HMAC, CKK_GENERIC_SECRET, "SHA256", 0, true, {16, 512, SV}},
    {CKM_SHA384_HMAC, CKK_GENERIC_SECRET, "SHA384", 0, true, {16, 512, SV}},
    {CKM_SHA512_HMAC, CKK_GENERIC_SECRET, "SHA512", 0, true, {16, 512, SV}},
};

const cs_mech *cs_mech_find(CK_MECHANISM_TYPE type)
{
    for (size_t i = 0; i < sizeof mechs / sizeof mechs[0]; i++)
        if (mechs[i].type == type)
            return &mechs[i];
    return NULL;
}

size_t cs_mech_count(void)
{
    return sizeof mechs / sizeof mechs[0];
}

const cs_mech *cs_mech_at(size_t i)
{
    return i < cs_mech_count() ? &mechs[i] : NULL;
}
