/* Attestation and precedence: which entry decides for a device, and why.
 *
 * The rule (seed document, DESIGN.md): an individual enrollment that matches
 * the device itself wins; else the enrollment group of the first
 * intermediate of the device's chain, then the next one up, to the root. The
 * first entry found decides: enabled -> provision, disabled -> refuse; none
 * -> refuse. A disabled individual enrollment decides whatever the device
 * presents: it is the public service's way to block one device of a group,
 * so the device's evidence need not match it. Every position is recorded in
 * the explanation, including those after the decision ("not consulted"),
 * because that is what an operator needs to see. */
#include <custos/enrollment.h>
#include <custos/prov.h>
#include <custos/sas.h>
#include <custos/store.h>
#include <custos/tpmsvc.h>
#include <custos/x509.h>

#include "prov_int.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cu_prov_candidate *add_cand(cu_prov_explain *ex, const char *kind)
{
    cu_prov_candidate *t = realloc(ex->cand, (ex->n + 1) * sizeof *t);
    if (t == NULL)
        return NULL;
    ex->cand = t;
    cu_prov_candidate *c = &t[ex->n++];
    memset(c, 0, sizeof *c);
    snprintf(c->kind, sizeof c->kind, "%s", kind);
    return c;
}

static void cand_cert(cu_prov_candidate *c, X509 *x, int depth)
{
    char *s = cu_x509_name_str(X509_get_subject_name(x));
    snprintf(c->cert_subject, sizeof c->cert_subject, "%s", s ? s : "?");
    free(s);
    if (cu_x509_sha256_hex(x, c->cert_sha256) != CU_OK)
        c->cert_sha256[0] = 0;
    c->depth = depth;
}

static cu_rc decide(cu_prov_explain *ex, size_t idx, const char *what)
{
    cu_prov_candidate *c = &ex->cand[idx];
    c->decided = true;
    ex->decided = (int)idx;
    if (c->enabled) {
        ex->outcome = CU_PROV_PROVISION;
        snprintf(ex->reason, sizeof ex->reason, "%s '%s' is enabled", what, c->id);
    } else {
        ex->outcome = CU_PROV_REFUSE;
        ex->disabled = true;
        snprintf(ex->reason, sizeof ex->reason, "%s '%s' is disabled", what, c->id);
    }
    return CU_OK;
}

static void refuse(cu_prov_explain *ex, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(cu_prov_explain *ex, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ex->reason, sizeof ex->reason, fmt, ap);
    va_end(ap);
    ex->outcome = CU_PROV_REFUSE;
    ex->disabled = false; /* refused for the evidence, not by a disabled entry */
}

/* ---- X.509 ---- */

static bool self_signed(X509 *x)
{
    return X509_check_issued(x, x) == X509_V_OK;
}

/* Trusted certificates that could issue anything in the chain, and their
 * own issuers in turn (bounded). */
static cu_rc gather_anchors(cu_store *s, const cu_x509_chain *chain, STACK_OF(X509) *anchors)
{
    cu_rc rc = cu_store_anchors_by_subject(s, X509_get_issuer_name(cu_x509_chain_get0_leaf(chain)), anchors);
    STACK_OF(X509) *extra = cu_x509_chain_get0_extra(chain);
    for (int i = 0; rc == CU_OK && i < sk_X509_num(extra); i++) {
        rc = cu_store_anchors_by_subject(s, X509_get_subject_name(sk_X509_value(extra, i)), anchors);
        if (rc == CU_OK)
            rc = cu_store_anchors_by_subject(s, X509_get_issuer_name(sk_X509_value(extra, i)), anchors);
    }
    for (int i = 0; rc == CU_OK && i < sk_X509_num(anchors) && i < 4 * CU_X509_MAX_CHAIN; i++) {
        X509 *a = sk_X509_value(anchors, i);
        if (!self_signed(a))
            rc = cu_store_anchors_by_subject(s, X509_get_issuer_name(a), anchors);
    }
    return rc;
}

/* OpenSSL stops at the first trusted certificate (a group on an
 * intermediate); the precedence walk still goes up to the root, so extend
 * the verified path with anchors that verifiably issued its top. */
