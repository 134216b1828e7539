/* The model's per-event arithmetic in C: compress + the scaler's update and transform, the
 * crosses, and an epoch copy's frozen transform and linear score.
 *
 * Why: these loops over ~31 named features were a third of the core's time in Python
 * (docs/benchmark.md, "The scaler's loops compiled"). They read and write River's own objects
 * (the StandardScaler's `counts` Counter and `means` / `vars` defaultdicts), so River's objects
 * stay the model, the snapshot and the challenger format.
 *
 * Bit for bit: every value is the Python reference's (model.py `_scale_py`, `_add_crosses_py`,
 * `_frozen_py`), because each operation is the one CPython does on floats: IEEE doubles in the
 * same order, log1p and pow from the same libm (Python's `x ** 0.5` is C's pow(x, 0.5)), and
 * no contraction into fused multiply-adds (built with -ffp-contract=off). The dicts change as
 * the Python changes them, key for key and in the same insertion order: a `defaultdict(float)`
 * read inserts 0.0, a Counter read does not. tests/unit/test_compiled_steps.py checks all of it
 * against the reference on generated inputs.
 *
 * Whatever the fast path does not cover goes back to the caller as NotImplemented before any
 * state is touched (a value that is not a float or an int, or an int too large for a double;
 * a mean or variance that is not a float, a count that is not a small int; a negative
 * variance when scoring, whose root Python makes complex), or is computed with Python's own
 * number protocol (a negative variance a learning step makes), so no input behaves
 * differently from the reference.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

static const double CLAMP = 2.0;

/* collections.Counter, collections.defaultdict, float and "default_factory", set at import:
 * the scaler's dicts must be exactly the types whose reads the fast path mimics. */
static PyObject *counter_type, *defaultdict_type, *default_factory_name;

/* A float from a Python float or int, as Python's arithmetic would convert it; -1 and an
 * exception when it is neither (the caller then returns NotImplemented). */
static int
as_double(PyObject *value, double *out)
{
    if (PyFloat_CheckExact(value)) {
        *out = PyFloat_AS_DOUBLE(value);
        return 0;
    }
    if (PyLong_CheckExact(value) || PyBool_Check(value)) {
        double d = PyLong_AsDouble(value);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        *out = d;
        return 0;
    }
    PyErr_SetString(PyExc_TypeError, "not a float or an int");
    return -1;
}

/* Python's `log1p(xi) if xi > 0.0 else 0.0`. */
static inline double
compressed(double xi)
{
    return xi > 0.0 ? log1p(xi) : 0.0;
}

/* d[key] of a defaultdict(float): 0.0, inserted, when missing. */
static int
default_read(PyObject *d, PyObject *key, double *out)
{
    PyObject *value = PyDict_GetItemWithError(d, key);
    if (value == NULL) {
        if (PyErr_Occurred())
            return -1;
        PyObject *zero = PyFloat_FromDouble(0.0);
        if (zero == NULL || PyDict_SetItem(d, key, zero) < 0) {
            Py_XDECREF(zero);
            return -1;
        }
        Py_DECREF(zero);
        *out = 0.0;
        return 0;
    }
    return as_double(value, out);
}

static int
set_double(PyObject *d, PyObject *key, double value)
{
    PyObject *obj = PyFloat_FromDouble(value);
    if (obj == NULL)
        return -1;
    int rc = PyDict_SetItem(d, key, obj);
    Py_DECREF(obj);
    return rc;
}

/* The fast path takes only what it can prove equal: every value a float or an int, every
 * count an int that fits, every name a str. Checked before any state changes. */
