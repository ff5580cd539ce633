# Pure-Python-mode declarations for Cython (fastgw/native.py): the handshake checks are C
# functions, which dispatch.py and wsproxy.py cimport (a C call each, not a module attribute
# lookup and a Python call per handshake).

from fastgw.http1 cimport RequestHead, ResponseHead, _tokens, dropped

cdef class Offer:
    cdef public bytes key
    cdef public tuple protocols, extensions

cdef class Agreement:
    cdef public object protocol
    cdef public tuple extensions

cpdef bytes accept_key(object key)
cpdef bint is_key(object key)
cpdef Offer validate_request(RequestHead head)
cpdef Agreement check_response(Offer offer, ResponseHead head)
cpdef bytes client_101(ResponseHead head, tuple extra=*)
