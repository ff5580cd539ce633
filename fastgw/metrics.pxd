# Pure-Python-mode declarations for Cython (fastgw/native.py).

cdef class Histo:
    cdef public object bounds
    cdef public list counts
    cdef public double sum
