/* Internals of libcustos_device. */
#ifndef CU_DEV_INT_H
#define CU_DEV_INT_H

#include <custos/device.h>

#include <openssl/evp.h>

/* Loads the custos provider (and default) once. */
/* A private key from a PEM file or a pkcs11: URI. */
cu_rc cu_dev__load_key(const char *spec, const char *provider_path, EVP_PKEY **_key);

#endif
