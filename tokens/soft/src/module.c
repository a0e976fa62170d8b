/* The PKCS#11 v2.40 entry points of custos-soft.so, and the global state.
 *
 * Each entry point checks its arguments, takes cs_g.lock (shared for the
 * sign/verify family, exclusive otherwise), finds its session and objects,
 * and calls the file that does the work. Functions this token does not
 * offer return CKR_FUNCTION_NOT_SUPPORTED. */
#include "soft.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

cs_global cs_g = {.lock = PTHREAD_RWLOCK_INITIALIZER};

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static bool forked;

/* Fork: the child gets a consistent copy of our state (we hold the lock
 * across fork), keeps working on it like the parent, and may call
 * C_Initialize again to start afresh, as p11-kit and libp11 do. */
static void atfork_prepare(void) { pthread_rwlock_wrlock(&cs_g.lock); }
static void atfork_parent(void) { pthread_rwlock_unlock(&cs_g.lock); }
static void atfork_child(void)
{
    /* The child's only thread has a new TID, which glibc's rwlock does not
     * accept as the owner: start with a fresh lock (nobody else runs). */
    pthread_rwlock_init(&cs_g.lock, NULL);
    forked = true;
}
static void atfork_register(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

#define WLOCK() pthread_rwlock_wrlock(&cs_g.lock)
#define RLOCK() pthread_rwlock_rdlock(&cs_g.lock)
#define UNLOCK() pthread_rwlock_unlock(&cs_g.lock)

/* Takes the lock and checks initialization, or returns. */
#define ENTER(lock)                                  \
    do {                                             \
        lock;                                        \
        if (!cs_g.initialized) {                     \
            UNLOCK();                                \
            return CKR_CRYPTOKI_NOT_INITIALIZED;     \
        }                                            \
    } while (0)

cs_session *cs_session_get(CK_SESSION_HANDLE h)
{
    if (h < 1 || h > cs_g.nsessions_cap)
        return NULL;
    return cs_g.sessions[h - 1];
}

static void session_free(cs_session *s)
{
    cs_op_free(&s->op);
    free(s->found);
    free(s);
}

/* Frees the session objects a session owns. */
static void drop_session_objects(CK_SESSION_HANDLE h)
{
    for (size_t i = 0; i < cs_g.nhandles; i++) {
        cs_object *o = cs_g.handles[i];
        if (o != NULL && o->session == h) {
            cs_g.handles[i] = NULL;
            cs_object_free(o);
        }
    }
}

static size_t sessions_on(const cs_token *tok, bool ro_only)
{
    size_t n = 0;
    for (size_t i = 0; i < cs_g.nsessions_cap; i++) {
        cs_session *s = cs_g.sessions[i];
        if (s != NULL && s->tok == tok && (!ro_only || !(s->flags & CKF_RW_SESSION)))
            n++;
    }
    return n;
}

static void close_session(cs_session *s)
{
    cs_token *tok = s->tok;
    cs_g.sessions[s->handle - 1] = NULL;
    drop_session_objects(s->handle);
    session_free(s);
    /* Closing an application's last session with a token logs it out. */
    if (sessions_on(tok, false) == 0 && cs_token_logged_in(tok))
        cs_token_logout(tok);
}

/* Drops every session's cached key contexts for a token (logout). */
static void drop_key_caches(cs_token *tok)
{
    for (size_t i = 0; i < cs_g.nsessions_cap; i++) {
        cs_session *s = cs_g.sessions[i];
        if (s != NULL && s->tok == tok)
            cs_op_reset(&s->op, false);
    }
}

static void state_free(void)
{
    for (size_t i = 0; i < cs_g.nsessions_cap; i++)
        if (cs_g.sessions[i] != NULL) {
            drop_session_objects(cs_g.sessions[i]->handle);
            session_free(cs_g.sessions[i]);
        }
    free(cs_g.sessions);
    cs_g.sessions = NULL;
    cs_g.nsessions_cap = 0;
    cs_slots_free();
    free(cs_g.handles);
    cs_g.handles = NULL;
    cs_g.nhandles = cs_g.caphandles = 0;
    EVP_MAC_free(cs_g.hmac);
    cs_g.hmac = NULL;
    cs_config_clear(&cs_g.cfg);
    cs_g.initialized = false;
}

/* ---- general ---- */

CK_RV C_Initialize(CK_VOID_PTR pInitArgs)
{
    CK_RV rv;
    if (pInitArgs != NULL) {
        CK_C_INITIALIZE_ARGS *a = pInitArgs;
        if (a->pReserved != NULL)
            return CKR_ARGUMENTS_BAD;
        int given = (a->CreateMutex != NULL) + (a->DestroyMutex != NULL) +
                    (a->LockMutex != NULL) + (a->UnlockMutex != NULL);
        if (given != 0 && given != 4)
            return CKR_ARGUMENTS_BAD;
        /* We lock with pthreads; without CKF_OS_LOCKING_OK the caller asks us
         * to use only its own mutexes, which we do not. */
        if (given == 4 && !(a->flags & CKF_OS_LOCKING_OK))
            return CKR_CANT_LOCK;
    }
    pthread_once(&atfork_once, atfork_register);
    WLOCK();
    if (cs_g.initialized) {
        if (!forked) {
            UNLOCK();
            return CKR_CRYPTOKI_ALREADY_INITIALIZED;
        }
        state_free(); /* a fork()ed child starting afresh */
    }
    forked = false;
    cs_report_reset();
    if ((rv = cs_config_load(&cs_g.cfg)) != CKR_OK)
        goto fail;
    cs_g.hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (cs_g.hmac == NULL) {
        rv = CKR_GENERAL_ERROR;
        goto fail;
    }
    cs_g.initialized = true;
    if ((rv = cs_slots_load()) != CKR_OK)
        goto fail;
    UNLOCK();
    return CKR_OK;
fail:
    state_free();
    UNLOCK();
    return rv;
}

CK_RV C_Finalize(CK_VOID_PTR pReserved)
{
    if (pReserved != NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    state_free();
    UNLOCK();
    return CKR_OK;
}

CK_RV C_GetInfo(CK_INFO_PTR pInfo)
{
    if (pInfo == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    memset(pInfo, 0, sizeof *pInfo);
    pInfo->cryptokiVersion.major = 2;
    pInfo->cryptokiVersion.minor = 40;
    cs_pad(pInfo->manufacturerID, sizeof pInfo->manufacturerID, CS_MANUFACTURER);
    cs_pad(pInfo->libraryDescription, sizeof pInfo->libraryDescription, CS_LIB_DESCRIPTION);
    pInfo->libraryVersion.major = 0;
    pInfo->libraryVersion.minor = 1;
    UNLOCK();
    return CKR_OK;
}

extern CK_FUNCTION_LIST cs_function_list;

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
    if (ppFunctionList == NULL)
        return CKR_ARGUMENTS_BAD;
    *ppFunctionList = &cs_function_list;
    return CKR_OK;
}

/* ---- slots and tokens ---- */

CK_RV C_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList, CK_ULONG_PTR pulCount)
{
    (void)tokenPresent; /* every slot has a token (maybe uninitialized) */
    if (pulCount == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    CK_RV rv = CKR_OK;
    if (pSlotList == NULL)
        cs_slots_refresh(); /* new tokens made by other processes */
    if (pSlotList != NULL && *pulCount < cs_g.nslots) {
        rv = CKR_BUFFER_TOO_SMALL;
    } else if (pSlotList != NULL) {
        for (size_t i = 0; i < cs_g.nslots; i++)
            pSlotList[i] = cs_g.slots[i].id;
    }
    *pulCount = cs_g.nslots;
    UNLOCK();
    return rv;
}

CK_RV C_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo)
{
    if (pInfo == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    cs_slot *slot = cs_slot_get(slotID);
    if (slot == NULL) {
        UNLOCK();
        return CKR_SLOT_ID_INVALID;
    }
    memset(pInfo, 0, sizeof *pInfo);
    cs_pad(pInfo->slotDescription, sizeof pInfo->slotDescription,
           cs_g.cfg.dir ? "Custos software keystore slot" : "Custos software keystore slot (memory)");
    cs_pad(pInfo->manufacturerID, sizeof pInfo->manufacturerID, CS_MANUFACTURER);
    pInfo->flags = CKF_TOKEN_PRESENT;
    pInfo->hardwareVersion.minor = 1;
    pInfo->firmwareVersion.minor = 1;
    UNLOCK();
    return CKR_OK;
}

CK_RV C_GetTokenInfo(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo)
{
    if (pInfo == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    cs_slot *slot = cs_slot_get(slotID);
    if (slot == NULL) {
        UNLOCK();
        return CKR_SLOT_ID_INVALID;
    }
    cs_token_sync(slot->tok);
    cs_token_info(slot->tok, pInfo);
    pInfo->ulSessionCount = sessions_on(slot->tok, false);
    pInfo->ulRwSessionCount = pInfo->ulSessionCount - sessions_on(slot->tok, true);
    UNLOCK();
    return CKR_OK;
}

CK_RV C_GetMechanismList(CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pList, CK_ULONG_PTR pulCount)
{
    if (pulCount == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    CK_RV rv = CKR_OK;
    if (cs_slot_get(slotID) == NULL) {
        rv = CKR_SLOT_ID_INVALID;
    } else if (pList != NULL && *pulCount < cs_mech_count()) {
        rv = CKR_BUFFER_TOO_SMALL;
    } else if (pList != NULL) {
        for (size_t i = 0; i < cs_mech_count(); i++)
            pList[i] = cs_mech_at(i)->type;
    }
    if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL)
        *pulCount = cs_mech_count();
    UNLOCK();
    return rv;
}

CK_RV C_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo)
{
    if (pInfo == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    CK_RV rv = CKR_OK;
    const cs_mech *m = cs_mech_find(type);
    if (cs_slot_get(slotID) == NULL)
        rv = CKR_SLOT_ID_INVALID;
    else if (m == NULL)
        rv = CKR_MECHANISM_INVALID;
    else
        *pInfo = m->info;
    UNLOCK();
    return rv;
}

CK_RV C_InitToken(CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen,
                  CK_UTF8CHAR_PTR pLabel)
{
    if (pPin == NULL || pLabel == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    CK_RV rv;
    cs_slot *slot = cs_slot_get(slotID);
    if (slot == NULL)
        rv = CKR_SLOT_ID_INVALID;
    else if (sessions_on(slot->tok, false) > 0)
        rv = CKR_SESSION_EXISTS;
    else
        rv = cs_token_init(slot, pPin, ulPinLen, pLabel);
    UNLOCK();
    return rv;
}

/* Finds a session and checks the caller may use it. Lock held. */
#define GET_SESSION(h, s)                               \
    do {                                                \
        (s) = cs_session_get(h);                        \
        if ((s) == NULL) {                              \
            UNLOCK();                                   \
            return CKR_SESSION_HANDLE_INVALID;          \
        }                                               \
    } while (0)

CK_RV C_InitPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen)
{
    cs_session *s;
    if (pPin == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv;
    if (s->tok->login != CKU_SO)
        rv = CKR_USER_NOT_LOGGED_IN;
    else if (!(s->flags & CKF_RW_SESSION))
        rv = CKR_SESSION_READ_ONLY;
    else
        rv = cs_token_init_pin(s->tok, pPin, ulPinLen);
    UNLOCK();
    return rv;
}

CK_RV C_SetPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen,
               CK_UTF8CHAR_PTR pNewPin, CK_ULONG ulNewLen)
{
    cs_session *s;
    if (pOldPin == NULL || pNewPin == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv;
    if (!(s->flags & CKF_RW_SESSION)) {
        rv = CKR_SESSION_READ_ONLY;
    } else {
        /* The key contexts cached by sessions hold keys, not the data key:
         * they stay valid across the re-encryption. */
        rv = cs_token_set_pin(s->tok, pOldPin, ulOldLen, pNewPin, ulNewLen);
    }
    UNLOCK();
    return rv;
}

/* ---- sessions ---- */

CK_RV C_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication, CK_NOTIFY Notify,
                    CK_SESSION_HANDLE_PTR phSession)
{
    (void)pApplication;
    (void)Notify;
    if (phSession == NULL)
        return CKR_ARGUMENTS_BAD;
    if (!(flags & CKF_SERIAL_SESSION))
        return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
    ENTER(WLOCK());
    CK_RV rv = CKR_OK;
    cs_slot *slot = cs_slot_get(slotID);
    cs_session *s = NULL;
    size_t idx;
    if (slot == NULL) {
        rv = CKR_SLOT_ID_INVALID;
        goto out;
    }
    if (!slot->tok->initialized) {
        rv = CKR_TOKEN_NOT_RECOGNIZED;
        goto out;
    }
    if (!(flags & CKF_RW_SESSION) && slot->tok->login == CKU_SO) {
        rv = CKR_SESSION_READ_WRITE_SO_EXISTS;
        goto out;
    }
    for (idx = 0; idx < cs_g.nsessions_cap && cs_g.sessions[idx] != NULL; idx++)
        ;
    if (idx == cs_g.nsessions_cap) {
        size_t cap = cs_g.nsessions_cap ? cs_g.nsessions_cap * 2 : 16;
        cs_session **n = realloc(cs_g.sessions, cap * sizeof *n);
        if (n == NULL) {
            rv = CKR_HOST_MEMORY;
            goto out;
        }
        memset(n + cs_g.nsessions_cap, 0, (cap - cs_g.nsessions_cap) * sizeof *n);
        cs_g.sessions = n;
        cs_g.nsessions_cap = cap;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        rv = CKR_HOST_MEMORY;
        goto out;
    }
    s->handle = idx + 1;
    s->slot_id = slotID;
    s->tok = slot->tok;
    s->flags = flags & (CKF_RW_SESSION | CKF_SERIAL_SESSION);
    cs_g.sessions[idx] = s;
    *phSession = s->handle;
    cs_token_sync(slot->tok);
out:
    UNLOCK();
    return rv;
}

CK_RV C_CloseSession(CK_SESSION_HANDLE hSession)
{
    cs_session *s;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    close_session(s);
    UNLOCK();
    return CKR_OK;
}

CK_RV C_CloseAllSessions(CK_SLOT_ID slotID)
{
    ENTER(WLOCK());
    cs_slot *slot = cs_slot_get(slotID);
    if (slot == NULL) {
        UNLOCK();
        return CKR_SLOT_ID_INVALID;
    }
    for (size_t i = 0; i < cs_g.nsessions_cap; i++)
        if (cs_g.sessions[i] != NULL && cs_g.sessions[i]->tok == slot->tok)
            close_session(cs_g.sessions[i]);
    UNLOCK();
    return CKR_OK;
}

CK_RV C_GetSessionInfo(CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo)
{
    cs_session *s;
    if (pInfo == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    bool rw = s->flags & CKF_RW_SESSION;
    pInfo->slotID = s->slot_id;
    pInfo->flags = s->flags;
    pInfo->ulDeviceError = 0;
    if (s->tok->login == CKU_SO)
        pInfo->state = CKS_RW_SO_FUNCTIONS;
    else if (s->tok->login == CKU_USER)
        pInfo->state = rw ? CKS_RW_USER_FUNCTIONS : CKS_RO_USER_FUNCTIONS;
    else
        pInfo->state = rw ? CKS_RW_PUBLIC_SESSION : CKS_RO_PUBLIC_SESSION;
    UNLOCK();
    return CKR_OK;
}

CK_RV C_GetOperationState(CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG_PTR l)
{
    (void)h; (void)p; (void)l;
    return CKR_FUNCTION_NOT_SUPPORTED;
}

CK_RV C_SetOperationState(CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG l, CK_OBJECT_HANDLE e,
                          CK_OBJECT_HANDLE a)
{
    (void)h; (void)p; (void)l; (void)e; (void)a;
    return CKR_FUNCTION_NOT_SUPPORTED;
}

CK_RV C_Login(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,
              CK_ULONG ulPinLen)
{
    cs_session *s;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv;
    cs_token *tok = s->tok;
    if (userType != CKU_SO && userType != CKU_USER) {
        rv = userType == CKU_CONTEXT_SPECIFIC ? CKR_OPERATION_NOT_INITIALIZED
                                              : CKR_USER_TYPE_INVALID;
    } else if (pPin == NULL) {
        rv = CKR_ARGUMENTS_BAD; /* no protected authentication path */
    } else if (tok->login == userType) {
        rv = CKR_USER_ALREADY_LOGGED_IN;
    } else if (cs_token_logged_in(tok)) {
        rv = CKR_USER_ANOTHER_ALREADY_LOGGED_IN;
    } else if (userType == CKU_SO && sessions_on(tok, true) > 0) {
        rv = CKR_SESSION_READ_ONLY_EXISTS;
    } else {
        rv = cs_token_login(tok, userType, pPin, ulPinLen);
    }
    UNLOCK();
    return rv;
}

CK_RV C_Logout(CK_SESSION_HANDLE hSession)
{
    cs_session *s;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = CKR_OK;
    if (!cs_token_logged_in(s->tok)) {
        rv = CKR_USER_NOT_LOGGED_IN;
    } else {
        drop_key_caches(s->tok);
        cs_token_logout(s->tok);
    }
    UNLOCK();
    return rv;
}

/* ---- objects ---- */

/* A visible object of the session's token, or NULL. Lock held. */
static cs_object *visible_object(cs_session *s, CK_OBJECT_HANDLE h)
{
    cs_object *o = cs_handle_get(h);
    if (o == NULL || !cs_object_visible(s, o))
        return NULL;
    return o;
}

CK_RV C_CreateObject(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                     CK_OBJECT_HANDLE_PTR phObject)
{
    cs_session *s;
    if ((pTemplate == NULL && ulCount > 0) || phObject == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = cs_object_create(s, pTemplate, ulCount, phObject);
    UNLOCK();
    return rv;
}

CK_RV C_CopyObject(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject,
                   CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phNewObject)
{
    cs_session *s;
    if ((pTemplate == NULL && ulCount > 0) || phNewObject == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    cs_object *o = visible_object(s, hObject);
    CK_RV rv = o ? cs_object_copy(s, o, pTemplate, ulCount, phNewObject) : CKR_OBJECT_HANDLE_INVALID;
    UNLOCK();
    return rv;
}

CK_RV C_DestroyObject(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject)
{
    cs_session *s;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    cs_object *o = visible_object(s, hObject);
    CK_RV rv = o ? cs_object_destroy(s, o) : CKR_OBJECT_HANDLE_INVALID;
    UNLOCK();
    return rv;
}

CK_RV C_GetObjectSize(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ULONG_PTR pulSize)
{
    cs_session *s;
    if (pulSize == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    cs_object *o = visible_object(s, hObject);
    CK_RV rv = CKR_OBJECT_HANDLE_INVALID;
    if (o != NULL) {
        CK_ULONG n = o->secret_len;
        for (size_t i = 0; i < o->attrs.n; i++)
            n += o->attrs.a[i].len;
        *pulSize = n;
        rv = CKR_OK;
    }
    UNLOCK();
    return rv;
}

CK_RV C_GetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject,
                          CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
    cs_session *s;
    if (pTemplate == NULL && ulCount > 0)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    cs_object *o = visible_object(s, hObject);
    CK_RV rv = o ? cs_object_get_attrs(s, o, pTemplate, ulCount) : CKR_OBJECT_HANDLE_INVALID;
    UNLOCK();
    return rv;
}

CK_RV C_SetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject,
                          CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
    cs_session *s;
    if (pTemplate == NULL && ulCount > 0)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    cs_object *o = visible_object(s, hObject);
    CK_RV rv = o ? cs_object_set_attrs(s, o, pTemplate, ulCount) : CKR_OBJECT_HANDLE_INVALID;
    UNLOCK();
    return rv;
}

CK_RV C_FindObjectsInit(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
    cs_session *s;
    if (pTemplate == NULL && ulCount > 0)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = CKR_OK;
    if (s->finding) {
        rv = CKR_OPERATION_ACTIVE;
        goto out;
    }
    cs_token_sync(s->tok); /* objects other processes added or removed */
    free(s->found);
    s->found = malloc((cs_g.nhandles ? cs_g.nhandles : 1) * sizeof *s->found);
    if (s->found == NULL) {
        rv = CKR_HOST_MEMORY;
        goto out;
    }
    s->nfound = s->found_pos = 0;
    for (size_t i = 0; i < cs_g.nhandles; i++) {
        cs_object *o = cs_g.handles[i];
        if (o != NULL && cs_object_visible(s, o) && cs_object_matches(o, pTemplate, ulCount))
            s->found[s->nfound++] = o->handle;
    }
    s->finding = true;
out:
    UNLOCK();
    return rv;
}

CK_RV C_FindObjects(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR phObject,
                    CK_ULONG ulMaxObjectCount, CK_ULONG_PTR pulObjectCount)
{
    cs_session *s;
    if ((phObject == NULL && ulMaxObjectCount > 0) || pulObjectCount == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = CKR_OK;
    if (!s->finding) {
        rv = CKR_OPERATION_NOT_INITIALIZED;
    } else {
        CK_ULONG n = 0;
        while (n < ulMaxObjectCount && s->found_pos < s->nfound)
            phObject[n++] = s->found[s->found_pos++];
        *pulObjectCount = n;
    }
    UNLOCK();
    return rv;
}

CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE hSession)
{
    cs_session *s;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = CKR_OK;
    if (!s->finding) {
        rv = CKR_OPERATION_NOT_INITIALIZED;
    } else {
        free(s->found);
        s->found = NULL;
        s->nfound = s->found_pos = 0;
        s->finding = false;
    }
    UNLOCK();
    return rv;
}

/* ---- sign / verify (shared lock: per-session state only) ---- */

static CK_RV op_init(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey,
                     int kind)
{
    cs_session *s;
    if (pMechanism == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    cs_object *o = visible_object(s, hKey);
    CK_RV rv = o ? cs_sign_init(s, pMechanism, o, kind) : CKR_KEY_HANDLE_INVALID;
    UNLOCK();
    return rv;
}

CK_RV C_SignInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
    return op_init(hSession, pMechanism, hKey, CS_OP_SIGN);
}

CK_RV C_Sign(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
             CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
    cs_session *s;
    if ((pData == NULL && ulDataLen > 0) || pulSignatureLen == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = cs_sign_oneshot(s, pData, ulDataLen, pSignature, pulSignatureLen);
    UNLOCK();
    return rv;
}

CK_RV C_SignUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
    cs_session *s;
    if (pPart == NULL && ulPartLen > 0)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = cs_sign_update(s, pPart, ulPartLen, CS_OP_SIGN);
    UNLOCK();
    return rv;
}

CK_RV C_SignFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
    cs_session *s;
    if (pulSignatureLen == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = cs_sign_final(s, pSignature, pulSignatureLen);
    UNLOCK();
    return rv;
}

CK_RV C_VerifyInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
    return op_init(hSession, pMechanism, hKey, CS_OP_VERIFY);
}

CK_RV C_Verify(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
               CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen)
{
    cs_session *s;
    if ((pData == NULL && ulDataLen > 0) || (pSignature == NULL && ulSignatureLen > 0))
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = cs_verify_oneshot(s, pData, ulDataLen, pSignature, ulSignatureLen);
    UNLOCK();
    return rv;
}

CK_RV C_VerifyUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
    cs_session *s;
    if (pPart == NULL && ulPartLen > 0)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = cs_sign_update(s, pPart, ulPartLen, CS_OP_VERIFY);
    UNLOCK();
    return rv;
}

CK_RV C_VerifyFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen)
{
    cs_session *s;
    if (pSignature == NULL && ulSignatureLen > 0)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = cs_verify_final(s, pSignature, ulSignatureLen);
    UNLOCK();
    return rv;
}

/* ---- key generation, randomness ---- */

CK_RV C_GenerateKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                    CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phKey)
{
    cs_session *s;
    if (pMechanism == NULL || (pTemplate == NULL && ulCount > 0) || phKey == NULL)
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = cs_keygen_secret(s, pMechanism, pTemplate, ulCount, phKey);
    UNLOCK();
    return rv;
}

CK_RV C_GenerateKeyPair(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                        CK_ATTRIBUTE_PTR pPublicKeyTemplate, CK_ULONG ulPublicKeyAttributeCount,
                        CK_ATTRIBUTE_PTR pPrivateKeyTemplate, CK_ULONG ulPrivateKeyAttributeCount,
                        CK_OBJECT_HANDLE_PTR phPublicKey, CK_OBJECT_HANDLE_PTR phPrivateKey)
{
    cs_session *s;
    if (pMechanism == NULL || phPublicKey == NULL || phPrivateKey == NULL ||
        (pPublicKeyTemplate == NULL && ulPublicKeyAttributeCount > 0) ||
        (pPrivateKeyTemplate == NULL && ulPrivateKeyAttributeCount > 0))
        return CKR_ARGUMENTS_BAD;
    ENTER(WLOCK());
    GET_SESSION(hSession, s);
    CK_RV rv = cs_keygen_pair(s, pMechanism, pPublicKeyTemplate, ulPublicKeyAttributeCount,
                              pPrivateKeyTemplate, ulPrivateKeyAttributeCount, phPublicKey,
                              phPrivateKey);
    UNLOCK();
    return rv;
}

CK_RV C_SeedRandom(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSeed, CK_ULONG ulSeedLen)
{
    cs_session *s;
    if (pSeed == NULL && ulSeedLen > 0)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    (void)s;
    RAND_add(pSeed, (int)ulSeedLen, 0); /* mixed in, credited with no entropy */
    UNLOCK();
    return CKR_OK;
}

CK_RV C_GenerateRandom(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pRandomData, CK_ULONG ulRandomLen)
{
    cs_session *s;
    if (pRandomData == NULL && ulRandomLen > 0)
        return CKR_ARGUMENTS_BAD;
    ENTER(RLOCK());
    GET_SESSION(hSession, s);
    (void)s;
    CK_RV rv = ulRandomLen ? cs_random(pRandomData, ulRandomLen) : CKR_OK;
    UNLOCK();
    return rv;
}

/* Legacy functions of parallel sessions, which no token has any more:
 * v2.40 asks them to answer CKR_FUNCTION_NOT_PARALLEL. */
CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE hSession)
{
    (void)hSession;
    return CKR_FUNCTION_NOT_PARALLEL;
}