static void extend_path(STACK_OF(X509) *path, STACK_OF(X509) *anchors)
{
    for (int guard = 0; guard < CU_X509_MAX_CHAIN && sk_X509_num(path) > 0; guard++) {
        X509 *top = sk_X509_value(path, sk_X509_num(path) - 1);
        if (self_signed(top))
            return;
        X509 *up = NULL;
        for (int i = 0; i < sk_X509_num(anchors) && up == NULL; i++) {
            X509 *a = sk_X509_value(anchors, i);
            EVP_PKEY *k = X509_get0_pubkey(a);
            if (X509_check_issued(a, top) == X509_V_OK && k != NULL && X509_verify(top, k) == 1)
                up = a;
        }
        ERR_clear_error();
        if (up == NULL)
            return;
        X509_up_ref(up);
        if (!sk_X509_push(path, up)) {
            X509_free(up);
            return;
        }
    }
}

static bool cert_is(const char *pem, const char *sha256)
{
    X509 *x = NULL;
    char hex[65];
    bool same = false;
    if (pem != NULL && cu_x509_decode(pem, strlen(pem), &x) == CU_OK && cu_x509_sha256_hex(x, hex) == CU_OK)
        same = strcmp(hex, sha256) == 0;
    X509_free(x);
    return same;
}

/* Adds the individual-enrollment candidate: looks the enrollment up, records
 * whether it exists and is enabled, and notes why it cannot match when there
 * is none or it uses another attestation than want. *_ind is NULL when there
 * is none; *_usable says it exists with attestation want. */
static cu_rc individual_candidate(cu_prov *p, const cu_prov_request *req, cu_prov_explain *ex, cu_att_type want,
                                  cu_prov_candidate **_c, cu_enr **_ind, bool *_usable)
{
    cu_prov_candidate *c = add_cand(ex, "individual");
    *_ind = NULL;
    *_usable = false;
    if ((*_c = c) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    cu_rc rc = cu_store_enr_get(p->store, CU_ENR_INDIVIDUAL, req->registration_id, _ind);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        snprintf(c->note, sizeof c->note, "no individual enrollment for '%.128s'", req->registration_id);
        return CU_OK;
    }
    if (rc != CU_OK)
        return rc;
    c->exists = true;
    c->enabled = cu_enr_is_enabled(*_ind);
    snprintf(c->id, sizeof c->id, "%s", cu_enr_get0_id(*_ind));
    if (cu_enr_get_att_type(*_ind) != want)
        snprintf(c->note, sizeof c->note, "the individual enrollment uses %s attestation, not %s",
                 cu_att_type_str(cu_enr_get_att_type(*_ind)), cu_att_type_str(want));
    else
        *_usable = true;
    return CU_OK;
}

/* A disabled individual enrollment refuses its registration id whatever
 * evidence the device presents (another key, a group-derived key, any chain,
 * a TPM): it is the documented way to block one device of a group, so it
 * decides as candidate 0 before the evidence is even compared. */
static void refuse_disabled_individual(cu_prov_explain *ex, cu_prov_candidate *c, const char *evidence)
{
    c->matched = true;
    snprintf(c->note, sizeof c->note, "disabled: it refuses registration id '%.128s' whatever the device "
             "presents (%s)", c->id, evidence);
    decide(ex, 0, "individual enrollment");
}

