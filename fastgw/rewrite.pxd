# Pure-Python-mode declarations for Cython (fastgw/native.py): a request under a rewrite set runs
# the rules' conditions and templates as C calls on these extension types.

cimport cython

cdef class Request:
    cdef public object ruleset
    cdef public str client_ip
    cdef public object client_port, server_port
    cdef public bint tls
    cdef public bytes method, url
    cdef public object host
    cdef public list headers, lnames
    cdef public object certificate, response
    cdef public tuple edits

    cpdef str get(self, str name)

cdef class Template:
    cdef public tuple parts
    cdef public bint constant

    @cython.locals(out=list, part=object, groups=tuple)
    cpdef str render(self, Request source, dict captures)

cdef class Condition:
    cdef public str variable
    cdef public object regex
    cdef public bint negate

cdef class Rule:
    cdef public str name
    cdef public tuple conditions, request_headers, response_headers
    cdef public Template path, query
    cdef public bint reroute

    @cython.locals(captures=dict, cond=Condition)
    cpdef object captures(self, Request source)

cdef class RuleSet:
    cdef public str name
    cdef public tuple request_rules, response_rules
    cdef public bint needs_certificate

cdef class RequestPlan:
    cdef public tuple headers
    cdef public object url
    cdef public bint reroute

@cython.locals(values=list, i=Py_ssize_t)
cpdef str _joined(list headers, list lnames, bytes lname)
cpdef bytes _bytes(str text)
cpdef bytes _header_value(str text)

@cython.locals(lname=bytes, name=bytes, template=Template)
cpdef _edit(dict edits, tuple table, Request source, dict captures)

@cython.locals(lname=bytes, pair=tuple)
cpdef tuple _edit_list(dict edits)

@cython.locals(edits=dict, rule=Rule, captures=dict, path=object, query=object, reroute=bint)
cpdef RequestPlan rewrite_request(Request source)

@cython.locals(edits=dict, rule=Rule, captures=dict)
cpdef tuple rewrite_response(Request source, list headers, list lnames)

@cython.locals(touched=set, kept=list, new_headers=list, new_lnames=list, i=Py_ssize_t)
cpdef tuple apply_headers(list headers, list lnames, tuple edits)
