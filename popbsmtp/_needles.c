/*
 * popbsmtp._needles: find the lines of a block that hold any of a few needles,
 * in one pass over the block; and count a block's lines.
 *
 * Why C: the pure-Python prefilter (popbsmtp/matcher.py) searches the block
 * once per distinct needle, and with every profile on that is seven passes,
 * half the daemon's time on a busy log (docs/benchmarks.md).  Here one loop
 * looks at each byte once: a bitmap of the needles' first two bytes says
 * whether a needle may start at this position, and only then are the needles
 * compared.  The answers are exactly those of the Python fallback, which the
 * tests check on random blocks.
 *
 * What it does not do: decide anything.  It only narrows which lines the
 * matcher parses; the rules still judge every candidate.  The input is
 * untrusted log text: every read stays inside the block.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_NEEDLES 32

/* The needles, and their first three bytes broadcast for the vector test. */
struct needles {
    Py_ssize_t count;
    const unsigned char *pat[MAX_NEEDLES];
    Py_ssize_t len[MAX_NEEDLES];
};

/* Line (start, end) around a hit at `at`: end excludes the newline. */
static void
line_around(const unsigned char *base, Py_ssize_t size, Py_ssize_t at,
            Py_ssize_t *start, Py_ssize_t *end)
{
    Py_ssize_t s = at;
    while (s > 0 && base[s - 1] != '\n')
        s--;
    const unsigned char *nl = memchr(base + at, '\n', (size_t)(size - at));
    *start = s;
    *end = nl ? (Py_ssize_t)(nl - base) : size;
}

static int
needle_at(const struct needles *n, const unsigned char *base, Py_ssize_t size, Py_ssize_t at)
{
    for (Py_ssize_t i = 0; i < n->count; i++)
        if (n->len[i] <= size - at && base[at] == n->pat[i][0]
            && memcmp(base + at, n->pat[i], (size_t)n->len[i]) == 0)
            return 1;
    return 0;
}

#if defined(__GNUC__)
/*
 * Sixteen positions at a time (GCC/Clang vector extensions: SSE2 on x86-64,
 * NEON on ARM): a position can start a needle only if its first three bytes
 * (two for a two-byte needle) are the needle's.  Returns the first position
 * >= at that may, or the first position the vector test could not cover.
 */
typedef unsigned char v16 __attribute__((vector_size(16)));
typedef unsigned long long v2 __attribute__((vector_size(16)));

static Py_ssize_t
skip(const struct needles *n, const unsigned char *base, Py_ssize_t size, Py_ssize_t at)
{
    v16 b0[MAX_NEEDLES], b1[MAX_NEEDLES], b2[MAX_NEEDLES], any3[MAX_NEEDLES];
    for (Py_ssize_t i = 0; i < n->count; i++) {
        v16 ones = {0};
        ones = ~ones;
        b0[i] = (v16){0} + n->pat[i][0];
        b1[i] = (v16){0} + n->pat[i][1];
        b2[i] = (v16){0} + (unsigned char)(n->len[i] > 2 ? n->pat[i][2] : 0);
        any3[i] = n->len[i] > 2 ? (v16){0} : ones;
    }
    while (at + 18 <= size) {
        v16 c0, c1, c2, hit = {0};
        memcpy(&c0, base + at, 16);
        memcpy(&c1, base + at + 1, 16);
        memcpy(&c2, base + at + 2, 16);
        for (Py_ssize_t i = 0; i < n->count; i++)
            hit |= (v16)(c0 == b0[i]) & (v16)(c1 == b1[i]) & ((v16)(c2 == b2[i]) | any3[i]);
        v2 wide = (v2)hit;
        if (wide[0] | wide[1]) {
            for (int k = 0; k < 16; k++)
                if (hit[k])
                    return at + k;
        }
        at += 16;
    }
    return at;
}
#else
static Py_ssize_t
skip(const struct needles *n, const unsigned char *base, Py_ssize_t size, Py_ssize_t at)
{
    (void)n; (void)base; (void)size;
    return at;
}
#endif

static int
append_span(PyObject *out, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *pair = Py_BuildValue("(nn)", start, end);
    if (pair == NULL)
        return -1;
    int failed = PyList_Append(out, pair);
    Py_DECREF(pair);
    return failed;
}

static int
read_needles(PyObject *tuple, struct needles *n)
{
    n->count = PyTuple_GET_SIZE(tuple);
    if (n->count > MAX_NEEDLES) {
        PyErr_SetString(PyExc_ValueError, "too many needles");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n->count; i++) {
        PyObject *needle = PyTuple_GET_ITEM(tuple, i);
        if (!PyBytes_Check(needle) || PyBytes_GET_SIZE(needle) < 2) {
            PyErr_SetString(PyExc_ValueError, "needles must be bytes of at least 2 bytes");
            return -1;
        }
        n->pat[i] = (const unsigned char *)PyBytes_AS_STRING(needle);
        n->len[i] = PyBytes_GET_SIZE(needle);
        if (memchr(n->pat[i], '\n', (size_t)n->len[i]) != NULL) {
            PyErr_SetString(PyExc_ValueError, "a needle cannot hold a newline");
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(candidate_lines_doc,
"candidate_lines(block, needles) -> list of (start, end)\n\n"
"The lines of `block` (bytes) holding any of `needles` (a tuple of at most\n"
"32 bytes objects, each at least 2 bytes long, without newline), in order,\n"
"each once; `end` excludes the newline.");

static PyObject *
candidate_lines(PyObject *self, PyObject *args)
{
    Py_buffer block;
    PyObject *tuple, *out = NULL;
    struct needles n;

    if (!PyArg_ParseTuple(args, "y*O!:candidate_lines", &block, &PyTuple_Type, &tuple))
        return NULL;
    if (read_needles(tuple, &n) < 0 || (out = PyList_New(0)) == NULL)
        goto done;
    const unsigned char *base = block.buf;
    Py_ssize_t size = block.len, at = 0;
    while (at < size) {
        at = skip(&n, base, size, at);
        if (at >= size)
            break;
        if (!needle_at(&n, base, size, at)) {
            at++;
            continue;
        }
        Py_ssize_t start, end;
        line_around(base, size, at, &start, &end);
        if (append_span(out, start, end) < 0) {
            Py_CLEAR(out);
            goto done;
        }
        at = end + 1;
    }
done:
    PyBuffer_Release(&block);
    return out;
}

PyDoc_STRVAR(newlines_doc,
"newlines(block) -> int\n\n"
"block.count(b'\\n'), with memchr: lines are long, so it jumps from one to\n"
"the next instead of comparing every byte (the tail counts every line read).");

static PyObject *
newlines(PyObject *self, PyObject *args)
{
    Py_buffer block;
    if (!PyArg_ParseTuple(args, "y*:newlines", &block))
        return NULL;
    const char *at = block.buf, *end = at + block.len;
    Py_ssize_t count = 0;
    while (at < end && (at = memchr(at, '\n', (size_t)(end - at))) != NULL) {
        count++;
        at++;
    }
    PyBuffer_Release(&block);
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"candidate_lines", candidate_lines, METH_VARARGS, candidate_lines_doc},
    {"newlines", newlines, METH_VARARGS, newlines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "popbsmtp._needles",
    "One-pass search for the lines holding any of a few needles.", -1, methods,
};

PyMODINIT_FUNC
PyInit__needles(void)
{
    return PyModule_Create(&module);
}
