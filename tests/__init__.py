"""The test suite.

``SESSION_TIMEOUT``: the consumer session timeout (``OUTLOOP_SESSION_TIMEOUT``, seconds) of the
workers the tests start. Tansu holds a new group's first join for half of it (1 s instead of the
3 s of every worker start at the default 6 s), and a SIGKILLed worker is evicted from its group after it.
``tests/integration/test_up.py`` keeps the default, as a user runs `outloop up`.
"""

SESSION_TIMEOUT = 2.0
