"""Autobahn TestSuite harness for fastgw (see README.md).

Named ``autobahn_suite`` rather than ``autobahn`` so that it can never shadow,
or be shadowed by, the real ``autobahn`` package (pytest puts ``tests/`` on
sys.path; the 3.x test environment may well get ``autobahn`` one day).
"""
