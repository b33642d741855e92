/* DLPack's exchange structures (dmlc/dlpack, include/dlpack/dlpack.h, v1.x): layouts only, for cffi.
 * Facts from the header: device types kDLExtDev = 12 and kDLAscend = 21 (dlpack PR #189); type codes
 * kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4; strides count elements (NULL: compact row-major);
 * flag bits DLPACK_FLAG_BITMASK_READ_ONLY = 1, DLPACK_FLAG_BITMASK_IS_COPIED = 2. The enums are int-sized,
 * so they are declared here as int32_t fields. */

typedef struct {
    int32_t device_type;
    int32_t device_id;
} DLDevice;

typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;

typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides;
    uint64_t byte_offset;
} DLTensor;

typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

typedef struct {
    uint32_t major;
    uint32_t minor;
} DLPackVersion;

typedef struct DLManagedTensorVersioned {
    DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensorVersioned *self);
    uint64_t flags;
    DLTensor dl_tensor;
} DLManagedTensorVersioned;
