/* Custos: registration records (DeviceRegistrationState of the public API)
 * and linked hubs. */
#ifndef CUSTOS_RECORD_H
#define CUSTOS_RECORD_H

#include <custos/rc.h>

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A hub devices can be assigned to (PROTOCOL.md §6.1). */
typedef struct cu_hub {
    char name[256];             /* host name, e.g. hub1.example.net */
    unsigned weight;            /* allocationWeight 1..1000 (default 1) */
    bool apply;                 /* applyAllocationPolicy: false = never gets new devices */
} cu_hub;

/* One device's registration state. Strings are empty when absent.
 * status: `assigned` (with substatus) or `failed` (errorCode 400208: no hub)
 * after a registration; `disabled` when a device that has a record is later
 * refused because its deciding entry (individual or group) is disabled:
 * errorCode 401002 and errorMessage name the entry, and assignedHub,
 * deviceId and substatus stay as they were (where the device was). A device
 * with no record gets none from a refusal. Registering again once the entry
 * is enabled makes it `assigned` again. */
typedef struct cu_reg_record {
    char registration_id[129];
    char device_id[129];
    char assigned_hub[256];
    char status[16];        /* assigned | failed | disabled */
    char substatus[40];     /* initialAssignment | deviceDataMigrated | deviceDataReset |
                               reprovisionedToInitialAssignment */
    int error_code;         /* 0 when none; 400208 (failed), 401002 (disabled) */
    char error_message[256];
    char etag[48];
    char created[32];
    char updated[32];
    /* Which entry decided, so that a poll or an explain can say it. */
    char attestation[16];       /* x509 | symmetricKey | tpm */
    char enrollment_group_id[129]; /* empty for an individual enrollment */
    char initial_hub[256];      /* first hub ever assigned (for substatus) */
    char *payload_json;         /* custom allocation payload (heap) or NULL */
} cu_reg_record;

/* Frees payload_json and zeroes the record. */
void cu_reg_record_clear(cu_reg_record *r);

/* The record as DeviceRegistrationState JSON (caller frees). */
char *cu_reg_record_to_json(const cu_reg_record *r, bool compact);

#ifdef __cplusplus
}
#endif
#endif
