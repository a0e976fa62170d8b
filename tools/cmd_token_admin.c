/* custos token destroy | set-pin: the token administration that removes keys
 * or changes who can use them, audited like keygen/import (cu_tok_audit). */
#include "cli.h"
#include "token_util.h"

#include <custos/token.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cu_cmd_token_destroy(int argc, char **argv);
int cu_cmd_token_set_pin(int argc, char **argv);

/* True if the URI names objects (a label or an id), not just a token: a
 * bare token URI would otherwise destroy every object on it. */
static bool names_objects(const char *uri)
{
    const char *q = strchr(uri, '?');
    size_t n = q ? (size_t)(q - uri) : strlen(uri);
    for (const char *p = uri; (p = strstr(p, "object=")) != NULL && (size_t)(p - uri) < n; p++)
        if (p == uri + 7 || p[-1] == ';' || p[-1] == ':')
            return true;
    for (const char *p = uri; (p = strstr(p, "id=")) != NULL && (size_t)(p - uri) < n; p++)
        if (p[-1] == ';' || p[-1] == ':')
            return true;
    return false;
}

int cu_cmd_token_destroy(int argc, char **argv)
{
    const char *uri = NULL, *dir = NULL, *pin_source = NULL, *state = NULL, *pos[1];
    bool json = false, help = false;
    size_t npos = 0;
    cu_cli_opt opts[] = {
        {"--uri", &uri, NULL, NULL, NULL, 0},     {"--dir", &dir, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0},
        {"--state", &state, NULL, NULL, NULL, 0}, {"--json", NULL, &json, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},   {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("token destroy", argc, argv, opts, pos, 1, &npos);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos token destroy [--dir TOKEN_DIR] [--pin-source FILE] [--state DIR] [--json]\n"
               "                            --uri URI | URI\n\n"
               "Destroys, on the token, every object the pkcs11: URI names (by object= and/or\n"
               "id=, narrowed by type=): a key pair's halves and its certificate when they\n"
               "share the label. Prints the URI of each object destroyed. A URI that names\n"
               "no object (only a token) is refused. Each destruction is recorded.\n\n" CU_TOK_AUDIT_HELP);
        return CU_EXIT_OK;
    }
    if (uri == NULL && npos)
        uri = pos[0];
    if (uri == NULL || strncmp(uri, "pkcs11:", 7) != 0)
        return cu_cli_usage("token destroy", "a pkcs11: URI naming the object(s) is required (--uri URI)");
    if (!names_objects(uri))
        return cu_cli_usage("token destroy", "the URI names no object: give object= or id= (a token URI "
                                             "alone would destroy everything on it)");
    cu_tok_target t;
    /* With a token directory, the directory names the token and the URI
     * the objects; without, the URI names both. */
    if ((rc = cu_tok_open_audited(state, dir, dir ? NULL : uri, pin_source, &t)) != CU_EXIT_OK)
        return rc;
    cu_object **objs = NULL;
    size_t n = 0;
    if (cu_token_find_all(t.tok, uri, CU_CLASS_ANY, &objs, &n) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto out;
    }
    if (n == 0) {
        rc = cu_cli_fail("no object on the token matches %s", uri);
        goto out;
    }
    if (json)
        printf("{\"destroyed\":[");
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        char *ouri = cu_object_uri(objs[i]);
        if (cu_object_destroy(objs[i]) != CU_OK) {
            rc = cu_cli_fail("%s", cu_err_last()->msg);
            cu_tok_audit(state, "destroy", &t, NULL, ouri, cu_err_last()->msg);
            free(ouri);
            break;
        }
        if (json) {
            printf("%s", done ? "," : "");
            cu_cli_json_str(stdout, ouri ? ouri : "");
        } else {
            printf("%s\n", ouri ? ouri : "");
        }
        done++;
        cu_tok_audit(state, "destroy", &t, NULL, ouri, "ok");
        free(ouri);
    }
    if (json)
        printf("],\"count\":%zu}\n", done);
out:
    cu_objects_free(objs, n);
    cu_tok_target_free(&t);
    return rc;
}

int cu_cmd_token_set_pin(int argc, char **argv)
{
    const char *dir = NULL, *pin_source = NULL, *new_source = NULL, *state = NULL, *pos[1];
    bool json = false, help = false;
    size_t npos = 0;
    cu_cli_opt opts[] = {
        {"--dir", &dir, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0},
        {"--new-pin-source", &new_source, NULL, NULL, NULL, 0},
        {"--state", &state, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("token set-pin", argc, argv, opts, pos, 1, &npos);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos token set-pin [--dir TOKEN_DIR] [--pin-source FILE] [--new-pin-source FILE]\n"
               "                            [--state DIR] [--json] [URI]\n\n"
               "Changes the user PIN of the token (C_SetPIN): the current PIN from --pin-source\n"
               "FILE or CUSTOS_PIN, the new one from --new-pin-source FILE or CUSTOS_NEW_PIN\n"
               "(else prompts); never from argv. The change is recorded without either PIN.\n"
               "--json prints {\"changed\":true,\"token\":{label, manufacturer, model, serial}}.\n"
               "\n" CU_TOK_AUDIT_HELP);
        return CU_EXIT_OK;
    }
    char *new_pin = cu_cli_read_pin(new_source, "CUSTOS_NEW_PIN", "New user PIN");
    if (new_pin == NULL)
        return CU_EXIT_FAIL;
    cu_tok_target t;
    if ((rc = cu_tok_open_audited(state, dir, npos ? pos[0] : NULL, pin_source, &t)) != CU_EXIT_OK) {
        cu_cli_pin_free(new_pin);
        return rc;
    }
    if (t.pin == NULL) {
        rc = cu_cli_fail("the current PIN must come from --pin-source FILE or CUSTOS_PIN, not the URI");
    } else if (cu_token_set_pin(t.tok, t.pin, new_pin) != CU_OK) {
        cu_rc why = cu_err_last()->rc;
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        cu_tok_audit(state, why == CU_E_PIN_INCORRECT || why == CU_E_PIN_LOCKED ? "login-failed" : "pin-change", &t,
                     NULL, NULL, cu_err_last()->msg);
    } else {
        if (json) {
            printf("{\"changed\":true,\"token\":{");
            cu_tok_json_fields(cu_token_get0_desc(t.tok));
            printf("}}\n");
        } else {
            printf("the user PIN of token '%s' was changed\n", cu_token_get0_desc(t.tok)->label);
        }
        cu_tok_audit(state, "pin-change", &t, NULL, NULL, "ok");
    }
    cu_cli_pin_free(new_pin);
    cu_tok_target_free(&t);
    return rc;
}
