# Pure-Python-mode declarations for Cython (fastgw/native.py).

cimport cython

@cython.locals(n=Py_ssize_t, i=Py_ssize_t)
cpdef object pick(list endpoints, bint least_connections, Py_ssize_t start, tuple exclude=*,
                  object preferred=*)