CK_RV C_CancelFunction(CK_SESSION_HANDLE hSession)
{
    (void)hSession;
    return CKR_FUNCTION_NOT_PARALLEL;
}

/* ---- not offered by this token ---- */

#define NOT_SUPPORTED(name, params) \
    CK_RV name params { return CKR_FUNCTION_NOT_SUPPORTED; }

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
NOT_SUPPORTED(C_EncryptInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k))
NOT_SUPPORTED(C_Encrypt, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR e, CK_ULONG_PTR el))
NOT_SUPPORTED(C_EncryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR e, CK_ULONG_PTR el))
NOT_SUPPORTED(C_EncryptFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG_PTR el))
NOT_SUPPORTED(C_DecryptInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k))
NOT_SUPPORTED(C_Decrypt, (CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG el, CK_BYTE_PTR d, CK_ULONG_PTR dl))
NOT_SUPPORTED(C_DecryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG el, CK_BYTE_PTR d, CK_ULONG_PTR dl))
NOT_SUPPORTED(C_DecryptFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG_PTR dl))
NOT_SUPPORTED(C_DigestInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m))
NOT_SUPPORTED(C_Digest, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR o, CK_ULONG_PTR ol))
NOT_SUPPORTED(C_DigestUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl))
NOT_SUPPORTED(C_DigestKey, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE k))
NOT_SUPPORTED(C_DigestFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG_PTR ol))
NOT_SUPPORTED(C_SignRecoverInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k))
NOT_SUPPORTED(C_SignRecover, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s, CK_ULONG_PTR sl))
NOT_SUPPORTED(C_VerifyRecoverInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k))
NOT_SUPPORTED(C_VerifyRecover, (CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG sl, CK_BYTE_PTR d, CK_ULONG_PTR dl))
NOT_SUPPORTED(C_DigestEncryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG pl, CK_BYTE_PTR e, CK_ULONG_PTR el))
NOT_SUPPORTED(C_DecryptDigestUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG el, CK_BYTE_PTR p, CK_ULONG_PTR pl))
NOT_SUPPORTED(C_SignEncryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG pl, CK_BYTE_PTR e, CK_ULONG_PTR el))
NOT_SUPPORTED(C_DecryptVerifyUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG el, CK_BYTE_PTR p, CK_ULONG_PTR pl))
NOT_SUPPORTED(C_WrapKey, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE w, CK_OBJECT_HANDLE k, CK_BYTE_PTR o, CK_ULONG_PTR ol))
NOT_SUPPORTED(C_UnwrapKey, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE u, CK_BYTE_PTR w, CK_ULONG wl, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k))
NOT_SUPPORTED(C_DeriveKey, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k))
NOT_SUPPORTED(C_WaitForSlotEvent, (CK_FLAGS f, CK_SLOT_ID_PTR s, CK_VOID_PTR r))
#pragma GCC diagnostic pop

