# Pure-Python-mode declarations for Cython (fastgw/native.py).

cimport cython

cdef class _PathMatcher:
    cdef public tuple patterns
    cdef public object default

cdef class _Site:
    cdef public object listener
    cdef public tuple rules

cdef class _Socket:
    cdef public dict exact
    cdef public tuple wildcards
    cdef public _Site basic

cdef class Router:
    cdef public object config
    cdef public dict sockets, _sites

    @cython.locals(key=tuple, sock=_Socket)
    cpdef _Site _site(self, tuple socket_key, object host)

    @cython.locals(site=_Site, matcher=_PathMatcher, pattern=str, is_prefix=bint)
    cpdef match(self, tuple socket_key, object host, str path)
