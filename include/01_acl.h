/* Mirrors CANN include/acl/acl.h (CANN 8.1.RC1): process-wide initialisation.
 * Written for pyacl_qscatter from the published interface; cdef-ready (no preprocessor logic). */

aclError aclInit(const char *configPath);
aclError aclFinalize(void);

/* CANN >= 8.5 (acl_rt.h): decrements the process-wide aclInit count, finalizing at zero; refCount may be NULL. */
aclError aclFinalizeReference(uint64_t *refCount);
/* The CANN release of a package as text (e.g. pkgName "runtime"); versionStr holds ACL_PKG_VERSION_MAX_SIZE bytes. */
aclError aclsysGetVersionStr(char *pkgName, char *versionStr);
#define ACL_PKG_VERSION_MAX_SIZE 128