static int
plain_inputs(PyObject **names, PyObject **values, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyUnicode_CheckExact(names[i]))
            return 0;
        PyObject *v = values[i];
        if (PyFloat_CheckExact(v))
            continue;
        if (!PyLong_CheckExact(v) && !PyBool_Check(v))
            return 0;
        /* An int too large for a double: Python raises part-way through; leave it to Python. */
        if (PyLong_AsDouble(v) == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

/* `d` is a defaultdict(float), exactly: its missing reads are 0.0, inserted. */
static int
is_float_defaultdict(PyObject *d)
{
    if ((PyObject *)Py_TYPE(d) != defaultdict_type)
        return 0;
    PyObject *factory = PyObject_GetAttr(d, default_factory_name);
    if (factory == NULL) {
        PyErr_Clear();
        return 0;
    }
    int ok = factory == (PyObject *)&PyFloat_Type;
    Py_DECREF(factory);
    return ok;
}

/* 1 when `name`'s mean and variance, where present, are floats (and, `scoring`, the variance
 * is not negative: Python roots it as a complex); 0 when not; -1 and an exception on error. */
static int
plain_state(PyObject *means, PyObject *vars, PyObject *name, int scoring)
{
    PyObject *m = PyDict_GetItemWithError(means, name);
    if (m == NULL && PyErr_Occurred())
        return -1;
    if (m != NULL && !PyFloat_CheckExact(m))
        return 0;
    PyObject *v = PyDict_GetItemWithError(vars, name);
    if (v == NULL && PyErr_Occurred())
        return -1;
    if (v != NULL && !PyFloat_CheckExact(v))
        return 0;
    return !(scoring && v != NULL && PyFloat_AS_DOUBLE(v) < 0.0);
}

static PyObject *
fast_sequence(PyObject *obj, const char *what)
{
    return PySequence_Fast(obj, what);
}

/* scale(counts, means, vars, names, values, heavy, learn) -> dict | NotImplemented
 *
 * model.py `_scale_py` without the crosses: compress the heavy features, then (learn) the
 * scaler's update, then its transform. NotImplemented (nothing changed) when an input is
 * outside the fast path; the caller then runs the Python. */
static PyObject *
scale(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "scale takes 7 arguments");
        return NULL;
    }
    PyObject *counts = args[0], *means = args[1], *vars = args[2];
    int learn = PyObject_IsTrue(args[6]);
    if (learn < 0)
        return NULL;
    if ((PyObject *)Py_TYPE(counts) != counter_type || !is_float_defaultdict(means)
            || !is_float_defaultdict(vars))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *names_seq = fast_sequence(args[3], "names must be a sequence");
    if (names_seq == NULL)
        return NULL;
    PyObject *values_seq = fast_sequence(args[4], "values must be iterable");
    if (values_seq == NULL) {
        Py_DECREF(names_seq);
        return NULL;
    }
    PyObject *heavy_seq = fast_sequence(args[5], "heavy must be a sequence");
    if (heavy_seq == NULL) {
        Py_DECREF(names_seq);
        Py_DECREF(values_seq);
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(names_seq);
    /* zip() stops at the shortest; so do we. */
    if (PySequence_Fast_GET_SIZE(values_seq) < n)
        n = PySequence_Fast_GET_SIZE(values_seq);
    if (PySequence_Fast_GET_SIZE(heavy_seq) < n)
        n = PySequence_Fast_GET_SIZE(heavy_seq);
    PyObject **names = PySequence_Fast_ITEMS(names_seq);
    PyObject **values = PySequence_Fast_ITEMS(values_seq);
    PyObject **heavy = PySequence_Fast_ITEMS(heavy_seq);
    if (!plain_inputs(names, values, n))
        goto not_implemented;
    if (learn) {
        /* The state checked up front too: a count that is not an int below 2**52, or a
         * mean or variance that is not a float (an int one, which only an odd snapshot
         * holds, makes Python subtract ints exactly), leaves the whole step to Python. */
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *c = PyDict_GetItemWithError(counts, names[i]);
            if (c == NULL) {
                if (PyErr_Occurred())
                    goto error;
            }
            else if (!PyLong_CheckExact(c)) {
                goto not_implemented;
            }
            else {
                int overflow = 0;
                long long value = PyLong_AsLongLongAndOverflow(c, &overflow);
                if (overflow || value >= (1LL << 52) || value < 0) {
                    if (PyErr_Occurred())
                        goto error;
                    goto not_implemented;
                }
            }
            int plain = plain_state(means, vars, names[i], 0);
            if (plain < 0)
                goto error;
            if (!plain)
                goto not_implemented;
        }
    }
    else {
        for (Py_ssize_t i = 0; i < n; i++) {
            int plain = plain_state(means, vars, names[i], 1);
            if (plain < 0)
                goto error;
            if (!plain)
                goto not_implemented;
        }
    }
    out = PyDict_New();
    if (out == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = names[i];
        double xi;
        if (as_double(values[i], &xi) < 0)
            goto error;
        int is_heavy = PyObject_IsTrue(heavy[i]);
        if (is_heavy < 0)
            goto error;
        if (is_heavy)
            xi = compressed(xi);
        double mean, var, scaled;
        if (learn) {
            long long count = 1;
            PyObject *c = PyDict_GetItemWithError(counts, name);
            if (c != NULL)
                count = PyLong_AsLongLong(c) + 1;
            else if (PyErr_Occurred())
                goto error;
            PyObject *count_obj = PyLong_FromLongLong(count);
            if (count_obj == NULL)
                goto error;
            int rc = PyDict_SetItem(counts, name, count_obj);
            Py_DECREF(count_obj);
            if (rc < 0)
                goto error;
            double old_mean;
            if (default_read(means, name, &old_mean) < 0)
                goto error;
            double diff = xi - old_mean;
            mean = old_mean + diff / (double)count;
            if (set_double(means, name, mean) < 0)
                goto error;
            if (default_read(vars, name, &var) < 0)
                goto error;
            var += (diff * (xi - mean) - var) / (double)count;
            if (set_double(vars, name, var) < 0)
                goto error;
            if (var < 0.0) {
                /* Python's root of a negative float is complex: let Python divide. */
                PyObject *var_obj = PyFloat_FromDouble(var);
                PyObject *half = PyFloat_FromDouble(0.5);
                PyObject *root = (var_obj && half) ? PyNumber_Power(var_obj, half, Py_None)
                                                   : NULL;
                PyObject *num = PyFloat_FromDouble(xi - mean);
                PyObject *q = (root && num) ? PyNumber_TrueDivide(num, root) : NULL;
                Py_XDECREF(var_obj);
                Py_XDECREF(half);
                Py_XDECREF(root);
                Py_XDECREF(num);
                if (q == NULL)
                    goto error;
                rc = PyDict_SetItem(out, name, q);
                Py_DECREF(q);
                if (rc < 0)
                    goto error;
                continue;
            }
            scaled = var != 0.0 ? (xi - mean) / pow(var, 0.5) : 0.0;
        }
        else {
            if (default_read(vars, name, &var) < 0)
                goto error;
            if (var != 0.0) {
                if (default_read(means, name, &mean) < 0)
                    goto error;
                scaled = (xi - mean) / pow(var, 0.5);
            }
            else {
                scaled = 0.0;
            }
        }
        if (set_double(out, name, scaled) < 0)
            goto error;
    }
    Py_DECREF(names_seq);
    Py_DECREF(values_seq);
    Py_DECREF(heavy_seq);
    return out;

