"""Applications of other interfaces that the tests serve (test_wsgi.py):
importable as apps.NAME from tests/python, in every worker interpreter too."""
