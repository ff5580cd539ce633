# Pure-Python-mode declarations for Cython (fastgw/native.py): accept() runs once per connection.

cimport cython
from fastgw.stats cimport Stats

cdef class Acceptor

cdef class Driven:
    cdef public object coro, owner

cdef class Accepted:
    cdef public int fd, family, type
    cdef public Acceptor acceptor
    cdef public object client, protocol
    cdef public bint taken

cdef class Acceptor:
    cdef public object loop, sock, family, factory, failed, ssl, name
    cdef public Stats stats
    cdef public bint reading, paused
    cdef public double exhausted_until, warned_at
    cdef public bint closed
    cdef public Py_ssize_t batch
    cdef public double handshake_timeout
    cdef public object gate
    cdef public bint stand_in

    cdef _update(self)
    @cython.locals(batch=Py_ssize_t)
    cpdef _ready(self)
    @cython.locals(accepted=Accepted)
    cpdef connect(self, object conn, object client)
