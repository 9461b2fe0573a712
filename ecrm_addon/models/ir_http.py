import threading
import time
from collections import OrderedDict, deque

import psycopg2
import werkzeug.exceptions
import werkzeug.http
from werkzeug.datastructures import WWWAuthenticate

from odoo import models
from odoo.exceptions import AccessDenied, AccessError, UserError
from odoo.http import SessionExpiredException, request

API_PATH_PREFIX = "/ecrm/api/"
AUTH_HINT = "missing or invalid API key: send the header 'Authorization: Bearer <API key>'"


class AuthFailures:
    """Failed authentications per (database, remote address), in memory, bounded.

    Like Odoo's login cooldown (``registry._login_failures``) it lives in the process:
    with N workers an address gets at most N times the limit before all of them answer
    429. At most ``max_addresses`` addresses are tracked (the oldest are forgotten) and at
    most ``limit`` failures per address, so memory stays bounded under a flood.
    """

    def __init__(self, max_addresses=10_000):
        self.max_addresses = max_addresses
        self._lock = threading.Lock()
        self._failures = OrderedDict()

    def retry_after(self, key, limit, window, now=None):
        """Seconds until ``key`` may try again (0 when it is not blocked)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.get(key)
            if not failures or len(failures) < limit:
                return 0
            wait = failures[-limit] + window - now
            return max(0, wait)

    def add(self, key, limit, now=None):
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.pop(key, None)
            if failures is None or failures.maxlen != limit:
                failures = deque(failures or (), maxlen=limit)
            failures.append(now)
            self._failures[key] = failures
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)

    def clear(self):
        with self._lock:
            self._failures.clear()


auth_failures = AuthFailures()


class TooManyRequests(werkzeug.exceptions.TooManyRequests):
    def __init__(self, retry_after):
        super().__init__(
            f"too many failed authentications from this address: try again in {retry_after} s",
            retry_after=retry_after,
        )


def is_api_request():
    return bool(request) and request.httprequest.path.startswith(API_PATH_PREFIX)


def api_error_response(status, message, headers=None):
    """The JSON body of every error of the ingestion API."""
    phrase = werkzeug.http.HTTP_STATUS_CODES.get(status, "Error")
    return request.make_json_response(
        {"status": status, "error": phrase, "message": message}, headers=headers, status=status
    )


class IrHttp(models.AbstractModel):
    _inherit = "ir.http"

    @classmethod
    def _authenticate(cls, endpoint):
        """Bearer authentication of the API, with 429 after repeated failures.

        Odoo's ``auth='bearer'`` does the check (API key of scope 'rpc', expiry, active
        user); every way it can fail becomes a 401 and counts against the address.
        """
        if not is_api_request() or endpoint.routing.get("auth") != "bearer":
            return super()._authenticate(endpoint)
        Ingest = request.env["ecrm.api.ingest"]
        limit = Ingest._get_api_param("api_auth_max_failures")
        window = Ingest._get_api_param("api_auth_window_seconds")
        key = (request.db, request.httprequest.remote_addr)
        retry_after = auth_failures.retry_after(key, limit, window)
        if retry_after:
            raise TooManyRequests(int(retry_after) + 1)
        try:
            super()._authenticate(endpoint)
        except (AccessDenied, SessionExpiredException, werkzeug.exceptions.Unauthorized):
            auth_failures.add(key, limit)
            raise werkzeug.exceptions.Unauthorized(
                AUTH_HINT, www_authenticate=WWWAuthenticate("bearer")
            ) from None

    @classmethod
    def _handle_error(cls, exception):
        """Every error under /ecrm/api/ is JSON with a message, never HTML nor a traceback."""
        if not is_api_request():
            return super()._handle_error(exception)
        headers = None
        if isinstance(exception, werkzeug.exceptions.HTTPException) and exception.code:
            status, message = exception.code, exception.description
            headers = [
                (name, value)
                for name, value in exception.get_headers()
                if name.lower() in ("www-authenticate", "retry-after", "allow")
            ]
        elif isinstance(exception, (AccessDenied, AccessError)):
            status, message = 403, "access denied"
        elif isinstance(exception, psycopg2.OperationalError):
            # serialization failures that outlived Odoo's retries: nothing was written
            status, message = 503, "the database is busy: nothing was written, send it again"
            headers = [("Retry-After", "5")]
        elif isinstance(exception, UserError):
            status, message = 400, str(exception)
        else:
            status, message = 500, "internal error: nothing was written"
        return api_error_response(status, message, headers)
