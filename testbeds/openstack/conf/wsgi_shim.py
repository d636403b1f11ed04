"""Serve an OpenStack WSGI app from gunicorn.

oslo.config would otherwise parse gunicorn's own command line and fail; the app module comes from
OS_WSGI_MODULE (for example `nova.wsgi.osapi_compute`).
"""

import importlib
import os
import sys

sys.argv = sys.argv[:1]
application = importlib.import_module(os.environ["OS_WSGI_MODULE"]).application
