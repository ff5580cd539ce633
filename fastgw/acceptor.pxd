# Pure-Python-mode declarations for Cython (fastgw/native.py): accept() runs once per connection.

cimport cython
from fastgw.stats cimport Stats

cdef class Acceptor:
    cdef public object loop, sock, family, factory, failed, ssl, name
    cdef public Stats stats
    cdef public bint reading, paused
    cdef public double exhausted_until, warned_at
    cdef public bint closed
    cdef public Py_ssize_t batch
    cdef public double handshake_timeout
    cdef public object gate

    cdef _update(self)
    @cython.locals(batch=Py_ssize_t)
    cpdef _ready(self)
    @cython.locals(made=list)
    cpdef connect(self, object conn, object client)
    cpdef _make(self, list made, object client)
    cpdef _failed(self, list made, object client)
