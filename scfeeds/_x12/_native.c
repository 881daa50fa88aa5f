/* Native X12 kernels: the two splits of the reader, as Arrow columns for polars.
 *
 * segments(data, element, terminator) -> Segments | None   (a slice into segments)
 * split(stream, element, n) -> Elements | None              (segments into elements)
 *
 * Optional: where this is not built, or returns None, _tokenize.py does the same on polars,
 * and the tests hold both paths equal.
 *
 * segments() makes the polars tokenizer's frame (columns raw and sid) in one pass over the
 * bytes instead of a CSV read plus four column queries:
 *   - carriage returns and line feeds that are not delimiters are formatting and dropped;
 *   - each segment loses leading spaces and tabs (pretty-printed files); empty ones are dropped;
 *   - sid is the segment's first two or three capitals or digits when the element separator
 *     or the segment's end follows them, else null.
 * Returns None for what this pass does not handle (any byte above 0x7F: a BOM or UTF-8 text
 * that must be checked; a delimiter that is a capital, digit, space or tab); the caller then
 * uses the polars path, which handles everything.
 *
 * Its columns implement the Arrow PyCapsule interface (__arrow_c_array__): two string-view
 * columns (raw, sid) that polars takes as they are, without pyarrow and without a copy, and
 * the envelope counters _core._counted needs, counted within the slice (_code, _isa, _gs,
 * _st, _last).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ---- buffers ----
 *
 * Column buffers are handed to polars, which frees them (through the column's release)
 * whenever it drops the column, on any of its threads. They come from polars' own allocator
 * where polars shares it (the capsule polars exports for its extensions, given by
 * use_allocator()): freed memory is then reused by the next slice, as polars reuses its own,
 * and nothing stays resident that polars would not keep. Without it, large buffers are mapped
 * and unmapped here (malloc would keep them resident in per-thread arenas once freed), small
 * ones come from malloc. A 16-byte header before each buffer records how it was made.
 */

#define BLOCK_HEADER 16
#define BLOCK_ALIGN 16
#define BLOCK_MAPPED ((size_t)256 * 1024)

enum { FROM_MALLOC = 1, FROM_MMAP = 2, FROM_POLARS = 3 };

/* polars' allocator capsule: the layout of its AllocatorCapsule (repr(C)). */
typedef struct {
    void *(*alloc)(size_t size, size_t align);
    void (*dealloc)(void *ptr, size_t size, size_t align);
    void *(*alloc_zeroed)(size_t size, size_t align);
    void *(*realloc)(void *ptr, size_t size, size_t align, size_t new_size);
} PolarsAllocator;

static const PolarsAllocator *polars_allocator = NULL;
static int64_t live_bytes = 0; /* in buffers made here and not yet freed (any thread) */

static void *block_alloc(size_t size, int zero) {
    size_t total = size + BLOCK_HEADER;
    char *base;
    uint32_t kind;
    if (polars_allocator) {
        base = zero ? polars_allocator->alloc_zeroed(total, BLOCK_ALIGN)
                    : polars_allocator->alloc(total, BLOCK_ALIGN);
        kind = FROM_POLARS;
    } else if (total >= BLOCK_MAPPED) {
        base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        base = base == MAP_FAILED ? NULL : base;
        kind = FROM_MMAP;
    } else {
        base = zero ? calloc(1, total) : malloc(total);
        kind = FROM_MALLOC;
    }
    if (!base)
        return NULL;
    memcpy(base, &total, sizeof total);
    memcpy(base + sizeof total, &kind, sizeof kind);
    __atomic_add_fetch(&live_bytes, (int64_t)total, __ATOMIC_RELAXED);
    return base + BLOCK_HEADER;
}