static cu_rc resolve_x509(cu_prov *p, const cu_prov_request *req, cu_prov_explain *ex, cu_enr **_enr)
{
    cu_rc rc = CU_OK;
    X509 *leaf = cu_x509_chain_get0_leaf(req->chain);
    STACK_OF(X509) *anchors = NULL, *path = NULL;
    cu_enr *ind = NULL, *grp = NULL;
    char *cn = NULL, why[512];
    cu_prov_candidate *c;

    snprintf(ex->attestation, sizeof ex->attestation, "x509");
    if (cu_x509_subject_cn(leaf, &cn) != CU_OK) {
        refuse(ex, "the device certificate: %s", cu_err_last()->msg);
        goto cleanup;
    }
    if (!cu_prov__ieq(cn, req->registration_id)) {
        refuse(ex, "the device certificate's CN '%.128s' is not the registration id '%.128s'", cn,
               req->registration_id);
        goto cleanup;
    }

    /* 1. The individual enrollment, which must match the leaf itself (a
     * disabled one refuses without matching). */
    bool usable;
    if ((rc = individual_candidate(p, req, ex, CU_ATT_X509, &c, &ind, &usable)) != CU_OK)
        goto cleanup;
    cand_cert(c, leaf, 0);
    if (ind != NULL && !cu_enr_is_enabled(ind)) {
        bool same = usable && (cert_is(cu_enr_get0_cert(ind, CU_ENR_PRIMARY), c->cert_sha256) ||
                               cert_is(cu_enr_get0_cert(ind, CU_ENR_SECONDARY), c->cert_sha256));
        refuse_disabled_individual(ex, c, same ? "the device's certificate is the enrolled one"
                                               : "the device's certificate is not enrolled in it");
        /* Groups are still listed below as "not consulted". */
    } else if (usable) {
        if (!cert_is(cu_enr_get0_cert(ind, CU_ENR_PRIMARY), c->cert_sha256) &&
            !cert_is(cu_enr_get0_cert(ind, CU_ENR_SECONDARY), c->cert_sha256)) {
            snprintf(c->note, sizeof c->note,
                     "its certificates are not the device's certificate (sha256 %.16s...): same id, "
                     "other device", c->cert_sha256);
        } else {
            c->matched = true;
            snprintf(c->note, sizeof c->note, "the device's certificate is the enrolled %s certificate",
                     cert_is(cu_enr_get0_cert(ind, CU_ENR_PRIMARY), c->cert_sha256) ? "primary" : "secondary");
            /* The enrolled certificate is its own anchor: only its validity
             * period is left to check. */
            if (cu_x509_check_time(leaf, p->now, why, sizeof why) != CU_OK) {
                c->decided = true;
                ex->decided = 0;
                refuse(ex, "%s", why);
                goto cleanup;
            }
            decide(ex, 0, "individual enrollment");
            if (ex->outcome == CU_PROV_PROVISION) {
                *_enr = ind;
                ind = NULL;
            }
            /* Groups are still listed below as "not consulted". */
        }
    }

    /* 2. The chain, verified against the trusted certificates. */
    if ((anchors = sk_X509_new_null()) == NULL)
        goto nomem;
    if ((rc = gather_anchors(p->store, req->chain, anchors)) != CU_OK)
        goto cleanup;
    if (cu_x509_verify(req->chain, anchors, p->now, &path, why, sizeof why) != CU_OK) {
        if (ex->decided < 0)
            refuse(ex, "%s", why);
        else
            snprintf(c->note + strlen(c->note), sizeof c->note - strlen(c->note),
                     "; the chain itself does not verify to any group (%s)", why);
        goto cleanup;
    }
    extend_path(path, anchors);

    /* 3. Groups: first intermediate, then up to the root. */
    for (int d = 1; d < sk_X509_num(path); d++) {
        X509 *x = sk_X509_value(path, d);
        char **ids = NULL;
        size_t n = 0;
        if ((c = add_cand(ex, "group")) == NULL)
            goto nomem;
        cand_cert(c, x, d);
        if ((rc = cu_store_groups_by_cert(p->store, x, &ids, &n)) != CU_OK)
            goto cleanup;
        cu_enr_free(grp);
        grp = NULL;
        /* The first by id that still exists: one deleted since the index was
         * read (another request or node) cannot decide. */
        for (size_t i = 0; i < n && grp == NULL; i++) {
            rc = cu_store_enr_get(p->store, CU_ENR_GROUP, ids[i], &grp);
            if (rc == CU_E_OBJECT_NOT_FOUND)
                rc = CU_OK;
            if (rc != CU_OK) {
                cu_store_ids_free(ids, n);
                goto cleanup;
            }
        }
        if (grp == NULL) {
            snprintf(c->note, sizeof c->note, "no enrollment group for this certificate");
        } else {
            c->exists = true;
            c->enabled = cu_enr_is_enabled(grp);
            snprintf(c->id, sizeof c->id, "%s", cu_enr_get0_id(grp));
            if (ex->decided >= 0) {
                c->matched = true;
                snprintf(c->note, sizeof c->note, "not consulted: an earlier entry decided");
            } else {
                c->matched = true;
                snprintf(c->note, sizeof c->note, "the group's certificate is in the device's verified chain%s",
                         n > 1 ? " (several groups share it; the first by id is used)" : "");
                decide(ex, ex->n - 1, "enrollment group");
                if (ex->outcome == CU_PROV_PROVISION) {
                    *_enr = grp;
                    grp = NULL;
                }
            }
        }
        cu_store_ids_free(ids, n);
    }
    if (ex->decided < 0)
        refuse(ex, "no enrollment entry for the device or any certificate of its chain");
    goto cleanup;
nomem:
    rc = cu_err_set(CU_E_NOMEM, "out of memory");
cleanup:
    free(cn);
    cu_enr_free(ind);
    cu_enr_free(grp);
    sk_X509_pop_free(anchors, X509_free);
    sk_X509_pop_free(path, X509_free);
    return rc;
}