not_implemented:
    Py_DECREF(names_seq);
    Py_DECREF(values_seq);
    Py_DECREF(heavy_seq);
    Py_RETURN_NOTIMPLEMENTED;

error:
    Py_XDECREF(out);
    Py_DECREF(names_seq);
    Py_DECREF(values_seq);
    Py_DECREF(heavy_seq);
    return NULL;
}

/* Python's `c if z > c else -c if z < -c else z` (NaN stays NaN). */
static inline double
clamped(double z)
{
    return z > CLAMP ? CLAMP : z < -CLAMP ? -CLAMP : z;
}

/* add_crosses(out, plan) -> None | NotImplemented
 *
 * model.py `_add_crosses_py`: out[name] = clamp(out[a]) * clamp(out[b]) for each planned
 * (a, b, name), in order (a later cross may read an earlier one's result, as in Python).
 * NotImplemented, before any change, when an input is not a float. */
static PyObject *
add_crosses(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add_crosses takes 2 arguments");
        return NULL;
    }
    PyObject *out = args[0];
    if (!PyDict_CheckExact(out) || !PyTuple_CheckExact(args[1]))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *plan = args[1];
    Py_ssize_t n = PyTuple_GET_SIZE(plan);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *step = PyTuple_GET_ITEM(plan, i);
        if (!PyTuple_CheckExact(step) || PyTuple_GET_SIZE(step) != 3)
            Py_RETURN_NOTIMPLEMENTED;
        for (int k = 0; k < 2; k++) {
            PyObject *z = PyDict_GetItemWithError(out, PyTuple_GET_ITEM(step, k));
            if (z == NULL) {
                if (PyErr_Occurred())
                    return NULL;
                /* Missing now; perhaps made by an earlier cross of this plan. Python decides. */
                Py_RETURN_NOTIMPLEMENTED;
            }
            if (!PyFloat_CheckExact(z))
                Py_RETURN_NOTIMPLEMENTED;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *step = PyTuple_GET_ITEM(plan, i);
        PyObject *za = PyDict_GetItemWithError(out, PyTuple_GET_ITEM(step, 0));
        PyObject *zb = za ? PyDict_GetItemWithError(out, PyTuple_GET_ITEM(step, 1)) : NULL;
        if (za == NULL || zb == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, PyTuple_GET_ITEM(step, za ? 1 : 0));
            return NULL;
        }
        if (!PyFloat_CheckExact(za) || !PyFloat_CheckExact(zb)) {
            PyErr_SetString(PyExc_TypeError, "a cross of a value that is not a float");
            return NULL;
        }
        double product = clamped(PyFloat_AS_DOUBLE(za)) * clamped(PyFloat_AS_DOUBLE(zb));
        if (set_double(out, PyTuple_GET_ITEM(step, 2), product) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* frozen(names, values, heavy, means, stds) -> dict | NotImplemented
 *
 * model.py `_frozen_py`, an epoch copy's transform from the means and roots read once:
 * out[name] = (compressed xi - mean) / std, or 0.0 where std is 0. */
static PyObject *
frozen(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "frozen takes 5 arguments");
        return NULL;
    }
    if (!PyTuple_CheckExact(args[0]) || !PyTuple_CheckExact(args[2])
            || !PyList_CheckExact(args[3]) || !PyList_CheckExact(args[4]))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *values_seq = fast_sequence(args[1], "values must be iterable");
    if (values_seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(args[0]);
    if (PySequence_Fast_GET_SIZE(values_seq) < n)
        n = PySequence_Fast_GET_SIZE(values_seq);
    if (PyTuple_GET_SIZE(args[2]) < n)
        n = PyTuple_GET_SIZE(args[2]);
    if (PyList_GET_SIZE(args[3]) < n)
        n = PyList_GET_SIZE(args[3]);
    if (PyList_GET_SIZE(args[4]) < n)
        n = PyList_GET_SIZE(args[4]);
    PyObject **names = &PyTuple_GET_ITEM(args[0], 0);
    PyObject **values = PySequence_Fast_ITEMS(values_seq);
    PyObject *out = NULL;
    if (!plain_inputs(names, values, n))
        goto not_implemented;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyFloat_CheckExact(PyList_GET_ITEM(args[3], i))
                || !PyFloat_CheckExact(PyList_GET_ITEM(args[4], i)))
            goto not_implemented;
    }
    out = PyDict_New();
    if (out == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        double xi;
        if (as_double(values[i], &xi) < 0)
            goto error;
        int is_heavy = PyObject_IsTrue(PyTuple_GET_ITEM(args[2], i));
        if (is_heavy < 0)
            goto error;
        if (is_heavy)
            xi = compressed(xi);
        double mean = PyFloat_AS_DOUBLE(PyList_GET_ITEM(args[3], i));
        double std = PyFloat_AS_DOUBLE(PyList_GET_ITEM(args[4], i));
        if (set_double(out, names[i], std != 0.0 ? (xi - mean) / std : 0.0) < 0)
            goto error;
    }
    Py_DECREF(values_seq);
    return out;

