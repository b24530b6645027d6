/*
 * _run.c — tether.device._run: the one-input, one-output call of Engine.run in one step of
 * C (copy the input into the session's arena, invoke, copy the output out), for models so
 * small that the Python around a ctypes call costs as much as the model.
 *
 * Knows nothing of the engine's headers: Engine passes the address of tether_session_invoke
 * (from its ctypes handle), the session and the two arena addresses. The invoke runs without
 * the GIL, as a ctypes call does. Engine holds its own lock around the call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef int (*invoke_fn)(void* session);

/* run(invoke, session, in_addr, x, out_addr, y) -> status: copies buffer x (C-contiguous,
 * exactly the input's bytes) to in_addr, invokes, then fills writable buffer y from out_addr
 * (its size is the output's bytes). */
static PyObject* run(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (nargs != 6) {
    PyErr_SetString(PyExc_TypeError, "run() takes 6 arguments");
    return NULL;
  }
  void* fn = PyLong_AsVoidPtr(args[0]);
  void* session = PyLong_AsVoidPtr(args[1]);
  void* in = PyLong_AsVoidPtr(args[2]);
  void* out = PyLong_AsVoidPtr(args[4]);
  if (PyErr_Occurred()) return NULL;
  if (fn == NULL || session == NULL || in == NULL || out == NULL) {
    PyErr_SetString(PyExc_ValueError, "run(): a NULL address");
    return NULL;
  }
  Py_buffer x, y;
  if (PyObject_GetBuffer(args[3], &x, PyBUF_C_CONTIGUOUS) != 0) return NULL;
  if (PyObject_GetBuffer(args[5], &y, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) != 0) {
    PyBuffer_Release(&x);
    return NULL;
  }
  memcpy(in, x.buf, (size_t)x.len);
  int status;
  Py_BEGIN_ALLOW_THREADS
  status = ((invoke_fn)fn)(session);
  Py_END_ALLOW_THREADS
  if (status == 0) memcpy(y.buf, out, (size_t)y.len);
  PyBuffer_Release(&x);
  PyBuffer_Release(&y);
  return PyLong_FromLong(status);
}

static PyMethodDef kMethods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "run(invoke, session, in_addr, x, out_addr, y) -> status"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kModule = {
    PyModuleDef_HEAD_INIT, "_run", "Engine.run's one-step C call.", -1, kMethods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__run(void) { return PyModule_Create(&kModule); }
