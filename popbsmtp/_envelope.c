/*
 * popbsmtp._envelope: split a syslog line's envelope (stamp, host, program,
 * pid) from its message, for the two formats a mail log is written in.
 *
 * Why C: after the prefilter, splitting the envelope was the largest cost
 * of a candidate line (a regex match, a dozen group look-ups and the stamp's
 * conversion: about 3 of the 10 microseconds a login costs end to end, see
 * docs/benchmarks.md).  Here one forward scan does it.
 *
 * The reference is the regexes in popbsmtp/syslog.py: these functions give
 * exactly their answers (tests/unit/test_envelope_c.py compares both on
 * random and mutated lines), and where they cannot be sure of that they
 * answer NotImplemented and the regexes run: for any line that is not pure
 * ASCII, and for a stamp whose microseconds exceed a double's exact range.
 * Each check below names the regex part it stands for.
 *
 * The input is untrusted log text: every read is bounded by the line's length
 * (embedded NULs are ordinary characters here), and nothing is decided: the
 * profiles' rules still judge the message.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The value of `count` digits at s[at]; -1 unless all are digits. */
static long
number(const char *s, Py_ssize_t len, Py_ssize_t at, int count)
{
    long value = 0;
    if (at + count > len)
        return -1;
    for (int i = 0; i < count; i++) {
        if (!is_digit(s[at + i]))
            return -1;
        value = value * 10 + (s[at + i] - '0');
    }
    return value;
}

/* Length of the run of digits at s[at]. */
static Py_ssize_t
digits(const char *s, Py_ssize_t len, Py_ssize_t at)
{
    Py_ssize_t end = at;
    while (end < len && is_digit(s[end]))
        end++;
    return end - at;
}

/* [A-Za-z0-9_./-], the characters of a syslog tag. */
static int
tag_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_'
        || c == '.' || c == '/' || c == '-';
}

struct tail {
    Py_ssize_t host, host_end, prog, prog_end, end;
    long long pid; /* -1: none */
};

/*
 * " " _HOST " " _PROGRAM from s[at], where _HOST is [^ ]{0,254}[^ :] and
 * _PROGRAM is ([A-Za-z0-9_./-]{1,64})(?:\[([0-9]{1,10})\])?": ".  Neither
 * class holds a space and a tag character is never '[' or ':', so every
 * greedy part can only take its whole run: a regex backtrack never finds
 * another match, and a run of the wrong length is no match.
 */
static int
split_tail(const char *s, Py_ssize_t len, Py_ssize_t at, struct tail *t)
{
    if (at >= len || s[at] != ' ')
        return 0;
    Py_ssize_t host = at + 1, end = host;
    while (end < len && s[end] != ' ')
        end++;
    if (end == host || end - host > 255 || end >= len || s[end - 1] == ':')
        return 0;
    Py_ssize_t prog = end + 1, prog_end = prog;
    while (prog_end < len && tag_char(s[prog_end]))
        prog_end++;
    if (prog_end == prog || prog_end - prog > 64)
        return 0;
    Py_ssize_t at_colon = prog_end;
    t->pid = -1;
    if (at_colon < len && s[at_colon] == '[') {
        Py_ssize_t n = digits(s, len, at_colon + 1);
        if (n < 1 || n > 10 || at_colon + 1 + n >= len || s[at_colon + 1 + n] != ']')
            return 0;
        t->pid = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            t->pid = t->pid * 10 + (s[at_colon + 1 + i] - '0');
        at_colon += n + 2;
    }
    if (at_colon + 1 >= len || s[at_colon] != ':' || s[at_colon + 1] != ' ')
        return 0;
    t->host = host;
    t->host_end = end;
    t->prog = prog;
    t->prog_end = prog_end;
    t->end = at_colon + 2;
    return 1;
}

static int
leap(long year)
{
    return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
}