/* ---- symmetric key ---- */

/* Tries the (derived) keys of e against the token. Returns true when a MAC
 * verified; *ok says whether the token then passed every check. */
static cu_rc try_keys(cu_prov *p, const cu_sas *sas, const cu_enr *e, bool derive, const char *regid,
                      bool *_mac, bool *_ok, char *why, size_t wlen)
{
    uint8_t *raw[2] = {NULL, NULL}, derived[2][32];
    size_t rl[2] = {0, 0}, nk = 0, matched = (size_t)-1;
    cu_sas_key keys[2];
    cu_rc rc = CU_OK;
    const char *labels[2] = {"primary", "secondary"};

    *_mac = *_ok = false;
    for (int i = 0; i < 2; i++) {
        const char *b64 = cu_enr_get0_symkey(e, (cu_enr_slot)i);
        if (b64 == NULL || cu_sas_key_decode(b64, &raw[i], &rl[i]) != CU_OK)
            continue;
        if (derive) {
            if ((rc = cu_sas_derive_key(raw[i], rl[i], regid, derived[i])) != CU_OK)
                goto cleanup;
            keys[nk] = (cu_sas_key){derived[i], 32, labels[i]};
        } else {
            keys[nk] = (cu_sas_key){raw[i], rl[i], labels[i]};
        }
        nk++;
    }
    cu_sas_check chk = {p->id_scope, regid, "registration", p->now, p->skew};
    rc = cu_sas_verify(sas, &chk, keys, nk, &matched, why, wlen);
    *_mac = matched != (size_t)-1;
    *_ok = rc == CU_OK;
    if (rc == CU_E_VERIFY)
        rc = CU_OK;
cleanup:
    OPENSSL_cleanse(derived, sizeof derived);
    for (int i = 0; i < 2; i++)
        cu_sas_key_free(raw[i], rl[i]);
    return rc;
}