not_implemented:
    Py_DECREF(values_seq);
    Py_RETURN_NOTIMPLEMENTED;

error:
    Py_XDECREF(out);
    Py_DECREF(values_seq);
    return NULL;
}

/* frozen_dot(features, heavy, means, stds, weights, crosses, cross_weights) -> float
 *                                                                    | NotImplemented
 *
 * An epoch copy's whole linear score: `_frozen_py`'s scaled inputs, `_add_crosses_py`'s
 * products of them, and River's `VectorDict.dot` of the weights with that dict, without
 * building the dict. River's dot walks the dict it is given in order and adds each
 * weight x value to a sum that starts at 0.0 (tests/unit/test_compiled_steps.py checks it
 * against River), so this adds the scaled inputs' terms in the features' order, then the
 * crosses' in the plan's order. `crosses` holds (i, j) positions of the two scaled inputs.
 * NotImplemented, before anything is read past the check, when an input is not a float or
 * the shapes disagree. */
static PyObject *
frozen_dot(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "frozen_dot takes 7 arguments");
        return NULL;
    }
    PyObject *features = args[0], *heavy = args[1], *means = args[2], *stds = args[3];
    PyObject *weights = args[4], *crosses = args[5], *cross_weights = args[6];
    if (!PyDict_CheckExact(features) || !PyTuple_CheckExact(heavy) || !PyList_CheckExact(means)
            || !PyList_CheckExact(stds) || !PyList_CheckExact(weights)
            || !PyTuple_CheckExact(crosses) || !PyList_CheckExact(cross_weights))
        Py_RETURN_NOTIMPLEMENTED;
    Py_ssize_t n = PyDict_GET_SIZE(features);
    Py_ssize_t m = PyTuple_GET_SIZE(crosses);
    if (PyTuple_GET_SIZE(heavy) != n || PyList_GET_SIZE(means) != n
            || PyList_GET_SIZE(stds) != n || PyList_GET_SIZE(weights) != n
            || PyList_GET_SIZE(cross_weights) != m)
        Py_RETURN_NOTIMPLEMENTED;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyFloat_CheckExact(PyList_GET_ITEM(means, i))
                || !PyFloat_CheckExact(PyList_GET_ITEM(stds, i))
                || !PyFloat_CheckExact(PyList_GET_ITEM(weights, i))
                || !PyBool_Check(PyTuple_GET_ITEM(heavy, i)))
            Py_RETURN_NOTIMPLEMENTED;
    }
    for (Py_ssize_t k = 0; k < m; k++) {
        PyObject *pair = PyTuple_GET_ITEM(crosses, k);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2
                || !PyLong_CheckExact(PyTuple_GET_ITEM(pair, 0))
                || !PyLong_CheckExact(PyTuple_GET_ITEM(pair, 1))
                || !PyFloat_CheckExact(PyList_GET_ITEM(cross_weights, k)))
            Py_RETURN_NOTIMPLEMENTED;
        Py_ssize_t a = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
        Py_ssize_t b = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 1));
        if (a < 0 || b < 0 || a >= n || b >= n) {
            PyErr_Clear();
            Py_RETURN_NOTIMPLEMENTED;
        }
    }
    double stack[128];
    double *z = n <= 128 ? stack : PyMem_Malloc((size_t)n * sizeof(double));
    if (z == NULL)
        return PyErr_NoMemory();
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(features, &pos, &key, &value)) {
        double xi;
        if (as_double(value, &xi) < 0) {  /* not a number, or an int past a double */
            PyErr_Clear();
            goto not_implemented;
        }
        if (PyTuple_GET_ITEM(heavy, i) == Py_True)
            xi = compressed(xi);
        double std = PyFloat_AS_DOUBLE(PyList_GET_ITEM(stds, i));
        z[i] = std != 0.0 ? (xi - PyFloat_AS_DOUBLE(PyList_GET_ITEM(means, i))) / std : 0.0;
        i++;
    }
    double dot = 0.0;
    for (i = 0; i < n; i++)
        dot += PyFloat_AS_DOUBLE(PyList_GET_ITEM(weights, i)) * z[i];
    for (Py_ssize_t k = 0; k < m; k++) {
        PyObject *pair = PyTuple_GET_ITEM(crosses, k);
        double product = clamped(z[PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0))])
                         * clamped(z[PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 1))]);
        dot += PyFloat_AS_DOUBLE(PyList_GET_ITEM(cross_weights, k)) * product;
    }
    if (z != stack)
        PyMem_Free(z);
    return PyFloat_FromDouble(dot);

