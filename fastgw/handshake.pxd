# Pure-Python-mode declarations for Cython (fastgw/native.py).

cdef class Offer:
    cdef public bytes key
    cdef public tuple protocols, extensions

cdef class Agreement:
    cdef public object protocol
    cdef public tuple extensions
