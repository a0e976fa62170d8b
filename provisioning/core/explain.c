/* Explanations: what was considered, in precedence order, and why. */
#include <custos/prov.h>

#include "prov_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cu_prov_explain_clear(cu_prov_explain *ex)
{
    if (ex == NULL)
        return;
    free(ex->cand);
    memset(ex, 0, sizeof *ex);
    ex->decided = -1;
}

static const char *outcome_str(cu_prov_outcome o)
{
    switch (o) {
    case CU_PROV_PROVISION: return "provision";
    case CU_PROV_REFUSE: return "refuse";
    case CU_PROV_CHALLENGE: return "challenge";
    default: return "undecided";
    }
}

char *cu_prov_explain_to_text(const cu_prov_explain *ex)
{
    if (ex == NULL)
        return NULL;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (f == NULL)
        return NULL;
    fprintf(f, "registration id: %s\n", ex->registration_id);
    fprintf(f, "attestation:     %s\n", ex->attestation[0] ? ex->attestation : "(none presented)");
    fprintf(f, "candidates, in precedence order:\n");
    if (ex->n == 0)
        fprintf(f, "  (none)\n");
    for (size_t i = 0; i < ex->n; i++) {
        const cu_prov_candidate *c = &ex->cand[i];
        fprintf(f, "  %zu. %-10s", i + 1, c->kind);
        if (c->cert_subject[0])
            fprintf(f, " [depth %d] %s", c->depth, c->cert_subject);
        fprintf(f, "\n       entry: %s%s%s", c->exists ? c->id : "(none)",
                c->exists ? (c->enabled ? " (enabled)" : " (disabled)") : "",
                c->decided ? "  <- decided" : "");
        fprintf(f, "\n       %s: %s\n", c->matched ? "matched" : "not matched", c->note);
    }
    fprintf(f, "outcome: %s\nreason:  %s\n", outcome_str(ex->outcome), ex->reason);
    fclose(f);
    return out;
}

char *cu_prov_explain_to_json(const cu_prov_explain *ex, bool compact)
{
    if (ex == NULL)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < ex->n; i++) {
        const cu_prov_candidate *c = &ex->cand[i];
        json_t *o = json_pack("{s:s, s:s?, s:b, s:b, s:b, s:b, s:s}", "kind", c->kind, "id",
                              c->exists ? c->id : NULL, "exists", c->exists, "matched", c->matched,
                              "enabled", c->enabled, "decided", c->decided, "note", c->note);
        if (o && c->cert_subject[0]) {
            json_object_set_new(o, "depth", json_integer(c->depth));
            json_object_set_new(o, "certificateSubject", json_string(c->cert_subject));
            json_object_set_new(o, "certificateSha256", json_string(c->cert_sha256));
        }
        json_array_append_new(a, o);
    }
    json_t *j = json_pack("{s:s, s:s, s:o, s:s, s:s}", "registrationId", ex->registration_id,
                          "attestation", ex->attestation, "candidates", a ? a : json_array(),
                          "outcome", outcome_str(ex->outcome), "reason", ex->reason);
    if (j && ex->decided >= 0)
        json_object_set_new(j, "decidedBy", json_integer(ex->decided));
    char *s = j ? json_dumps(j, JSON_PRESERVE_ORDER | (compact ? JSON_COMPACT : JSON_INDENT(2))) : NULL;
    json_decref(j);
    return s;
}
