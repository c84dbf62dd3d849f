"""Services metalab provisions: what each one is, independent of where it runs.

The defaults live here, apart from the modules that start services, so that code which
only checks on running services (``status``, a warm ``up``) need not import those.
"""

DEFAULT_DATABASE = "metalab"
DEFAULT_USER = "metalab"
DEFAULT_AUTH_METHOD = "scram-sha-256"
DEFAULT_ATLAS_PORT = 8000
LOOPBACK = "127.0.0.1"
