/*
 * sharedbuf.c - pyparallel.SharedBuffer: one memory region that every
 * interpreter sees without copying, through the buffer protocol.
 *
 * A region is a mapping: SharedBuffer(size) maps a memfd named
 * "pyparallel.SharedBuffer" (zero-filled, writable), and
 * SharedBuffer.from_file(path) maps a file read-only. The region is plain
 * C memory with an atomic reference count; each SharedBuffer object (one
 * per interpreter that holds the buffer: passing it to a worker or through
 * a Channel makes a new object over the same region) holds one reference,
 * and cross-interpreter data in flight holds one, so the mapping goes away
 * with its last holder, whichever interpreter or thread that is. Buffers
 * exported from an object (memoryview, numpy) keep that object, and so the
 * region, alive.
 *
 * Like JavaScript's SharedArrayBuffer, the bytes are shared and
 * unsynchronised: writers and readers agree among themselves (a Channel
 * message, a lock of their own) on when data is ready.
 */
#include "interp/interp_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct pxpy_region_s {
    _Atomic size_t refs;
    void *data; /* NULL for an empty region */
    size_t size;
    bool readonly;
};

typedef struct {
    PyObject_HEAD
    pxpy_region_t *region;
} sharedbuf_t;

#define SHAREDBUF(op) ((sharedbuf_t *)(op))

/* ---- regions ------------------------------------------------------------ */

void pxpy_region_ref(pxpy_region_t *region)
{
    atomic_fetch_add_explicit(&region->refs, 1, memory_order_relaxed);
}

void pxpy_region_unref(pxpy_region_t *region)
{
    if (atomic_fetch_sub_explicit(&region->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (region->data != NULL)
        munmap(region->data, region->size);
    PyMem_RawFree(region);
}

/* Maps size bytes of fd (from offset 0); 0 or a negative errno. */
static int region_map(pxpy_region_t *r, int fd, size_t size, bool readonly)
{
    r->size = size;
    r->readonly = readonly;
    atomic_init(&r->refs, 1);
    if (size == 0) {
        r->data = NULL;
        return 0;
    }
    void *p = mmap(NULL, size, readonly ? PROT_READ : PROT_READ | PROT_WRITE,
                   MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    r->data = p;
    return 0;
}

static pxpy_region_t *region_anonymous(size_t size)
{
    pxpy_region_t *r = PyMem_RawMalloc(sizeof(*r));
    if (r == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
        /* Named, so that the mapping shows in /proc/<pid>/maps. */
        int fd = memfd_create("pyparallel.SharedBuffer", MFD_CLOEXEC);
    if (fd < 0)
        err = errno;
    else if (ftruncate(fd, (off_t)size) < 0)
        err = errno;
    if (err == 0)
        err = -region_map(r, fd, size, false);
    if (fd >= 0)
        close(fd);
    Py_END_ALLOW_THREADS if (err)
    {
        PyMem_RawFree(r);
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    return r;
}

static pxpy_region_t *region_from_file(PyObject *path)
{
    PyObject *encoded = NULL;
    if (!PyUnicode_FSConverter(path, &encoded))
        return NULL;
    pxpy_region_t *r = PyMem_RawMalloc(sizeof(*r));
    if (r == NULL) {
        Py_DECREF(encoded);
        PyErr_NoMemory();
        return NULL;
    }
    const char *name = PyBytes_AS_STRING(encoded);
    int err = 0;
    Py_BEGIN_ALLOW_THREADS struct stat sb;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is then
     * refused as not a regular file. */
    int fd = open(name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &sb) < 0)
        err = errno;
    else if (S_ISDIR(sb.st_mode))
        err = EISDIR;
    else if (!S_ISREG(sb.st_mode))
        err = EINVAL;
    if (err == 0)
        err = -region_map(r, fd, (size_t)sb.st_size, true);
    if (fd >= 0)
        close(fd);
    Py_END_ALLOW_THREADS Py_DECREF(encoded);
    if (err) {
        PyMem_RawFree(r);
        if (err == EINVAL)
            PyErr_Format(PyExc_ValueError,
                         "SharedBuffer.from_file() needs a regular file, "
                         "not %R (a FIFO, socket or device)",
                         path);
        else {
            errno = err;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        }
        return NULL;
    }
    return r;
}

/* ---- the type ----------------------------------------------------------- */

pxpy_region_t *pxpy_sharedbuf_region(pxpy_state *st, PyObject *obj)
{
    if (Py_TYPE(obj) != st->sharedbuf_type)
        return NULL;
    return SHAREDBUF(obj)->region;
}

/* Steals the caller's reference to region. */
static PyObject *wrap_new(PyTypeObject *type, pxpy_region_t *region)
{
    if (region == NULL)
        return NULL;
    sharedbuf_t *self = PyObject_GC_New(sharedbuf_t, type);
    if (self == NULL) {
        pxpy_region_unref(region);
        return NULL;
    }
    self->region = region;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

PyObject *pxpy_sharedbuf_wrap(pxpy_state *st, pxpy_region_t *region)
{
    pxpy_region_ref(region);
    return wrap_new(st->sharedbuf_type, region);
}

static PyObject *sharedbuf_new(PyTypeObject *type, PyObject *args,
                               PyObject *kwargs)
{
    static char *const kwlist[] = {"size", NULL};
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n:SharedBuffer", kwlist,
                                     &size))
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "SharedBuffer() size must be >= 0");
        return NULL;
    }
    return wrap_new(type, region_anonymous((size_t)size));
}

static PyObject *sharedbuf_from_file(PyObject *cls, PyObject *path)
{
    return wrap_new((PyTypeObject *)cls, region_from_file(path));
}

static int sharedbuf_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    pxpy_region_t *r = SHAREDBUF(op)->region;
    /* An empty region exports a valid, empty address. */
    static const char empty[1];
    void *data = r->data ? r->data : (void *)empty;
    return PyBuffer_FillInfo(view, op, data, (Py_ssize_t)r->size, r->readonly,
                             flags);
}