static cu_rc resolve_sas(cu_prov *p, const cu_prov_request *req, cu_prov_explain *ex, cu_enr **_enr)
{
    cu_rc rc = CU_OK;
    cu_sas *sas = NULL;
    cu_enr *ind = NULL, *grp = NULL;
    char **ids = NULL, why[512];
    size_t n = 0, tried = 0;
    bool mac = false, ok = false;
    cu_prov_candidate *c;

    snprintf(ex->attestation, sizeof ex->attestation, "symmetricKey");
    if (cu_sas_parse(req->authorization, strlen(req->authorization), &sas) != CU_OK) {
        refuse(ex, "%s", cu_err_last()->msg);
        goto cleanup;
    }
    bool usable;
    if ((rc = individual_candidate(p, req, ex, CU_ATT_SYMMETRIC_KEY, &c, &ind, &usable)) != CU_OK)
        goto cleanup;
    if (ind != NULL && !cu_enr_is_enabled(ind)) {
        if (usable && (rc = try_keys(p, sas, ind, false, req->registration_id, &mac, &ok, why, sizeof why)) != CU_OK)
            goto cleanup;
        refuse_disabled_individual(ex, c, mac      ? "the token is signed with the enrollment's key"
                                          : usable ? "a token not signed with the enrollment's keys"
                                                   : "a SAS token");
        goto cleanup;
    }
    if (usable) {
        if ((rc = try_keys(p, sas, ind, false, req->registration_id, &mac, &ok, why, sizeof why)) != CU_OK)
            goto cleanup;
        if (!mac) {
            snprintf(c->note, sizeof c->note, "%.300s", why);
        } else {
            c->matched = true;
            snprintf(c->note, sizeof c->note, "the token is signed with the enrollment's key");
            if (!ok) {
                c->decided = true;
                ex->decided = 0;
                refuse(ex, "%s", why);
                goto cleanup;
            }
            decide(ex, 0, "individual enrollment");
            if (ex->outcome == CU_PROV_PROVISION) {
                *_enr = ind;
                ind = NULL;
            }
            goto cleanup;
        }
    }
    /* Groups: the one whose derived key signed the token. The device does
     * not name its group, so each symmetric-key group is tried (the public
     * service caps them at 100); the group of the device's last
     * registration is tried first. */
    if ((rc = cu_store_symkey_groups(p->store, &ids, &n)) != CU_OK)
        goto cleanup;
    cu_reg_record last;
    if (cu_store_reg_get(p->store, req->registration_id, &last) == CU_OK && last.enrollment_group_id[0]) {
        for (size_t i = 1; i < n; i++)
            if (cu_prov__ieq(ids[i], last.enrollment_group_id)) {
                char *t = ids[0];
                ids[0] = ids[i];
                ids[i] = t;
                break;
            }
    }
    cu_reg_record_clear(&last);
    for (size_t i = 0; i < n; i++) {
        cu_enr_free(grp);
        grp = NULL;
        rc = cu_store_enr_get(p->store, CU_ENR_GROUP, ids[i], &grp);
        if (rc == CU_E_OBJECT_NOT_FOUND) {
            /* Deleted since the list was read (another request or node):
             * it no longer exists, so it cannot decide. */
            rc = CU_OK;
            continue;
        }
        if (rc != CU_OK)
            goto cleanup;
        tried++;
        if ((rc = try_keys(p, sas, grp, true, req->registration_id, &mac, &ok, why, sizeof why)) != CU_OK)
            goto cleanup;
        if (!mac)
            continue;
        if ((c = add_cand(ex, "group")) == NULL)
            goto nomem;
        c->exists = c->matched = true;
        c->enabled = cu_enr_is_enabled(grp);
        snprintf(c->id, sizeof c->id, "%s", cu_enr_get0_id(grp));
        snprintf(c->note, sizeof c->note, "the token is signed with the key derived from this group's key");
        if (!ok) {
            c->decided = true;
            ex->decided = (int)ex->n - 1;
            refuse(ex, "%s", why);
            goto cleanup;
        }
        decide(ex, ex->n - 1, "enrollment group");
        if (ex->outcome == CU_PROV_PROVISION) {
            *_enr = grp;
            grp = NULL;
        }
        goto cleanup;
    }
    if ((c = add_cand(ex, "group")) == NULL)
        goto nomem;
    snprintf(c->note, sizeof c->note, "%zu symmetric-key group(s) tried: no derived key verifies the token", tried);
    refuse(ex, "SAS token signature does not verify with any enrollment key for '%.128s'",
           req->registration_id);
    goto cleanup;
nomem:
    rc = cu_err_set(CU_E_NOMEM, "out of memory");
cleanup:
    cu_store_ids_free(ids, n);
    cu_enr_free(ind);
    cu_enr_free(grp);
    cu_sas_free(sas);
    return rc;
}

/* ---- TPM ---- */

/* The scope a pending challenge is bound to (an engine without an id scope
 * still binds its challenges to something fixed). */
const char *cu_prov__tpm_scope(const cu_prov *p) { return p->id_scope[0] ? p->id_scope : "-"; }

/* TPM devices have individual enrollments only. Without Authorization the
 * answer is a challenge; with it, the SAS must verify with the key of the
 * latest challenge. */
