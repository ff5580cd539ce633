# Pure-Python-mode declarations for Cython (fastgw/native.py). Gateway's fields are typed so
# that its per-request methods reach the router, backends and counters without dict lookups;
# `__dict__` keeps it open to attributes set from outside, as a Python class is.

cdef class Gateway:
    cdef public object loop, config, router, admin_server, presockets, health, sweeper
    cdef public object stopped, tls, stats, metrics, access_log, firewall_log
    cdef public dict backends, draining, servers, wafs, labels_memo
    cdef public set connections, sessions
    cdef public bint stopping
    cdef dict __dict__
    cdef object __weakref__
