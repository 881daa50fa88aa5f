/* One pass over an X12 slice: its segments and their IDs, as Arrow columns.
 *
 * segments(data, element, segment) -> Segments | None
 *
 * The same frame as the polars tokenizer in _tokenize.py (columns raw and sid), built in one
 * pass over the bytes instead of a CSV read plus four column queries:
 *   - carriage returns and line feeds that are not delimiters are formatting and dropped;
 *   - each segment loses leading spaces and tabs (pretty-printed files); empty ones are dropped;
 *   - sid is the segment's first two or three capitals or digits when the element separator
 *     or the segment's end follows them, else null.
 * Returns None for what this pass does not handle (any byte above 0x7F: a BOM or UTF-8 text
 * that must be checked; a delimiter that is a capital, digit, space or tab); the caller then
 * uses the polars path, which handles everything.
 *
 * The result implements the Arrow PyCapsule interface (__arrow_c_array__): a struct array of
 * two string-view columns (raw, sid) that polars takes as they are, without pyarrow and without
 * a copy, and the envelope counters _core._counted needs, counted within the slice (_code,
 * _isa, _gs, _st, _last).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
static const char *const SEGMENT_COLUMNS[N_COLUMNS] = {"raw", "sid", "_code", "_isa",
                                                       "_gs", "_st", "_last"};
static const char *const SEGMENT_FORMATS[N_COLUMNS] = {"vu", "vu", "C", "l", "l", "l", "C"};

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
    free(self->raw);
    free(self->raw_views);
    free(self->sid_views);
    free(self->sid_valid);
    free(self->code);
    free(self->isa);
    free(self->gs);
    free(self->st);
    free(self->last);
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
    self->raw = malloc((size_t)size + 1);
    self->raw_views = malloc((size_t)cap * 16);
    self->sid_views = malloc((size_t)cap * 16);
    self->sid_valid = calloc((size_t)(cap / 8 + 1), 1);
    self->code = malloc((size_t)cap);
    self->isa = malloc((size_t)cap * sizeof(int64_t));
    self->gs = malloc((size_t)cap * sizeof(int64_t));
    self->st = malloc((size_t)cap * sizeof(int64_t));
    self->last = malloc((size_t)cap);
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
    while (p <= end) {
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
        p = stop + 1; /* past the terminator (or the end) */
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

/* ---- export: a struct array {raw: string view, sid: string view} ---- */

typedef struct {
    const void *buffers[4]; /* validity, views, data (raw only), variadic sizes */
    void *owned[3];
    int64_t sizes[1];
} ColumnPrivate;

typedef struct {
    struct ArrowArray *children[N_COLUMNS];
    struct ArrowArray child[N_COLUMNS];
    const void *buffers[1];
} StructPrivate;

static void release_column(struct ArrowArray *a) {
    ColumnPrivate *p = a->private_data;
    for (int j = 0; j < 3; j++)
        free(p->owned[j]);
    free(p);
    a->release = NULL;
}

static void release_struct(struct ArrowArray *a) {
    StructPrivate *p = a->private_data;
    for (int j = 0; j < N_COLUMNS; j++)
        if (p->child[j].release)
            p->child[j].release(&p->child[j]);
    free(p);
    a->release = NULL;
}

typedef struct {
    struct ArrowSchema *children[N_COLUMNS];
    struct ArrowSchema child[N_COLUMNS];
} SchemaPrivate;

static void release_leaf_schema(struct ArrowSchema *s) { s->release = NULL; }

static void release_schema(struct ArrowSchema *s) {
    SchemaPrivate *p = s->private_data;
    for (int j = 0; j < N_COLUMNS; j++)
        if (p->child[j].release)
            p->child[j].release(&p->child[j]);
    free(p);
    s->release = NULL;
}

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

/* A column without nulls that owns one buffer: [validity (none), data]. */
static void primitive_column(struct ArrowArray *a, ColumnPrivate *p, int64_t n, void *data) {
    p->owned[0] = data;
    p->buffers[0] = NULL;
    p->buffers[1] = data;
    *a = (struct ArrowArray){.length = n,
                             .n_buffers = 2,
                             .buffers = p->buffers,
                             .release = release_column,
                             .private_data = p};
}