/* Days from 1970-01-01 to a proleptic Gregorian date (year >= 1). */
static long long
days_from_civil(long year, long month, long day)
{
    static const int before[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    long long y = year - 1; /* whole years before this one, from 0001-01-01 */
    long long days = y * 365 + y / 4 - y / 100 + y / 400 + before[month - 1] + (day - 1);
    if (month > 2 && leap(year))
        days++;
    return days - 719162; /* 0001-01-01 to 1970-01-01 */
}

/*
 * The Unix time of "YYYY-MM-DD[T ]HH:MM:SS" at s[0] in zone (sign, seconds),
 * as datetime.fromisoformat(...).timestamp() gives it; 0 when that raises
 * (a field out of range, year 0, an offset of a day or more).
 */
static int
iso_seconds(const char *s, int sign, long offset, long long *out)
{
    static const int days_in[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    long year = number(s, 19, 0, 4), month = number(s, 19, 5, 2), day = number(s, 19, 8, 2);
    long hour = number(s, 19, 11, 2), minute = number(s, 19, 14, 2);
    long second = number(s, 19, 17, 2);
    if (year < 1 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59
        || second > 59 || offset >= 86400)
        return 0;
    if (day > days_in[month - 1] + (month == 2 && leap(year)))
        return 0;
    *out = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
        - sign * offset;
    return 1;
}

static PyObject *
substring(PyObject *line, Py_ssize_t start, Py_ssize_t end)
{
    return PyUnicode_Substring(line, start, end);
}

/*
 * A tuple of `count` new references, of `type` (the Envelope named tuple is a
 * tuple subclass, made as CPython's tuple_subtype_new makes one); consumes them.
 */
static PyObject *
pack(PyTypeObject *type, PyObject **items, int count)
{
    PyObject *made = NULL;
    for (int i = 0; i < count; i++)
        if (items[i] == NULL)
            goto fail;
    made = type == &PyTuple_Type ? PyTuple_New(count) : type->tp_alloc(type, count);
    if (made == NULL)
        goto fail;
    for (int i = 0; i < count; i++)
        PyTuple_SET_ITEM(made, i, items[i]);
    return made;
fail:
    for (int i = 0; i < count; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

/* NotImplemented, a new reference (Py_NewRef is 3.10+; EL 9 has 3.9). */
static PyObject *
undecided(void)
{
    Py_INCREF(Py_NotImplemented);
    return Py_NotImplemented;
}

/*
 * The line's text in *s and *len: 1 when it is pure ASCII, 0 when the
 * regexes must decide (any other str), -1 with an exception (not a str).
 */
static int
ascii_text(PyObject *line, const char **s, Py_ssize_t *len)
{
    if (!PyUnicode_Check(line)) {
        PyErr_SetString(PyExc_TypeError, "the line must be a str");
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(line) < 0)
        return -1;
#endif
    if (!PyUnicode_IS_ASCII(line))
        return 0;
    *len = PyUnicode_GET_LENGTH(line);
    *s = (const char *)PyUnicode_DATA(line);
    return 1;
}

static PyObject *
pid_object(long long pid)
{
    if (pid < 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(pid);
}

PyDoc_STRVAR(rfc3339_doc,
"rfc3339(line, envelope_type) -> envelope | None | NotImplemented\n\n"
"The envelope of an rsyslog high-precision line, as popbsmtp.syslog's\n"
"_RFC3339 regex and _iso_time give it; NotImplemented when they must decide.");

static PyObject *
rfc3339(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[1])
        || !PyType_IsSubtype((PyTypeObject *)args[1], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "rfc3339(line, envelope_type)");
        return NULL;
    }
    const char *s;
    Py_ssize_t len;
    int ascii = ascii_text(args[0], &s, &len);
    if (ascii <= 0)
        return ascii < 0 ? NULL : undecided();
    /* (?P<sec>[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}) */
    if (len < 19 || number(s, len, 0, 4) < 0 || s[4] != '-' || number(s, len, 5, 2) < 0
        || s[7] != '-' || number(s, len, 8, 2) < 0 || (s[10] != 'T' && s[10] != ' ')
        || number(s, len, 11, 2) < 0 || s[13] != ':' || number(s, len, 14, 2) < 0
        || s[16] != ':' || number(s, len, 17, 2) < 0)
        Py_RETURN_NONE;
    /* (?:\.(?P<frac>[0-9]{1,9}))?  (a zone never starts with a digit) */
    Py_ssize_t at = 19;
    long micro = -1;
    if (at < len && s[at] == '.') {
        Py_ssize_t n = digits(s, len, at + 1);
        if (n < 1 || n > 9)
            Py_RETURN_NONE;
        micro = 0;
        for (int i = 0; i < 6; i++) /* frac[:6].ljust(6, "0") */
            micro = micro * 10 + (i < n ? s[at + 1 + i] - '0' : 0);
        at += 1 + n;
    }
    /* (?P<zone>Z|[+-][0-9]{2}:?[0-9]{2}) */
    int sign = 1;
    long offset = 0;
    if (at < len && s[at] == 'Z') {
        at++;
    } else if (at < len && (s[at] == '+' || s[at] == '-')) {
        sign = s[at] == '-' ? -1 : 1;
        long hours = number(s, len, at + 1, 2);
        at += 3;
        if (hours < 0)
            Py_RETURN_NONE;
        if (at < len && s[at] == ':')
            at++;
        long minutes = number(s, len, at, 2);
        if (minutes < 0)
            Py_RETURN_NONE;
        at += 2;
        offset = hours * 3600 + minutes * 60; /* fromisoformat checks only the total */
    } else {
        Py_RETURN_NONE;
    }
    struct tail t;
    if (!split_tail(s, len, at, &t))
        Py_RETURN_NONE;
    long long seconds;
    if (!iso_seconds(s, sign, offset, &seconds))
        Py_RETURN_NONE; /* _iso_base is None: the splitter answers None */
    double stamp;
    if (micro < 0) {
        stamp = (double)seconds;
    } else {
        /* (seconds * 10**6 + micro) / 10**6, exactly rounded as Python's int
         * division is: here only while the numerator is an exact double. */
        long long total = seconds * 1000000 + micro;
        if (total > (1LL << 53) || total < -(1LL << 53))
            return undecided();
        stamp = (double)total / 1e6;
    }
    PyObject *items[5] = {
        PyFloat_FromDouble(stamp),
        substring(args[0], t.host, t.host_end),
        substring(args[0], t.prog, t.prog_end),
        pid_object(t.pid),
        substring(args[0], t.end, len),
    };
    return pack((PyTypeObject *)args[1], items, 5);
}

PyDoc_STRVAR(rfc3164_doc,
"rfc3164(line) -> (mon, day, hms, host, program, pid, message) | None | NotImplemented\n\n"
"The parts of a traditional BSD syslog line, as popbsmtp.syslog's _RFC3164\n"
"regex gives them (the stamp still needs the local zone and a year, which\n"
"the caller adds); NotImplemented when the regex must decide.");

static PyObject *
rfc3164(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "rfc3164(line)");
        return NULL;
    }
    const char *s;
    Py_ssize_t len;
    int ascii = ascii_text(args[0], &s, &len);
    if (ascii <= 0)
        return ascii < 0 ? NULL : undecided();
    /* (?P<mon>[A-Z][a-z]{2}) (?P<day>[ 0-9][0-9]) (?P<hms>[0-9]{2}:[0-9]{2}:[0-9]{2}) */
    if (len < 15 || !(s[0] >= 'A' && s[0] <= 'Z') || !(s[1] >= 'a' && s[1] <= 'z')
        || !(s[2] >= 'a' && s[2] <= 'z') || s[3] != ' ' || (s[4] != ' ' && !is_digit(s[4]))
        || !is_digit(s[5]) || s[6] != ' ' || number(s, len, 7, 2) < 0 || s[9] != ':'
        || number(s, len, 10, 2) < 0 || s[12] != ':' || number(s, len, 13, 2) < 0)
        Py_RETURN_NONE;
    /* (?:\.[0-9]{1,6})?  (the host's space must follow) */
    Py_ssize_t at = 15;
    if (at < len && s[at] == '.') {
        Py_ssize_t n = digits(s, len, at + 1);
        if (n < 1 || n > 6)
            Py_RETURN_NONE;
        at += 1 + n;
    }
    struct tail t;
    if (!split_tail(s, len, at, &t))
        Py_RETURN_NONE;
    PyObject *line = args[0];
    PyObject *items[7] = {
        substring(line, 0, 3),
        substring(line, 4, 6),
        substring(line, 7, 15),
        substring(line, t.host, t.host_end),
        substring(line, t.prog, t.prog_end),
        pid_object(t.pid),
        substring(line, t.end, len),
    };
    return pack(&PyTuple_Type, items, 7);
}

static PyMethodDef methods[] = {
    {"rfc3339", (PyCFunction)(void (*)(void))rfc3339, METH_FASTCALL, rfc3339_doc},
    {"rfc3164", (PyCFunction)(void (*)(void))rfc3164, METH_FASTCALL, rfc3164_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "popbsmtp._envelope",
    "Split syslog envelopes: the fast path of popbsmtp.syslog's regexes.", -1, methods,
};

PyMODINIT_FUNC
PyInit__envelope(void)
{
    return PyModule_Create(&module);
}