static cu_rc resolve_tpm(cu_prov *p, const cu_prov_request *req, cu_prov_explain *ex, cu_enr **_enr)
{
    cu_rc rc = CU_OK;
    cu_tpmsvc_pub *ek = NULL, *enrolled = NULL;
    cu_enr *ind = NULL;
    cu_sas *sas = NULL;
    cu_prov_candidate *c;
    uint8_t key[CU_TPM_ID_KEY_LEN];
    char *sealed = NULL, why[512];

    snprintf(ex->attestation, sizeof ex->attestation, "tpm");
    if (cu_tpmsvc_pub_parse_b64(req->tpm_ek, &ek) != CU_OK || cu_tpmsvc_pub_check(ek, CU_TPM_ROLE_EK) != CU_OK) {
        refuse(ex, "tpm.endorsementKey: %s", cu_err_last()->msg);
        goto cleanup;
    }
    if ((c = add_cand(ex, "individual")) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    rc = cu_store_enr_get(p->store, CU_ENR_INDIVIDUAL, req->registration_id, &ind);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        rc = CU_OK;
        snprintf(c->note, sizeof c->note, "no individual enrollment for '%.128s'", req->registration_id);
        refuse(ex, "no TPM enrollment for '%.128s' (TPM devices need an individual enrollment)",
               req->registration_id);
        goto cleanup;
    } else if (rc != CU_OK) {
        goto cleanup;
    }
    c->exists = true;
    c->enabled = cu_enr_is_enabled(ind);
    snprintf(c->id, sizeof c->id, "%s", cu_enr_get0_id(ind));
    if (!c->enabled) {
        refuse_disabled_individual(ex, c, "a TPM endorsement key");
        goto cleanup;
    }
    if (cu_enr_get_att_type(ind) != CU_ATT_TPM) {
        snprintf(c->note, sizeof c->note, "the individual enrollment uses %s attestation, not tpm",
                 cu_att_type_str(cu_enr_get_att_type(ind)));
        refuse(ex, "the enrollment for '%.128s' is not a TPM enrollment", req->registration_id);
        goto cleanup;
    }
    if (cu_tpmsvc_pub_parse_b64(cu_enr_get0_tpm_ek(ind), &enrolled) != CU_OK ||
        !cu_tpmsvc_pub_same_key(ek, enrolled)) {
        snprintf(c->note, sizeof c->note, "the device's endorsement key is not the enrolled one");
        refuse(ex, "the endorsement key is not the one enrolled for '%.128s'", req->registration_id);
        goto cleanup;
    }
    c->matched = true;
    if (req->authorization == NULL) {
        snprintf(c->note, sizeof c->note, "the device's endorsement key is the enrolled one");
        c->decided = true;
        ex->decided = 0;
        ex->outcome = CU_PROV_CHALLENGE;
        snprintf(ex->reason, sizeof ex->reason, "challenge: the TPM must activate a credential and sign a SAS "
                 "token with the key it imports");
        goto cleanup;
    }
    if (cu_sas_parse(req->authorization, strlen(req->authorization), &sas) != CU_OK) {
        refuse(ex, "%s", cu_err_last()->msg);
        goto cleanup;
    }
    /* The key of the latest challenge, if it was issued to this id and this
     * EK and has not expired (the seal binds all three). */
    rc = cu_store_tpm_challenge_get(p->store, req->registration_id, &sealed);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        rc = CU_OK;
        c->decided = true;
        ex->decided = 0;
        refuse(ex, "no TPM challenge was issued to this device; register without Authorization first");
        goto cleanup;
    } else if (rc != CU_OK) {
        goto cleanup;
    }
    rc = cu_tpmsvc_challenge_open(cu_store_get0_keyring(p->store), cu_prov__tpm_scope(p), req->registration_id,
                                  req->tpm_ek, p->now, sealed, key);
    if (rc == CU_E_VERIFY || rc == CU_E_INVALID_ARG) {
        rc = CU_OK;
        c->decided = true;
        ex->decided = 0;
        refuse(ex, "no valid TPM challenge for this device (%.300s); register without Authorization first",
               cu_err_last()->msg);
        goto cleanup;
    } else if (rc != CU_OK) {
        goto cleanup;
    }
    cu_sas_key k = {key, CU_TPM_ID_KEY_LEN, "activated TPM"};
    cu_sas_check chk = {p->id_scope, req->registration_id, NULL, p->now, p->skew};
    if (cu_sas_verify(sas, &chk, &k, 1, NULL, why, sizeof why) != CU_OK) {
        c->decided = true;
        ex->decided = 0;
        refuse(ex, "%s", why);
        goto cleanup;
    }
    snprintf(c->note, sizeof c->note, "the token is signed with the key the TPM activated");
    decide(ex, 0, "individual enrollment");
    if (ex->outcome == CU_PROV_PROVISION) {
        *_enr = ind;
        ind = NULL;
    }
