/* Names of classes, key types and mechanisms for messages and listings. */
#include "internal.h"

const char *cu_class_str(cu_class c)
{
    switch (c) {
    case CU_CLASS_PRIVATE_KEY: return "private-key";
    case CU_CLASS_PUBLIC_KEY: return "public-key";
    case CU_CLASS_SECRET_KEY: return "secret-key";
    case CU_CLASS_CERTIFICATE: return "cert";
    case CU_CLASS_DATA: return "data";
    case CU_CLASS_ANY: return "any";
    default: return "other";
    }
}

const char *cu_key_type_str(cu_key_type k)
{
    switch (k) {
    case CU_KEY_EC: return "EC";
    case CU_KEY_RSA: return "RSA";
    case CU_KEY_HMAC: return "HMAC";
    case CU_KEY_NONE: return "-";
    default: return "other";
    }
}

const char *cu__mech_name(CK_MECHANISM_TYPE t)
{
#define N(x) case x: return #x
    switch (t) {
    N(CKM_RSA_PKCS_KEY_PAIR_GEN); N(CKM_RSA_PKCS); N(CKM_RSA_X_509); N(CKM_RSA_PKCS_OAEP);
    N(CKM_RSA_PKCS_PSS); N(CKM_SHA1_RSA_PKCS); N(CKM_SHA256_RSA_PKCS); N(CKM_SHA384_RSA_PKCS);
    N(CKM_SHA512_RSA_PKCS); N(CKM_SHA224_RSA_PKCS); N(CKM_SHA1_RSA_PKCS_PSS);
    N(CKM_SHA256_RSA_PKCS_PSS); N(CKM_SHA384_RSA_PKCS_PSS); N(CKM_SHA512_RSA_PKCS_PSS);
    N(CKM_SHA224_RSA_PKCS_PSS); N(CKM_EC_KEY_PAIR_GEN); N(CKM_ECDSA); N(CKM_ECDSA_SHA1);
    N(CKM_ECDSA_SHA224); N(CKM_ECDSA_SHA256); N(CKM_ECDSA_SHA384); N(CKM_ECDSA_SHA512);
    N(CKM_ECDH1_DERIVE); N(CKM_GENERIC_SECRET_KEY_GEN); N(CKM_SHA_1); N(CKM_SHA256);
    N(CKM_SHA384); N(CKM_SHA512); N(CKM_SHA224); N(CKM_SHA_1_HMAC); N(CKM_SHA256_HMAC);
    N(CKM_SHA384_HMAC); N(CKM_SHA512_HMAC); N(CKM_SHA224_HMAC); N(CKM_AES_KEY_GEN);
    N(CKM_AES_ECB); N(CKM_AES_CBC); N(CKM_AES_CBC_PAD); N(CKM_AES_GCM); N(CKM_AES_CTR);
    N(CKM_AES_KEY_WRAP); N(CKM_AES_KEY_WRAP_PAD); N(CKM_MD5); N(CKM_DES3_KEY_GEN);
    N(CKM_EC_EDWARDS_KEY_PAIR_GEN); N(CKM_EDDSA); N(CKM_AES_CMAC); N(CKM_DH_PKCS_KEY_PAIR_GEN);
    N(CKM_DH_PKCS_DERIVE); N(CKM_DSA); N(CKM_DSA_KEY_PAIR_GEN); N(CKM_MD5_HMAC);
    default: return NULL;
    }
#undef N
}