static PyObject *Segments_arrow_c_array(Segments *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"requested_schema", NULL};
    PyObject *requested = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O", kwlist, &requested))
        return NULL;
    if (requested != Py_None) {
        PyErr_SetString(PyExc_NotImplementedError, "only the native schema is exported");
        return NULL;
    }
    if (!self->raw_views) {
        PyErr_SetString(PyExc_RuntimeError, "segments were exported already");
        return NULL;
    }
    struct ArrowSchema *schema = calloc(1, sizeof *schema);
    struct ArrowArray *array = calloc(1, sizeof *array);
    SchemaPrivate *sp = calloc(1, sizeof *sp);
    StructPrivate *ap = calloc(1, sizeof *ap);
    ColumnPrivate *cp[N_COLUMNS] = {0};
    int failed = !schema || !array || !sp || !ap;
    for (int j = 0; j < N_COLUMNS && !failed; j++)
        failed = !(cp[j] = calloc(1, sizeof(ColumnPrivate)));
    if (failed) {
        for (int j = 0; j < N_COLUMNS; j++)
            free(cp[j]);
        free(schema);
        free(array);
        free(sp);
        free(ap);
        return PyErr_NoMemory();
    }
    for (int j = 0; j < N_COLUMNS; j++) {
        sp->child[j] = (struct ArrowSchema){.format = SEGMENT_FORMATS[j],
                                            .name = SEGMENT_COLUMNS[j],
                                            .flags = ARROW_FLAG_NULLABLE,
                                            .release = release_leaf_schema};
        sp->children[j] = &sp->child[j];
    }
    *schema = (struct ArrowSchema){.format = "+s",
                                   .name = "",
                                   .n_children = N_COLUMNS,
                                   .children = sp->children,
                                   .release = release_schema,
                                   .private_data = sp};
    const int64_t n = self->n;
    /* raw: no nulls, one data buffer */
    ColumnPrivate *rawp = cp[0];
    rawp->owned[0] = self->raw_views;
    rawp->owned[1] = self->raw;
    rawp->sizes[0] = self->raw_bytes;
    rawp->buffers[0] = NULL;
    rawp->buffers[1] = self->raw_views;
    rawp->buffers[2] = self->raw;
    rawp->buffers[3] = rawp->sizes;
    ap->child[0] = (struct ArrowArray){.length = n,
                                       .n_buffers = 4,
                                       .buffers = rawp->buffers,
                                       .release = release_column,
                                       .private_data = rawp};
    /* sid: every ID inline, no data buffer */
    ColumnPrivate *sidp = cp[1];
    sidp->owned[0] = self->sid_views;
    sidp->owned[1] = self->sid_valid;
    sidp->buffers[0] = self->sid_nulls ? self->sid_valid : NULL;
    sidp->buffers[1] = self->sid_views;
    sidp->buffers[2] = sidp->sizes;
    ap->child[1] = (struct ArrowArray){.length = n,
                                       .null_count = self->sid_nulls,
                                       .n_buffers = 3,
                                       .buffers = sidp->buffers,
                                       .release = release_column,
                                       .private_data = sidp};
    primitive_column(&ap->child[2], cp[2], n, self->code);
    primitive_column(&ap->child[3], cp[3], n, self->isa);
    primitive_column(&ap->child[4], cp[4], n, self->gs);
    primitive_column(&ap->child[5], cp[5], n, self->st);
    primitive_column(&ap->child[6], cp[6], n, self->last);
    /* the columns own the buffers now */
    self->raw = NULL;
    self->raw_views = NULL;
    self->sid_views = NULL;
    self->sid_valid = NULL;
    self->code = NULL;
    self->isa = self->gs = self->st = NULL;
    self->last = NULL;
    for (int j = 0; j < N_COLUMNS; j++)
        ap->children[j] = &ap->child[j];
    ap->buffers[0] = NULL;
    *array = (struct ArrowArray){.length = n,
                                 .n_buffers = 1,
                                 .n_children = N_COLUMNS,
                                 .buffers = ap->buffers,
                                 .children = ap->children,
                                 .release = release_struct,
                                 .private_data = ap};
    PyObject *sc = PyCapsule_New(schema, "arrow_schema", capsule_schema_destructor);
    if (!sc) {
        schema->release(schema);
        free(schema);
        array->release(array);
        free(array);
        return NULL;
    }
    PyObject *ac = PyCapsule_New(array, "arrow_array", capsule_array_destructor);
    if (!ac) {
        Py_DECREF(sc);
        array->release(array);
        free(array);
        return NULL;
    }
    return Py_BuildValue("(NN)", sc, ac);
}