static void block_free(void *p) {
    if (!p)
        return;
    char *base = (char *)p - BLOCK_HEADER;
    size_t total;
    uint32_t kind;
    memcpy(&total, base, sizeof total);
    memcpy(&kind, base + sizeof total, sizeof kind);
    __atomic_sub_fetch(&live_bytes, (int64_t)total, __ATOMIC_RELAXED);
    if (kind == FROM_POLARS)
        polars_allocator->dealloc(base, total, BLOCK_ALIGN);
    else if (kind == FROM_MMAP)
        munmap(base, total);
    else
        free(base);
}

static size_t block_size(void *p) {
    size_t total;
    memcpy(&total, (char *)p - BLOCK_HEADER, sizeof total);
    return total - BLOCK_HEADER;
}

/* A block of `size` bytes holding the first `keep` bytes of `p` (freed), or NULL (p kept). */
static void *block_resize(void *p, size_t size, size_t keep) {
    void *q = block_alloc(size, 0);
    if (!q)
        return NULL;
    if (p) {
        memcpy(q, p, keep < block_size(p) ? keep : block_size(p));
        block_free(p);
    }
    return q;
}

static PyObject *use_allocator(PyObject *module, PyObject *capsule) {
    (void)module;
    const PolarsAllocator *a = PyCapsule_GetPointer(capsule, "polars.polars._allocator");
    if (!a)
        return NULL;
    if (!a->alloc || !a->dealloc || !a->alloc_zeroed) {
        PyErr_SetString(PyExc_ValueError, "polars' allocator capsule has no functions");
        return NULL;
    }
    /* set once: buffers made before are freed by what made them (the header says) */
    polars_allocator = a;
    Py_RETURN_NONE;
}

static PyObject *buffer_bytes(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyLong_FromLongLong(__atomic_load_n(&live_bytes, __ATOMIC_RELAXED));
}

static PyObject *allocator(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyUnicode_FromString(polars_allocator ? "polars" : "system");
}

/* ---- Arrow C data interface (https://arrow.apache.org/docs/format/CDataInterface.html) ---- */

#define ARROW_FLAG_NULLABLE 2

struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

/* ---- the pass ---- */

/* A string view (Arrow "vu"): up to 12 bytes inline, else a prefix and a place in a buffer. */
static inline void view_at(uint8_t *view, const char *text, int32_t len, int32_t offset) {
    memcpy(view, &len, 4);
    if (len <= 12) {
        memset(view + 4, 0, 12); /* inline bytes are zero-padded (views compare as words) */
        memcpy(view + 4, text, (size_t)len);
        return;
    }
    int32_t buffer = 0;
    memcpy(view + 4, text, 4);
    memcpy(view + 8, &buffer, 4);
    memcpy(view + 12, &offset, 4);
}

typedef struct {
    PyObject_HEAD
    int64_t n;          /* segments */
    int64_t raw_bytes;  /* used bytes of raw */
    int64_t sid_nulls;  /* segments without an ID */
    char *raw;          /* segment bytes back to back (the raw column's one data buffer) */
    uint8_t *raw_views; /* n views into raw */
    uint8_t *sid_views; /* n inline views */
    uint8_t *sid_valid; /* validity bitmap of sid */
    /* envelope counters within the slice (the caller adds what earlier slices counted) */
    uint8_t *code;      /* ISA 1, GS 2, ST 3, SE 4, GE 5, IEA 6, else 0 */
    int64_t *isa;       /* ISA segments so far, this one included */
    int64_t *gs;
    int64_t *st;
    uint8_t *last;      /* code of the last envelope segment so far (0: none in the slice) */
} Segments;

#define N_COLUMNS 7
static inline uint8_t envelope_code(const char *id, int64_t k) {
    if (k == 2) {
        if (id[0] == 'G' && id[1] == 'S')
            return 2;
        if (id[0] == 'S' && id[1] == 'T')
            return 3;
        if (id[0] == 'S' && id[1] == 'E')
            return 4;
        if (id[0] == 'G' && id[1] == 'E')
            return 5;
    } else if (k == 3) {
        if (id[0] == 'I' && id[1] == 'S' && id[2] == 'A')
            return 1;
        if (id[0] == 'I' && id[1] == 'E' && id[2] == 'A')
            return 6;
    }
    return 0;
}

