/* Mirrors CANN include/acl/acl.h (CANN 8.1.RC1): process-wide initialisation.
 * Written for pyacl_qscatter from the published interface; cdef-ready (no preprocessor logic). */

aclError aclInit(const char *configPath);
aclError aclFinalize(void);
