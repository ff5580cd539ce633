# Pure-Python-mode declarations for Cython (fastgw/native.py).

cimport cython
from fastgw.backends cimport Backend, Endpoint

@cython.locals(endpoints=list, n=Py_ssize_t, i=Py_ssize_t, start=Py_ssize_t, ep=Endpoint,
               best=Endpoint)
cpdef Endpoint pick(Backend backend, tuple exclude=*, Endpoint preferred=*)