not_implemented:
    if (z != stack)
        PyMem_Free(z);
    Py_RETURN_NOTIMPLEMENTED;
}

static PyMethodDef methods[] = {
    {"scale", (PyCFunction)(void (*)(void))scale, METH_FASTCALL,
     "scale(counts, means, vars, names, values, heavy, learn) -> dict | NotImplemented\n\n"
     "model.py `_scale_py` without the crosses, bit for bit."},
    {"add_crosses", (PyCFunction)(void (*)(void))add_crosses, METH_FASTCALL,
     "add_crosses(out, plan) -> None | NotImplemented\n\n"
     "model.py `_add_crosses_py`, bit for bit."},
    {"frozen", (PyCFunction)(void (*)(void))frozen, METH_FASTCALL,
     "frozen(names, values, heavy, means, stds) -> dict | NotImplemented\n\n"
     "model.py `_frozen_py`, bit for bit."},
    {"frozen_dot", (PyCFunction)(void (*)(void))frozen_dot, METH_FASTCALL,
     "frozen_dot(features, heavy, means, stds, weights, crosses, cross_weights) -> float | "
     "NotImplemented\n\n"
     "An epoch copy's linear score: `_frozen_py`, the crosses and River's dot, bit for bit."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_steps",
    "The model's per-event arithmetic, compiled: bit for bit the Python in model.py.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__steps(void)
{
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL)
        return NULL;
    counter_type = PyObject_GetAttrString(collections, "Counter");
    defaultdict_type = PyObject_GetAttrString(collections, "defaultdict");
    Py_DECREF(collections);
    default_factory_name = PyUnicode_InternFromString("default_factory");
    if (counter_type == NULL || defaultdict_type == NULL || default_factory_name == NULL)
        return NULL;
    return PyModule_Create(&module);
}