CK_FUNCTION_LIST cs_function_list = {
    .version = {2, 40},
    .C_Initialize = C_Initialize,
    .C_Finalize = C_Finalize,
    .C_GetInfo = C_GetInfo,
    .C_GetFunctionList = C_GetFunctionList,
    .C_GetSlotList = C_GetSlotList,
    .C_GetSlotInfo = C_GetSlotInfo,
    .C_GetTokenInfo = C_GetTokenInfo,
    .C_GetMechanismList = C_GetMechanismList,
    .C_GetMechanismInfo = C_GetMechanismInfo,
    .C_InitToken = C_InitToken,
    .C_InitPIN = C_InitPIN,
    .C_SetPIN = C_SetPIN,
    .C_OpenSession = C_OpenSession,
    .C_CloseSession = C_CloseSession,
    .C_CloseAllSessions = C_CloseAllSessions,
    .C_GetSessionInfo = C_GetSessionInfo,
    .C_GetOperationState = C_GetOperationState,
    .C_SetOperationState = C_SetOperationState,
    .C_Login = C_Login,
    .C_Logout = C_Logout,
    .C_CreateObject = C_CreateObject,
    .C_CopyObject = C_CopyObject,
    .C_DestroyObject = C_DestroyObject,
    .C_GetObjectSize = C_GetObjectSize,
    .C_GetAttributeValue = C_GetAttributeValue,
    .C_SetAttributeValue = C_SetAttributeValue,
    .C_FindObjectsInit = C_FindObjectsInit,
    .C_FindObjects = C_FindObjects,
    .C_FindObjectsFinal = C_FindObjectsFinal,
    .C_EncryptInit = C_EncryptInit,
    .C_Encrypt = C_Encrypt,
    .C_EncryptUpdate = C_EncryptUpdate,
    .C_EncryptFinal = C_EncryptFinal,
    .C_DecryptInit = C_DecryptInit,
    .C_Decrypt = C_Decrypt,
    .C_DecryptUpdate = C_DecryptUpdate,
    .C_DecryptFinal = C_DecryptFinal,
    .C_DigestInit = C_DigestInit,
    .C_Digest = C_Digest,
    .C_DigestUpdate = C_DigestUpdate,
    .C_DigestKey = C_DigestKey,
    .C_DigestFinal = C_DigestFinal,
    .C_SignInit = C_SignInit,
    .C_Sign = C_Sign,
    .C_SignUpdate = C_SignUpdate,
    .C_SignFinal = C_SignFinal,
    .C_SignRecoverInit = C_SignRecoverInit,
    .C_SignRecover = C_SignRecover,
    .C_VerifyInit = C_VerifyInit,
    .C_Verify = C_Verify,
    .C_VerifyUpdate = C_VerifyUpdate,
    .C_VerifyFinal = C_VerifyFinal,
    .C_VerifyRecoverInit = C_VerifyRecoverInit,
    .C_VerifyRecover = C_VerifyRecover,
    .C_DigestEncryptUpdate = C_DigestEncryptUpdate,
    .C_DecryptDigestUpdate = C_DecryptDigestUpdate,
    .C_SignEncryptUpdate = C_SignEncryptUpdate,
    .C_DecryptVerifyUpdate = C_DecryptVerifyUpdate,
    .C_GenerateKey = C_GenerateKey,
    .C_GenerateKeyPair = C_GenerateKeyPair,
    .C_WrapKey = C_WrapKey,
    .C_UnwrapKey = C_UnwrapKey,
    .C_DeriveKey = C_DeriveKey,
    .C_SeedRandom = C_SeedRandom,
    .C_GenerateRandom = C_GenerateRandom,
    .C_GetFunctionStatus = C_GetFunctionStatus,
    .C_CancelFunction = C_CancelFunction,
    .C_WaitForSlotEvent = C_WaitForSlotEvent,
};
