# Pure-Python-mode declarations for Cython (fastgw/native.py): when setup.py compiles http1.py,
# the heads become extension types with these fields and the functions below C functions with
# typed locals. The .py beside this file is unchanged by it (and is the pure-Python twin).

cimport cython

cdef class RequestHead:
    cdef public bytes method, url
    cdef public str version
    cdef public list headers, lnames
    cdef public dict fields
    cdef public object host, content_length
    cdef public bint chunked, keep_alive, expect_continue
    cdef public object upgrade
    cdef public frozenset connection_tokens
    cdef public bytes original_url
    cdef public object request_id
    cdef public double t0
    cdef public Py_ssize_t size

    cpdef header(self, bytes name)
    cpdef bint upgrade_requested(self)
    cpdef bint leaves_http(self)

cdef class ResponseHead:
    cdef public int status
    cdef public bytes reason
    cdef public str version
    cdef public list headers, lnames
    cdef public dict fields
    cdef public object content_length
    cdef public bint chunked, keep_alive
    cdef public frozenset connection_tokens

    cpdef header(self, bytes name)

@cython.locals(lnames=list, fields=dict, name=bytes, value=bytes, lname=bytes, values=list,
               lower=dict)
cpdef tuple _index(list headers, frozenset wanted)

@cython.locals(tokens=frozenset, value=bytes, cache=dict)
cpdef frozenset _tokens(object values)

@cython.locals(tokens=set, value=bytes, token=bytes)
cpdef frozenset _split_tokens(list values)

@cython.locals(value=bytes)
cpdef tuple request_framing(object content_lengths, object transfer_encodings, str version)

@cython.locals(fields=dict, hosts=list, url=bytes, tokens=frozenset, connection=list)
cpdef analyse_request(RequestHead head)

@cython.locals(drops=dict, key=tuple, drop=frozenset)
cpdef frozenset dropped(frozenset fixed, frozenset tokens)

@cython.locals(drop=frozenset, out=list, name=bytes, value=bytes, lname=bytes, xff=list, ip=bytes,
               i=Py_ssize_t, n=Py_ssize_t, headers=list, lnames=list, pair=tuple)
cpdef bytes forward_request_head(RequestHead head, bytes host, str client_ip, bytes proto,
                                 bytes port, bint upgrade=*, tuple extra=*)

@cython.locals(fields=dict, lengths=list, encodings=list, v=bytes, tokens=frozenset,
               connection=list)
cpdef analyse_response(ResponseHead head)

cpdef bytes response_framing(bytes method, int status, object content_length,
                             str client_version)

@cython.locals(drop=frozenset, out=list, name=bytes, value=bytes, lname=bytes, status_line=bytes,
               i=Py_ssize_t, n=Py_ssize_t, headers=list, lnames=list, pair=tuple)
cpdef bytes client_response_head(ResponseHead head, bytes framing, bint keep_alive,
                                 str client_version, tuple extra=*)

cpdef Py_ssize_t status_class_index(int status)
