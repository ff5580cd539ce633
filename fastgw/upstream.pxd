# Pure-Python-mode declarations for Cython (fastgw/native.py): the classes below become
# extension types with these fields when setup.py compiles the .py beside this file.

cdef class UpstreamConnection:
    cdef public object endpoint, transport, exchange
    cdef public bint closed
    cdef public Py_ssize_t uses
    cdef public double idle_since
    cdef public bint paused
    cdef object __weakref__