static PyObject *Segments_len(Segments *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong(self->n);
}

static PyMethodDef Segments_methods[] = {
    {"__arrow_c_array__", (PyCFunction)(void (*)(void))Segments_arrow_c_array,
     METH_VARARGS | METH_KEYWORDS, "The segments as an Arrow struct array (raw, sid)."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Segments_getset[] = {
    {"height", (getter)Segments_len, NULL, "Number of segments.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject SegmentsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "scfeeds._x12._native.Segments",
    .tp_basicsize = sizeof(Segments),
    .tp_dealloc = (destructor)Segments_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Segments of one X12 slice (export once with __arrow_c_array__).",
    .tp_methods = Segments_methods,
    .tp_getset = Segments_getset,
};

/* ---- split: elements 1..m of each raw segment (a polars string column) ----
 *
 * The input is the column's Arrow stream (string views, as polars exports them). Each element
 * becomes a string view too: up to 12 bytes are stored in the view itself, longer ones point
 * into the input's own data buffers, which the output columns keep alive. Nothing is copied
 * but the short elements, and polars takes the views as they are.
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

/* The input chunks, shared by every output column (freed with the last one). */
typedef struct {
    int64_t refs;
    int64_t k;                 /* chunks */
    struct ArrowArray *chunks; /* as received (released at the end) */
    int64_t *base;             /* per chunk: index of its first data buffer in the output */
    int64_t nv;                /* data buffers in all */
    const void **data;         /* nv data buffer pointers */
    int64_t *sizes;            /* nv sizes (the output's variadic sizes buffer) */
} Source;

static void source_unref(Source *src) {
    if (__atomic_sub_fetch(&src->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (int64_t c = 0; c < src->k; c++)
        if (src->chunks[c].release)
            src->chunks[c].release(&src->chunks[c]);
    free(src->chunks);
    free(src->base);
    free(src->data);
    free(src->sizes);
    free(src);
}

typedef struct {
    PyObject_HEAD
    int64_t rows;
    int m;
    Source *src;
    uint8_t *views[MAX_ELEMENTS];
    uint8_t *valid[MAX_ELEMENTS];
    int64_t nulls[MAX_ELEMENTS];
} Elements;

static void Elements_dealloc(Elements *self) {
    for (int j = 0; j < MAX_ELEMENTS; j++) {
        free(self->views[j]);
        free(self->valid[j]);
    }
    if (self->src)
        source_unref(self->src);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ElementsType;

static inline void put_view(uint8_t *view, const char *a, int32_t w, const uint8_t *src_view,
                            const char *value, int64_t base) {
    memcpy(view, &w, 4);
    if (w <= 12) {
        memcpy(view + 4, a, (size_t)w);
        return;
    }
    /* longer than 12: the value was not inline either; point into its buffer */
    int32_t buf, off;
    memcpy(&buf, src_view + 8, 4);
    memcpy(&off, src_view + 12, 4);
    memcpy(view + 4, a, 4);
    int32_t b = (int32_t)(base + buf), o = off + (int32_t)(a - value);
    memcpy(view + 8, &b, 4);
    memcpy(view + 12, &o, 4);
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
    Source *src = calloc(1, sizeof *src);
    if (!src)
        return PyErr_NoMemory();
    src->refs = 1;
    int64_t cap = 0, rows = 0;
    for (;;) {
        if (src->k == cap) {
            cap = cap ? 2 * cap : 4;
            struct ArrowArray *more = realloc(src->chunks, (size_t)cap * sizeof *more);
            if (!more) {
                source_unref(src);
                return PyErr_NoMemory();
            }
            src->chunks = more;
        }
        struct ArrowArray *a = &src->chunks[src->k];
        memset(a, 0, sizeof *a);
        if (stream->get_next(stream, a) != 0) {
            source_unref(src);
            PyErr_SetString(PyExc_RuntimeError, "could not read the column's Arrow data");
            return NULL;
        }
        if (!a->release)
            break; /* end of stream */
        src->k++;
        rows += a->length;
        src->nv += a->n_buffers - 3; /* validity, views, data..., sizes */
    }
    src->base = malloc((size_t)(src->k + 1) * sizeof(int64_t));
    src->data = malloc((size_t)(src->nv + 1) * sizeof(void *));
    src->sizes = malloc((size_t)(src->nv + 1) * sizeof(int64_t));
    if (!src->base || !src->data || !src->sizes) {
        source_unref(src);
        return PyErr_NoMemory();
    }
    for (int64_t c = 0, v = 0; c < src->k; c++) {
        struct ArrowArray *a = &src->chunks[c];
        int64_t nb = a->n_buffers - 3;
        const int64_t *sizes = a->buffers[a->n_buffers - 1];
        src->base[c] = v;
        for (int64_t b = 0; b < nb; b++, v++) {
            src->data[v] = a->buffers[2 + b];
            src->sizes[v] = sizes[b];
        }
    }
    Elements *self = PyObject_New(Elements, &ElementsType);
    if (!self) {
        source_unref(src);
        return NULL;
    }
    memset((char *)self + sizeof(PyObject), 0, sizeof(Elements) - sizeof(PyObject));
    self->rows = rows;
    self->src = src;
    int failed = 0;
    const char e = (char)element;
    for (int j = 0; j < n && !failed; j++) {
        self->views[j] = calloc((size_t)(rows > 0 ? rows : 1), 16);
        self->valid[j] = calloc((size_t)(rows / 8 + 1), 1);
        failed = !self->views[j] || !self->valid[j];
    }
    if (failed) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    int m = 0;
    Py_BEGIN_ALLOW_THREADS
    int64_t row = 0;
    for (int64_t c = 0; c < src->k; c++) {
        const struct ArrowArray *a = &src->chunks[c];
        const uint8_t *bits = a->buffers[0];
        const uint8_t *vs = a->buffers[1];
        for (int64_t i = 0; i < a->length; i++, row++) {
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
                if (w) {
                    put_view(self->views[j] + 16 * row, el, w, sv, value, src->base[c]);
                    self->valid[j][row >> 3] |= (uint8_t)(1u << (row & 7));
                }
                j++;
            }
            if (j > m)
                m = j;
        }
    }
    Py_END_ALLOW_THREADS
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

/* One exported column: its views and bitmap, and a reference to the input buffers. */
typedef struct {
    const void **buffers; /* validity, views, data..., sizes */
    uint8_t *views;
    uint8_t *valid;
    Source *src;
} ViewColumn;

static void release_view_column(struct ArrowArray *a) {
    ViewColumn *p = a->private_data;
    free(p->views);
    free(p->valid);
    free(p->buffers);
    source_unref(p->src);
    free(p);
    a->release = NULL;
}

typedef struct {
    struct ArrowArray *children[MAX_ELEMENTS];
    struct ArrowArray child[MAX_ELEMENTS];
    const void *buffers[1];
    int m;
} ElementsArrayPrivate;

typedef struct {
    struct ArrowSchema *children[MAX_ELEMENTS];
    struct ArrowSchema child[MAX_ELEMENTS];
} ElementsSchemaPrivate;

static void release_elements_array(struct ArrowArray *a) {
    ElementsArrayPrivate *p = a->private_data;
    for (int j = 0; j < p->m; j++)
        if (p->child[j].release)
            p->child[j].release(&p->child[j]);
    free(p);
    a->release = NULL;
}

static void release_elements_schema(struct ArrowSchema *s) {
    free(s->private_data);
    s->release = NULL;
}

static PyObject *Elements_arrow_c_array(Elements *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"requested_schema", NULL};
    PyObject *requested = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O", kwlist, &requested))
        return NULL;
    if (requested != Py_None) {
        PyErr_SetString(PyExc_NotImplementedError, "only the native schema is exported");
        return NULL;
    }
    int m = self->m;
    for (int j = 0; j < m; j++)
        if (!self->views[j]) {
            PyErr_SetString(PyExc_RuntimeError, "elements were exported already");
            return NULL;
        }
    struct ArrowSchema *schema = calloc(1, sizeof *schema);
    struct ArrowArray *array = calloc(1, sizeof *array);
    ElementsSchemaPrivate *sp = calloc(1, sizeof *sp);
    ElementsArrayPrivate *ap = calloc(1, sizeof *ap);
    ViewColumn *cols[MAX_ELEMENTS] = {0};
    int failed = !schema || !array || !sp || !ap;
    const int64_t nv = self->src->nv;
    for (int j = 0; j < m && !failed; j++) {
        cols[j] = calloc(1, sizeof(ViewColumn));
        if (cols[j])
            cols[j]->buffers = malloc((size_t)(nv + 3) * sizeof(void *));
        failed = !cols[j] || !cols[j]->buffers;
    }
    if (failed) {
        for (int j = 0; j < m; j++)
            if (cols[j]) {
                free(cols[j]->buffers);
                free(cols[j]);
            }
        free(schema);
        free(array);
        free(sp);
        free(ap);
        return PyErr_NoMemory();
    }
    ap->m = m;
    for (int j = 0; j < m; j++) {
        sp->child[j] = (struct ArrowSchema){.format = "vu",
                                            .name = ELEMENT_NAMES[j],
                                            .flags = ARROW_FLAG_NULLABLE,
                                            .release = release_leaf_schema};
        sp->children[j] = &sp->child[j];
        ViewColumn *col = cols[j];
        col->views = self->views[j];
        col->valid = self->valid[j];
        self->views[j] = NULL; /* the column owns them now */
        self->valid[j] = NULL;
        col->src = self->src;
        __atomic_add_fetch(&self->src->refs, 1, __ATOMIC_ACQ_REL);
        col->buffers[0] = self->nulls[j] ? col->valid : NULL;
        col->buffers[1] = col->views;
        for (int64_t v = 0; v < nv; v++)
            col->buffers[2 + v] = self->src->data[v];
        col->buffers[2 + nv] = self->src->sizes;
        ap->child[j] = (struct ArrowArray){.length = self->rows,
                                           .null_count = self->nulls[j],
                                           .n_buffers = 3 + nv,
                                           .buffers = col->buffers,
                                           .release = release_view_column,
                                           .private_data = col};
        ap->children[j] = &ap->child[j];
    }
    *schema = (struct ArrowSchema){.format = "+s",
                                   .name = "",
                                   .n_children = m,
                                   .children = sp->children,
                                   .release = release_elements_schema,
                                   .private_data = sp};
    *array = (struct ArrowArray){.length = self->rows,
                                 .n_buffers = 1,
                                 .n_children = m,
                                 .buffers = ap->buffers,
                                 .children = ap->children,
                                 .release = release_elements_array,
                                 .private_data = ap};
    PyObject *sc = PyCapsule_New(schema, "arrow_schema", capsule_schema_destructor);
    if (!sc) {
        schema->release(schema);
        free(schema);
        array->release(array);
        free(array);
        return NULL;
    }
    PyObject *ac = PyCapsule_New(array, "arrow_array", capsule_array_destructor);
    if (!ac) {
        Py_DECREF(sc);
        array->release(array);
        free(array);
        return NULL;
    }
    return Py_BuildValue("(NN)", sc, ac);
}

static PyObject *Elements_width(Elements *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(self->m);
}

static PyMethodDef Elements_methods[] = {
    {"__arrow_c_array__", (PyCFunction)(void (*)(void))Elements_arrow_c_array,
     METH_VARARGS | METH_KEYWORDS, "The elements as an Arrow struct array (01, 02, ...)."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Elements_getset[] = {
    {"width", (getter)Elements_width, NULL, "Number of element columns.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject ElementsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "scfeeds._x12._native.Elements",
    .tp_basicsize = sizeof(Elements),
    .tp_dealloc = (destructor)Elements_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Elements 01..m of split segments (export once with __arrow_c_array__).",
    .tp_methods = Elements_methods,
    .tp_getset = Elements_getset,
};

static PyMethodDef module_methods[] = {
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
    if (PyType_Ready(&SegmentsType) < 0 || PyType_Ready(&ElementsType) < 0)
        return NULL;
    return PyModule_Create(&module_def);
}
