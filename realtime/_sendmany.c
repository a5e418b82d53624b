/* One frame to many asyncio socket transports, in one call (realtime/sendmany.py says why and when).
 *
 * send_frame(transports, frame) -> list[tuple[int, int]]
 *
 * ``transports`` is a list of asyncio's own selector socket transports (the caller checks their type).
 * For each one whose write buffer is empty and which is not closing (nor lost, which implies closing), ``frame`` is written
 * with send(2) straight to its socket; all the sends happen in one stretch with the GIL released. What
 * comes back names the transports that did not take the whole frame, as (index, bytes sent): 0 when the
 * transport was not written to (a buffer already waiting, closing, lost, or the socket had no room) and
 * -1 when send(2) failed with an error. The caller hands the rest of the frame to those transports'
 * ``write``, which queues it behind what they hold or reports the error, as asyncio would have.
 *
 * Nothing here closes or changes a transport; the event loop's thread is the only one that closes them,
 * and it is the thread running this call, so every descriptor stays open for the call's duration.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>

static PyObject *s_buffer, *s_closing, *s_sock_fd;

/* 1: the transport may be written to directly (its fd in *fd); 0: not; -1: a Python error.
 * A lost connection is closing too (asyncio's _force_close sets _closing before it counts _conn_lost), so
 * _closing covers both; its socket is closed only after that, by the loop, never during this call. */
static int writable_now(PyObject *t, int *fd) {
    PyObject *v;
    int truth;
    v = PyObject_GetAttr(t, s_buffer);
    if (v == NULL) return -1;
    truth = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (truth != 0) return truth < 0 ? -1 : 0;
    v = PyObject_GetAttr(t, s_closing);
    if (v == NULL) return -1;
    truth = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (truth != 0) return truth < 0 ? -1 : 0;
    v = PyObject_GetAttr(t, s_sock_fd);
    if (v == NULL) return -1;
    long n = PyLong_AsLong(v);
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred()) return -1;
    if (n < 0 || n > 0x7fffffff) return 0;
    *fd = (int)n;
    return 1;
}

static int add_rest(PyObject *rest, Py_ssize_t index, Py_ssize_t sent) {
    PyObject *item = Py_BuildValue("(nn)", index, sent);
    if (item == NULL) return -1;
    int r = PyList_Append(rest, item);
    Py_DECREF(item);
    return r;
}

static PyObject *send_frame(PyObject *self, PyObject *args) {
    PyObject *transports;
    Py_buffer frame;
    if (!PyArg_ParseTuple(args, "O!y*", &PyList_Type, &transports, &frame)) return NULL;
    PyObject *rest = PyList_New(0);
    Py_ssize_t n = PyList_GET_SIZE(transports);
    int *fds = NULL;
    Py_ssize_t *sent = NULL;
    if (rest == NULL) goto fail;
    if (n == 0) goto done;
    fds = PyMem_Malloc(sizeof(int) * (size_t)n);
    sent = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)n);
    if (fds == NULL || sent == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    /* The descriptors are copied out first: with the GIL released below, only this array is read. */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i >= PyList_GET_SIZE(transports)) { /* shrunk meanwhile (it cannot, with plain transports) */
            fds[i] = -1;
            continue;
        }
        int ok = writable_now(PyList_GET_ITEM(transports, i), &fds[i]);
        if (ok < 0) goto fail;
        if (!ok) fds[i] = -1;
    }
    const char *buf = frame.buf;
    size_t len = (size_t)frame.len;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (fds[i] < 0) {
            sent[i] = 0;
            continue;
        }
        ssize_t r = send(fds[i], buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) sent[i] = (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
        else sent[i] = (Py_ssize_t)r;
    }
    Py_END_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (sent[i] != (Py_ssize_t)len && add_rest(rest, i, sent[i]) < 0) goto fail;
    }
done:
    PyMem_Free(fds);
    PyMem_Free(sent);
    PyBuffer_Release(&frame);
    return rest;
fail:
    PyMem_Free(fds);
    PyMem_Free(sent);
    PyBuffer_Release(&frame);
    Py_XDECREF(rest);
    return NULL;
}

static PyMethodDef methods[] = {
    {"send_frame", send_frame, METH_VARARGS,
     "send_frame(transports, frame) -> [(index, sent)] of those that did not take all of frame"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "realtime._sendmany", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sendmany(void) {
    s_buffer = PyUnicode_InternFromString("_buffer");
    s_closing = PyUnicode_InternFromString("_closing");
    s_sock_fd = PyUnicode_InternFromString("_sock_fd");
    if (!s_buffer || !s_closing || !s_sock_fd) return NULL;
    return PyModule_Create(&module);
}
