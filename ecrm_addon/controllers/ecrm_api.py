import json

from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    LengthRequired,
    MethodNotAllowed,
    RequestEntityTooLarge,
)

from odoo import http
from odoo.http import request
from odoo.tools.misc import file_open

from ..tools.ingest_validation import ForbiddenCompany, safe_text

# Bytes allowed per event in a request body (the body limit follows the event limit).
BYTES_PER_EVENT = 16 * 1024
MIN_BODY_BYTES = 1024 * 1024
STATUSES = ("created", "merged", "duplicate", "parked", "error")


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _max_content_length(_controller):
    max_events = request.env["ecrm.api.ingest"]._get_api_param("api_max_events")
    return max(MIN_BODY_BYTES, max_events * BYTES_PER_EVENT)


class EcrmApi(http.Controller):
    @http.route(
        "/ecrm/api/v1/interactions",
        type="http",
        auth="bearer",
        csrf=False,
        save_session=False,
        max_content_length=_max_content_length,
    )
    def ecrm_api_interactions(self, **_params):
        """Push a batch of interactions (see static/api/openapi.json).

        Every error is raised as an HTTP exception: the request's transaction is rolled
        back and ``ir.http._handle_error`` answers JSON.
        """
        if request.httprequest.method != "POST":
            raise MethodNotAllowed(["POST"], "use POST")
        user = request.env.user
        if not (
            user.has_group("ecrm_addon.group_ecrm_ingest")
            or user.has_group("ecrm_addon.group_ecrm_manager")
        ):
            raise Forbidden("this API key's user is not in the e-CRM API ingestion group")
        events = self._read_events()
        Ingest = request.env["ecrm.api.ingest"]
        max_events = Ingest._get_api_param("api_max_events")
        if len(events) > max_events:
            raise RequestEntityTooLarge(
                f"{len(events)} events in one request; send at most {max_events}"
            )
        try:
            # sudo: the key's user is only in the ingestion group; _ingest takes each
            # event's company from this user's companies (never from the payload alone)
            # and writes the batch with SQL.
            results = Ingest.sudo()._ingest(events, user.company_ids, user.company_id)
        except ForbiddenCompany as exc:
            raise Forbidden(str(exc)) from None
        counts = dict.fromkeys(STATUSES, 0)
        for result in results:
            counts[result["status"]] += 1
        return request.make_json_response({"results": results, **counts})

    @http.route(
        "/ecrm/api/v1/consents",
        type="http",
        auth="bearer",
        csrf=False,
        save_session=False,
        max_content_length=_max_content_length,
    )
    def ecrm_api_consents(self, **_params):
        """Push consent events (a web form, a shop front): same keys, batches, errors and
        idempotency as interactions; each event is recorded in the consent history."""
        if request.httprequest.method != "POST":
            raise MethodNotAllowed(["POST"], "use POST")
        user = request.env.user
        if not (
            user.has_group("ecrm_addon.group_ecrm_ingest")
            or user.has_group("ecrm_addon.group_ecrm_manager")
        ):
            raise Forbidden("this API key's user is not in the e-CRM API ingestion group")
        events = self._read_events()
        Ingest = request.env["ecrm.api.ingest"]
        max_events = Ingest._get_api_param("api_max_events")
        if len(events) > max_events:
            raise RequestEntityTooLarge(
                f"{len(events)} events in one request; send at most {max_events}"
            )
        try:
            # sudo: as for interactions, the company comes from the key user's companies
            results = Ingest.sudo()._ingest_consents(events, user.company_ids, user.company_id)
        except ForbiddenCompany as exc:
            raise Forbidden(str(exc)) from None
        counts = dict.fromkeys(("created", "duplicate", "error"), 0)
        for result in results:
            counts[result["status"]] += 1
        return request.make_json_response({"results": results, **counts})

    @staticmethod
    def _read_events():
        httprequest = request.httprequest
        limit = httprequest.max_content_length
        if httprequest.content_length is None:
            # the body is read only when its announced size is within the limit
            raise LengthRequired("send the body with a Content-Length header")
        if limit is not None and httprequest.content_length > limit:
            raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
        data = httprequest.get_data()
        try:
            # json.loads rather than request.get_json_data(): refuse NaN and Infinity,
            # and undecodable bytes, instead of storing them
            body = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            message = "the body is not valid JSON"
            if isinstance(exc, json.JSONDecodeError):
                message += f" (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            raise BadRequest(message) from None
        if not isinstance(body, dict):
            raise BadRequest('the body must be a JSON object: {"events": [...]}')
        unknown = [name for name in body if name != "events"]
        if unknown:
            raise BadRequest(f"unknown field {safe_text(unknown[0])!r} in the body")
        events = body.get("events")
        if not isinstance(events, list):
            raise BadRequest("the body needs 'events', a list of events")
        return events

    @http.route("/ecrm/api/v1/openapi.json", type="http", auth="none", save_session=False)
    def ecrm_api_openapi(self, **_params):
        if request.httprequest.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(["GET", "HEAD"], "use GET")
        with file_open("ecrm_addon/static/api/openapi.json", "rb") as spec:
            return request.make_response(
                spec.read(), headers=[("Content-Type", "application/json; charset=utf-8")]
            )