static Py_ssize_t sharedbuf_length(PyObject *op)
{
    return (Py_ssize_t)SHAREDBUF(op)->region->size;
}

static PyObject *sharedbuf_get_readonly(PyObject *op, void *Py_UNUSED(c))
{
    return PyBool_FromLong(SHAREDBUF(op)->region->readonly);
}

static PyObject *sharedbuf_repr(PyObject *op)
{
    pxpy_region_t *r = SHAREDBUF(op)->region;
    return PyUnicode_FromFormat("<pyparallel.SharedBuffer %zu bytes%s>",
                                r->size, r->readonly ? " read-only" : "");
}

static PyObject *sharedbuf_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    (void)op;
    PyErr_SetString(PyExc_TypeError,
                    "a SharedBuffer cannot be pickled: pass it itself (or in "
                    "a tuple) to a worker or through a Channel, which shares "
                    "its memory instead of copying it");
    return NULL;
}

/* Only the type: an instance must show the garbage collector that it
 * holds its type (and so the module), or a module-level list of buffers in
 * a worker's interpreter makes a cycle it cannot see. */
static int sharedbuf_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static void sharedbuf_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    pxpy_region_unref(SHAREDBUF(op)->region);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef sharedbuf_methods[] = {
    {"from_file", sharedbuf_from_file, METH_O | METH_CLASS,
     "from_file(path, /)\n--\n\nMap the file at path, read-only, into a "
     "SharedBuffer."},
    {"__reduce__", sharedbuf_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sharedbuf_getset[] = {
    {"readonly", sharedbuf_get_readonly, NULL,
     "True for a buffer mapped from a file.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot sharedbuf_slots[] = {
    {Py_tp_doc, "SharedBuffer(size)\n--\n\n"
                "size zero-filled bytes that every interpreter and thread "
                "sees without copying (memoryview(buf), numpy.frombuffer); "
                "freed when its last holder drops it."},
    {Py_tp_new, sharedbuf_new},
    {Py_tp_methods, sharedbuf_methods},
    {Py_tp_getset, sharedbuf_getset},
    {Py_tp_repr, sharedbuf_repr},
    {Py_tp_dealloc, sharedbuf_dealloc},
    {Py_tp_traverse, sharedbuf_traverse},
    {Py_bf_getbuffer, sharedbuf_getbuffer},
    {Py_sq_length, sharedbuf_length},
    {0, NULL},
};

static PyType_Spec sharedbuf_spec = {
    .name = "pyparallel.SharedBuffer",
    .basicsize = sizeof(sharedbuf_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = sharedbuf_slots,
};

int pxpy_sharedbuf_exec(PyObject *module, pxpy_state *st)
{
    st->sharedbuf_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &sharedbuf_spec, NULL);
    if (st->sharedbuf_type == NULL)
        return -1;
    return PyModule_AddType(module, st->sharedbuf_type);
}