cleanup:
    OPENSSL_cleanse(key, sizeof key);
    free(sealed);
    cu_sas_free(sas);
    cu_tpmsvc_pub_free(ek);
    cu_tpmsvc_pub_free(enrolled);
    cu_enr_free(ind);
    return rc;
}

/* ---- no evidence (explain by registration id) ---- */

static cu_rc resolve_none(cu_prov *p, const cu_prov_request *req, cu_prov_explain *ex)
{
    cu_enr *ind = NULL;
    cu_reg_record rec;
    cu_prov_candidate *c = add_cand(ex, "individual");
    cu_rc rc;
    if (c == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    rc = cu_store_enr_get(p->store, CU_ENR_INDIVIDUAL, req->registration_id, &ind);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        snprintf(c->note, sizeof c->note, "no individual enrollment for '%.128s'", req->registration_id);
        snprintf(ex->reason, sizeof ex->reason,
                 "no individual enrollment; a group can only be chosen from the device's evidence "
                 "(its certificate chain or SAS token)");
        rc = CU_OK;
    } else if (rc == CU_OK) {
        c->exists = true;
        c->enabled = cu_enr_is_enabled(ind);
        snprintf(c->id, sizeof c->id, "%s", cu_enr_get0_id(ind));
        snprintf(ex->attestation, sizeof ex->attestation, "%s", cu_att_type_str(cu_enr_get_att_type(ind)));
        snprintf(c->note, sizeof c->note, "an individual enrollment exists (%s); it decides when the device's "
                 "evidence matches it", ex->attestation);
        if (!c->enabled) {
            c->matched = c->decided = true;
            ex->decided = 0;
            refuse(ex, "individual enrollment '%s' is disabled", c->id);
            ex->disabled = true;
        } else {
            snprintf(ex->reason, sizeof ex->reason,
                     "would provision through individual enrollment '%s' if the device proves %s", c->id,
                     ex->attestation);
        }
    }
    if (rc == CU_OK && cu_store_reg_get(p->store, req->registration_id, &rec) == CU_OK) {
        size_t l = strlen(ex->reason);
        snprintf(ex->reason + l, sizeof ex->reason - l, "; last registration: %s%s%s%s%s", rec.status,
                 rec.assigned_hub[0] ? " to " : "", rec.assigned_hub,
                 rec.enrollment_group_id[0] ? " through group " : "", rec.enrollment_group_id);
        cu_reg_record_clear(&rec);
    }
    cu_enr_free(ind);
    return rc;
}

cu_rc cu_prov__resolve(cu_prov *p, const cu_prov_request *req, cu_prov_explain *ex, cu_enr **_enr)
{
    memset(ex, 0, sizeof *ex);
    ex->decided = -1;
    *_enr = NULL;
    snprintf(ex->registration_id, sizeof ex->registration_id, "%s", req->registration_id);
    if (!cu_prov__regid_valid(req->registration_id)) {
        refuse(ex, "'%.128s' is not a valid registration id", req->registration_id);
        return CU_OK;
    }
    if (req->chain != NULL)
        return resolve_x509(p, req, ex, _enr);
    if (req->tpm_ek != NULL)
        return resolve_tpm(p, req, ex, _enr);
    if (req->authorization != NULL)
        return resolve_sas(p, req, ex, _enr);
    return resolve_none(p, req, ex);
}
