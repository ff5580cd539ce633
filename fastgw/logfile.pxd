# Pure-Python-mode declarations for Cython (fastgw/native.py): write() runs once per request.

from fastgw.stats cimport Stats

cdef class LogFile:
    cdef public str destination, name
    cdef public object loop
    cdef public Stats stats
    cdef public bint text
    cdef public int fd
    cdef public list lines
    cdef public Py_ssize_t size
    cdef public object timer
    cdef public bint failing
    cdef public Py_ssize_t dropped

    cpdef write(self, bytes line)
    cpdef flush(self)