static inline int is_id_char(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static void Segments_dealloc(Segments *self) {
    block_free(self->raw);
    block_free(self->raw_views);
    block_free(self->sid_views);
    block_free(self->sid_valid);
    block_free(self->code);
    block_free(self->isa);
    block_free(self->gs);
    block_free(self->st);
    block_free(self->last);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject SegmentsType;

static PyObject *segments(PyObject *module, PyObject *args) {
    Py_buffer view;
    int element, term;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*ii", &view, &element, &term))
        return NULL;
    const unsigned char *data = view.buf;
    const Py_ssize_t size = view.len;
    if (element == ' ' || element == '\t' || term == ' ' || term == '\t' ||
        is_id_char((unsigned char)element) || is_id_char((unsigned char)term) || element < 1 ||
        term < 1 || element > 0x7F || term > 0x7F || element == term || size > INT32_MAX) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    const int drop_cr = element != '\r' && term != '\r';
    const int drop_lf = element != '\n' && term != '\n';
    /* at most one segment per terminator, plus the last */
    int64_t cap = 1;
    unsigned char high = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < size; i++) {
        cap += data[i] == (unsigned char)term;
        high |= data[i];
    }
    Py_END_ALLOW_THREADS
    if (high >= 0x80) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    Segments *self = PyObject_New(Segments, &SegmentsType);
    if (!self) {
        PyBuffer_Release(&view);
        return NULL;
    }
    memset((char *)self + sizeof(PyObject), 0, sizeof(Segments) - sizeof(PyObject));
    self->raw = block_alloc((size_t)size + 1, 0);
    self->raw_views = block_alloc((size_t)cap * 16, 0);
    self->sid_views = block_alloc((size_t)cap * 16, 0);
    self->sid_valid = block_alloc((size_t)(cap / 8 + 1), 1);
    self->code = block_alloc((size_t)cap, 0);
    self->isa = block_alloc((size_t)cap * sizeof(int64_t), 0);
    self->gs = block_alloc((size_t)cap * sizeof(int64_t), 0);
    self->st = block_alloc((size_t)cap * sizeof(int64_t), 0);
    self->last = block_alloc((size_t)cap, 0);
    if (!self->raw || !self->raw_views || !self->sid_views || !self->sid_valid || !self->code ||
        !self->isa || !self->gs || !self->st || !self->last) {
        PyBuffer_Release(&view);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    int64_t n = 0, nulls = 0, r = 0, isa = 0, gs = 0, st = 0;
    uint8_t last = 0;
    char *raw = self->raw;
    uint8_t *valid = self->sid_valid;
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *p = data, *end = data + size;
    for (int more = 1; more;) {
        /* one segment: [p, terminator or end), line breaks skipped, leading blanks dropped */
        const unsigned char *stop = p < end ? memchr(p, term, (size_t)(end - p)) : NULL;
        if (!stop)
            stop = end;
        while (p < stop && (*p == ' ' || *p == '\t' || (*p == '\r' && drop_cr) ||
                            (*p == '\n' && drop_lf)))
            p++;
        const int64_t start = r;
        const size_t len0 = (size_t)(stop - p);
        /* a line break inside the segment (a wrapped line): copy it without them */
        if ((drop_lf && memchr(p, '\n', len0)) || (drop_cr && memchr(p, '\r', len0))) {
            for (const unsigned char *q = p; q < stop; q++)
                if (!((*q == '\r' && drop_cr) || (*q == '\n' && drop_lf)))
                    raw[r++] = (char)*q;
        } else {
            memcpy(raw + r, p, len0);
            r += (int64_t)len0;
        }
        more = stop < end;
        p = more ? stop + 1 : end; /* past the terminator */
        if (r == start)
            continue; /* empty segment */
        const int64_t len = r - start;
        view_at(self->raw_views + 16 * n, raw + start, (int32_t)len, (int32_t)start);
        /* the ID: two or three capitals or digits, then the element separator or the end */
        int64_t k = 0;
        while (k < len && k < 4 && is_id_char((unsigned char)raw[start + k]))
            k++;
        uint8_t *sv = self->sid_views + 16 * n;
        memset(sv, 0, 16); /* a null ID: an empty view */
        uint8_t code = 0;
        if ((k == 2 || k == 3) && (k == len || raw[start + k] == (char)element)) {
            view_at(sv, raw + start, (int32_t)k, 0);
            valid[n >> 3] |= (uint8_t)(1u << (n & 7));
            code = envelope_code(raw + start, k);
        } else {
            nulls++;
        }
        isa += code == 1;
        gs += code == 2;
        st += code == 3;
        last = code ? code : last;
        self->code[n] = code;
        self->isa[n] = isa;
        self->gs[n] = gs;
        self->st[n] = st;
        self->last[n] = last;
        n++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    self->n = n;
    self->raw_bytes = r;
    self->sid_nulls = nulls;
    return (PyObject *)self;
}

/* ---- export: one Arrow array per column ----
 *
 * Each column is handed over on its own (not as children of one struct array): polars keeps
 * an imported array's allocation alive while any part of it lives, so a struct would tie
 * every column's memory to the one column a table keeps.
 */

typedef struct {
    const void *buffers[4]; /* validity, views or values, data (views), variadic sizes */
    void *owned[3];
    int64_t sizes[1];
} ColumnPrivate;

static void release_column(struct ArrowArray *a) {
    ColumnPrivate *p = a->private_data;
    for (int j = 0; j < 3; j++)
        block_free(p->owned[j]);
    free(p);
    a->release = NULL;
}

static void release_leaf_schema(struct ArrowSchema *s) { s->release = NULL; }

static void capsule_schema_destructor(PyObject *capsule) {
    struct ArrowSchema *s = PyCapsule_GetPointer(capsule, "arrow_schema");
    if (s && s->release)
        s->release(s);
    free(s);
}

static void capsule_array_destructor(PyObject *capsule) {
    struct ArrowArray *a = PyCapsule_GetPointer(capsule, "arrow_array");
    if (a && a->release)
        a->release(a);
    free(a);
}

/* One column ready for export (__arrow_c_array__, once). */
typedef struct {
    PyObject_HEAD
    struct ArrowSchema *schema;
    struct ArrowArray *array;
} Column;

static void Column_dealloc(Column *self) {
    if (self->schema) {
        if (self->schema->release)
            self->schema->release(self->schema);
        free(self->schema);
    }
    if (self->array) {
        if (self->array->release)
            self->array->release(self->array);
        free(self->array);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Column_arrow_c_array(Column *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"requested_schema", NULL};
    PyObject *requested = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O", kwlist, &requested))
        return NULL;
    if (requested != Py_None) {
        PyErr_SetString(PyExc_NotImplementedError, "only the native schema is exported");
        return NULL;
    }
    if (!self->array) {
        PyErr_SetString(PyExc_RuntimeError, "the column was exported already");
        return NULL;
    }
    PyObject *sc = PyCapsule_New(self->schema, "arrow_schema", capsule_schema_destructor);
    if (!sc)
        return NULL;
    self->schema = NULL; /* the capsule owns it */
    PyObject *ac = PyCapsule_New(self->array, "arrow_array", capsule_array_destructor);
    if (!ac) {
        Py_DECREF(sc);
        return NULL;
    }
    self->array = NULL;
    return Py_BuildValue("(NN)", sc, ac);
}

static PyMethodDef Column_methods[] = {
    {"__arrow_c_array__", (PyCFunction)(void (*)(void))Column_arrow_c_array,
     METH_VARARGS | METH_KEYWORDS, "The column as an Arrow array (once)."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject ColumnType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "scfeeds._x12._native.Column",
    .tp_basicsize = sizeof(Column),
    .tp_dealloc = (destructor)Column_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One column for polars (export once with __arrow_c_array__).",
    .tp_methods = Column_methods,
};

/* A Column of `length` rows from its buffers; p (with its owned buffers) is taken over, and
 * freed on failure too. */
static PyObject *make_column(const char *format, const char *name, int64_t length,
                             int64_t null_count, int64_t n_buffers, ColumnPrivate *p) {
    Column *col = PyObject_New(Column, &ColumnType);
    struct ArrowSchema *schema = calloc(1, sizeof *schema);
    struct ArrowArray *array = calloc(1, sizeof *array);
    if (!col || !schema || !array) {
        for (int j = 0; j < 3; j++)
            block_free(p->owned[j]);
        free(p);
        free(schema);
        free(array);
        if (col) {
            col->schema = NULL;
            col->array = NULL;
            Py_DECREF(col);
        }
        return PyErr_NoMemory();
    }
    *schema = (struct ArrowSchema){.format = format,
                                   .name = name,
                                   .flags = ARROW_FLAG_NULLABLE,
                                   .release = release_leaf_schema};
    *array = (struct ArrowArray){.length = length,
                                 .null_count = null_count,
                                 .n_buffers = n_buffers,
                                 .buffers = p->buffers,
                                 .release = release_column,
                                 .private_data = p};
    col->schema = schema;
    col->array = array;
    return (PyObject *)col;
}

/* A string-view column: views, a validity bitmap (NULL: no nulls) and one data buffer. */
static PyObject *view_column(const char *name, int64_t n, int64_t nulls, uint8_t *views,
                             uint8_t *valid, char *data, int64_t data_len) {
    ColumnPrivate *p = calloc(1, sizeof *p);
    if (!p) {
        block_free(views);
        block_free(valid);
        block_free(data);
        return PyErr_NoMemory();
    }
    p->owned[0] = views;
    p->owned[1] = valid;
    p->owned[2] = data;
    p->sizes[0] = data_len;
    p->buffers[0] = nulls ? valid : NULL;
    p->buffers[1] = views;
    p->buffers[2] = data;
    p->buffers[3] = p->sizes;
    return make_column("vu", name, n, nulls, 4, p);
}

/* A column without nulls of fixed-width values (format "C": uint8, "l": int64). */
static PyObject *primitive_column(const char *format, const char *name, int64_t n,
                                  void *values) {
    ColumnPrivate *p = calloc(1, sizeof *p);
    if (!p) {
        block_free(values);
        return PyErr_NoMemory();
    }
    p->owned[0] = values;
    p->buffers[0] = NULL;
    p->buffers[1] = values;
    return make_column(format, name, n, 0, 2, p);
}

/* The slice's columns, each handed over once. */
static PyObject *Segments_columns(Segments *self, PyObject *unused) {
    (void)unused;
    if (!self->raw_views) {
        PyErr_SetString(PyExc_RuntimeError, "segments were exported already");
        return NULL;
    }
    const int64_t n = self->n;
    if (!self->raw)
        self->raw = block_alloc(1, 0);
    PyObject *cols[N_COLUMNS];
    /* each call takes its buffers over, whatever it returns */
    cols[0] = view_column("raw", n, 0, self->raw_views, NULL, self->raw, self->raw_bytes);
    cols[1] = view_column("sid", n, self->sid_nulls, self->sid_views, self->sid_valid,
                          block_alloc(1, 0), 0);
    cols[2] = primitive_column("C", "_code", n, self->code);
    cols[3] = primitive_column("l", "_isa", n, self->isa);
    cols[4] = primitive_column("l", "_gs", n, self->gs);
    cols[5] = primitive_column("l", "_st", n, self->st);
    cols[6] = primitive_column("C", "_last", n, self->last);
    self->raw = NULL;
    self->raw_views = self->sid_views = self->sid_valid = NULL;
    self->code = self->last = NULL;
    self->isa = self->gs = self->st = NULL;
    PyObject *out = PyTuple_New(N_COLUMNS);
    int ok = out != NULL;
    for (int j = 0; j < N_COLUMNS; j++)
        ok &= cols[j] != NULL;
    for (int j = 0; j < N_COLUMNS; j++) {
        if (ok)
            PyTuple_SET_ITEM(out, j, cols[j]);
        else
            Py_XDECREF(cols[j]);
    }
    if (!ok) {
        Py_XDECREF(out);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return NULL;
    }
    return out;
}

static PyObject *Segments_len(Segments *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong(self->n);
}

static PyMethodDef Segments_methods[] = {
    {"columns", (PyCFunction)Segments_columns, METH_NOARGS,
     "The columns raw, sid, _code, _isa, _gs, _st and _last, each for one export."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Segments_getset[] = {
    {"height", (getter)Segments_len, NULL, "Number of segments.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject SegmentsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "scfeeds._x12._native.Segments",
    .tp_basicsize = sizeof(Segments),
    .tp_dealloc = (destructor)Segments_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Segments of one X12 slice (take its columns once).",
    .tp_methods = Segments_methods,
    .tp_getset = Segments_getset,
};

/* ---- split: elements 1..m of each raw segment (a polars string column) ----
 *
 * The input is the column's Arrow stream (string views, as polars exports them). Each element
 * becomes a string view too: up to 12 bytes are stored in the view itself, longer ones are
 * copied into the column's own data buffer. (Pointing into the input's buffers would copy
 * nothing, but then a table's few long values would keep whole slices of segment text alive.)
 */

struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};

#define MAX_ELEMENTS 40
static const char *const ELEMENT_NAMES[MAX_ELEMENTS] = {
    "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14",
    "15", "16", "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28",
    "29", "30", "31", "32", "33", "34", "35", "36", "37", "38", "39", "40"};

typedef struct {
    PyObject_HEAD
    int64_t rows;
    int m;
    uint8_t *views[MAX_ELEMENTS];
    uint8_t *valid[MAX_ELEMENTS];
    char *data[MAX_ELEMENTS];       /* elements longer than 12 bytes, back to back */
    int64_t data_len[MAX_ELEMENTS];
    int64_t data_cap[MAX_ELEMENTS];
    int64_t nulls[MAX_ELEMENTS];
} Elements;

static void Elements_dealloc(Elements *self) {
    for (int j = 0; j < MAX_ELEMENTS; j++) {
        block_free(self->views[j]);
        block_free(self->valid[j]);
        block_free(self->data[j]);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ElementsType;

static void release_chunks(struct ArrowArray *chunks, int64_t k) {
    for (int64_t c = 0; c < k; c++)
        if (chunks[c].release)
            chunks[c].release(&chunks[c]);
    free(chunks);
}

/* Element j of a row as a view: inline, or appended to column j's buffer (-1: no memory). */
static int put_element(Elements *self, int j, int64_t row, const char *a, int32_t w) {
    uint8_t *view = self->views[j] + 16 * row;
    if (w > 12) {
        int64_t need = self->data_len[j] + w;
        if (need > INT32_MAX)
            return -1;
        if (need > self->data_cap[j]) {
            int64_t cap = self->data_cap[j] ? 2 * self->data_cap[j] : 1 << 16;
            while (cap < need)
                cap *= 2;
            char *more = block_resize(self->data[j], (size_t)cap, (size_t)self->data_len[j]);
            if (!more)
                return -1;
            self->data[j] = more;
            self->data_cap[j] = cap;
        }
        memcpy(self->data[j] + self->data_len[j], a, (size_t)w);
        view_at(view, a, w, (int32_t)self->data_len[j]);
        self->data_len[j] = need;
    } else {
        view_at(view, a, w, 0);
    }
    self->valid[j][row >> 3] |= (uint8_t)(1u << (row & 7));
    return 0;
}

static PyObject *split(PyObject *module, PyObject *args) {
    PyObject *capsule;
    int element, n;
    (void)module;
    if (!PyArg_ParseTuple(args, "Oii", &capsule, &element, &n))
        return NULL;
    if (element < 1 || element > 0x7F || n < 0 || n > MAX_ELEMENTS) {
        PyErr_SetString(PyExc_ValueError, "element must be an ASCII byte and n at most 40");
        return NULL;
    }
    struct ArrowArrayStream *stream = PyCapsule_GetPointer(capsule, "arrow_array_stream");
    if (!stream)
        return NULL;
    struct ArrowSchema schema = {0};
    if (stream->get_schema(stream, &schema) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "could not read the column's Arrow schema");
        return NULL;
    }
    int views = strcmp(schema.format, "vu") == 0;
    if (schema.release)
        schema.release(&schema);
    if (!views)
        Py_RETURN_NONE; /* not string views: the polars path */
    struct ArrowArray *chunks = NULL;
    int64_t k = 0, cap = 0, rows = 0;
    for (;;) {
        if (k == cap) {
            cap = cap ? 2 * cap : 4;
            struct ArrowArray *more = realloc(chunks, (size_t)cap * sizeof *more);
            if (!more) {
                release_chunks(chunks, k);
                return PyErr_NoMemory();
            }
            chunks = more;
        }
        memset(&chunks[k], 0, sizeof chunks[k]);
        if (stream->get_next(stream, &chunks[k]) != 0) {
            release_chunks(chunks, k);
            PyErr_SetString(PyExc_RuntimeError, "could not read the column's Arrow data");
            return NULL;
        }
        if (!chunks[k].release)
            break; /* end of stream */
        rows += chunks[k].length;
        k++;
    }
    Elements *self = PyObject_New(Elements, &ElementsType);
    if (!self) {
        release_chunks(chunks, k);
        return NULL;
    }
    memset((char *)self + sizeof(PyObject), 0, sizeof(Elements) - sizeof(PyObject));
    self->rows = rows;
    int failed = 0;
    for (int j = 0; j < n && !failed; j++) {
        self->views[j] = block_alloc((size_t)(rows > 0 ? rows : 1) * 16, 1);
        self->valid[j] = block_alloc((size_t)(rows / 8 + 1), 1);
        failed = !self->views[j] || !self->valid[j];
    }
    int m = 0;
    const char e = (char)element;
    if (!failed) {
        Py_BEGIN_ALLOW_THREADS
        int64_t row = 0;
        for (int64_t c = 0; c < k && !failed; c++) {
            const struct ArrowArray *a = &chunks[c];
            const uint8_t *bits = a->buffers[0];
            const uint8_t *vs = a->buffers[1];
            for (int64_t i = 0; i < a->length && !failed; i++, row++) {
                int64_t ai = i + a->offset;
                if (bits && !((bits[ai >> 3] >> (ai & 7)) & 1))
                    continue; /* a null segment: null elements */
                const uint8_t *sv = vs + 16 * ai;
                int32_t len;
                memcpy(&len, sv, 4);
                const char *value;
                if (len <= 12) {
                    value = (const char *)sv + 4;
                } else {
                    int32_t buf, off;
                    memcpy(&buf, sv + 8, 4);
                    memcpy(&off, sv + 12, 4);
                    value = (const char *)a->buffers[2 + buf] + off;
                }
                const char *x = value, *end = value + len;
                while (x < end && *x != e)
                    x++; /* the ID */
                int j = 0;
                while (x < end && j < n) {
                    const char *el = ++x; /* past the separator */
                    while (x < end && *x != e)
                        x++;
                    int32_t w = (int32_t)(x - el);
                    if (w && put_element(self, j, row, el, w) != 0) {
                        failed = 1;
                        break;
                    }
                    j++;
                }
                if (j > m)
                    m = j;
            }
        }
        Py_END_ALLOW_THREADS
    }
    release_chunks(chunks, k);
    if (failed) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->m = m;
    /* null counts of the m columns kept (the bitmaps say which rows have a value) */
    for (int j = 0; j < m; j++) {
        int64_t set = 0;
        for (int64_t b = 0; b < rows / 8; b++)
            set += __builtin_popcount(self->valid[j][b]);
        for (int64_t r = rows / 8 * 8; r < rows; r++)
            set += (self->valid[j][r >> 3] >> (r & 7)) & 1;
        self->nulls[j] = rows - set;
    }
    return (PyObject *)self;
}

static PyObject *Elements_columns(Elements *self, PyObject *unused) {
    (void)unused;
    int m = self->m;
    for (int j = 0; j < m; j++)
        if (!self->views[j]) {
            PyErr_SetString(PyExc_RuntimeError, "elements were exported already");
            return NULL;
        }
    PyObject *out = PyTuple_New(m);
    if (!out)
        return NULL;
    for (int j = 0; j < m; j++) {
        char *data = self->data[j];
        if (!data) {
            data = block_alloc(1, 0); /* short values only */
        } else if (self->data_len[j] < self->data_cap[j]) {
            /* the buffer grew by doubling: give the slack back, the column may live long */
            char *fit = block_resize(data, (size_t)(self->data_len[j] ? self->data_len[j] : 1),
                                     (size_t)self->data_len[j]);
            data = fit ? fit : data;
        }
        PyObject *col = view_column(ELEMENT_NAMES[j], self->rows, self->nulls[j],
                                    self->views[j], self->valid[j], data, self->data_len[j]);
        self->views[j] = NULL; /* the column owns them now */
        self->valid[j] = NULL;
        self->data[j] = NULL;
        if (!col) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, j, col);
    }
    return out;
}

static PyObject *Elements_width(Elements *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(self->m);
}

static PyMethodDef Elements_methods[] = {
    {"columns", (PyCFunction)Elements_columns, METH_NOARGS,
     "The element columns 01..m, each for one export."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Elements_getset[] = {
    {"width", (getter)Elements_width, NULL, "Number of element columns.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject ElementsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "scfeeds._x12._native.Elements",
    .tp_basicsize = sizeof(Elements),
    .tp_dealloc = (destructor)Elements_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Elements 01..m of split segments (take their columns once).",
    .tp_methods = Elements_methods,
    .tp_getset = Elements_getset,
};

static PyMethodDef module_methods[] = {
    {"use_allocator", use_allocator, METH_O,
     "use_allocator(capsule): make column buffers with polars' allocator (its capsule)."},
    {"buffer_bytes", buffer_bytes, METH_NOARGS,
     "Bytes in column buffers made by the kernel and not yet freed (by polars or here)."},
    {"allocator", allocator, METH_NOARGS,
     "Which allocator column buffers come from: 'polars' or 'system'."},
    {"segments", segments, METH_VARARGS,
     "segments(data, element, terminator) -> Segments, or None for what the polars path must "
     "read (bytes above 0x7F, unusual delimiters)."},
    {"split", split, METH_VARARGS,
     "split(stream, element, n) -> Elements: elements 1..m (m = min(n, the most any segment "
     "has)) of each string of an Arrow stream capsule, empty ones null; None when the column "
     "is not a string column."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_native",
    .m_doc = "Native X12 kernels (optional; polars is the fallback).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&SegmentsType) < 0 || PyType_Ready(&ElementsType) < 0 ||
        PyType_Ready(&ColumnType) < 0)
        return NULL;
    return PyModule_Create(&module_def);
}
