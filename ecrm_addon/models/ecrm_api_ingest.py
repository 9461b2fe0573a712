import json
from collections import defaultdict
from datetime import timedelta
from functools import lru_cache

from markupsafe import Markup

from odoo import api, models
from odoo.exceptions import UserError
from odoo.tools import SQL, plaintext2html

from odoo.addons.phone_validation.tools import phone_validation

from ..tools.ingest_validation import (
    WEB_CHANNEL,
    EventError,
    ForbiddenCompany,
    validate_consent_event,
    validate_event,
)
from .ecrm_interaction import OUTCOMES

# Integer settings of the API (ir.config_parameter "ecrm_addon.<name>"): default, minimum.
API_PARAMS = {
    "api_max_events": (1000, 1),
    "api_web_session_minutes": (30, 1),
    "api_auth_max_failures": (10, 1),
    "api_auth_window_seconds": (300, 1),
    "future_tolerance_minutes": (10, 0),
}
# How a customer identifier is looked up: res_partner column.
IDENTIFIER_COLUMNS = {
    "partner_id": "id",
    "email": "email_normalized",
    "phone": "phone_sanitized",
    "customer_ref": "ref",
}
UTM_MODELS = {
    "utm_campaign": "utm.campaign",
    "utm_source": "utm.source",
    "utm_medium": "utm.medium",
}
VISIT_SUMMARY_LINES = 50


@lru_cache(maxsize=8192)
def _phone_e164(number, country_code, phone_code):
    """The number in E.164 read with the company's country, or None when invalid."""
    try:
        return phone_validation.phone_format(
            number, country_code, phone_code, force_format="E164", raise_exception=True
        )
    except UserError:
        return None


def _error(index, field, message):
    return {"index": index, "status": "error", "field": field, "message": message}


class EcrmApiIngest(models.AbstractModel):
    """Writes the events pushed to ``/ecrm/api/v1/interactions``, a batch at a time.

    Each event is validated, matched to a customer and written on its own: valid events
    are written, invalid ones are answered with an error naming the field. The batch is
    read and written set-based (one query per step, one ``INSERT ... ON CONFLICT DO
    NOTHING`` per table) inside the request's transaction, so that a crash writes nothing
    and a retried batch creates nothing new.
    """

    _name = "ecrm.api.ingest"
    _description = "e-CRM Ingestion API"

    @api.model
    def _get_api_param(self, name):
        """An integer setting of the API; a broken value falls back to the default."""
        default, minimum = API_PARAMS[name]
        value = (
            self.env["ir.config_parameter"]
            .sudo()  # sudo: technical settings read on behalf of API keys
            .get_param(f"ecrm_addon.{name}", default)
        )
        try:
            value = int(value)
        except (TypeError, ValueError):
            return default
        return value if value >= minimum else default

    @api.model
    def _ingest_write(self, query):
        """Run a write that concurrent batches may conflict on; return its rows.

        Like ``env.execute_query`` but without logging the query as an error when it fails:
        a serialization failure here is expected when two requests store the same events
        or visitor at once, and Odoo retries the request (logged at INFO).
        """
        self.env.flush_query(query)
        self.env.cr.execute(query, log_exceptions=False)
        return self.env.cr.fetchall() if self.env.cr.description else []

    @api.model
    def _ingest(self, events, companies, default_company, resolving=False):
        """Validate, match and write ``events`` (a list of decoded JSON values).

        :param companies: the companies events may be written in; an event naming another
            company raises :class:`ForbiddenCompany` before anything is written
        :param default_company: the company of events that name none
        :param resolving: the events come from the Unmatched inbox (they are parked there,
            which must not make them duplicates)
        :return: one result dict per event, in order
        """
        now = self.env.cr.now()
        latest = now + timedelta(minutes=self._get_api_param("future_tolerance_minutes"))
        outcomes = frozenset(key for key, _label in OUTCOMES)
        allowed = set(companies.ids)
        results = [None] * len(events)
        batch = []
        for index, event in enumerate(events):
            try:
                clean = validate_event(event, outcomes, allowed, latest)
            except ForbiddenCompany as exc:
                raise ForbiddenCompany(index, exc.company_id) from None
            except EventError as exc:
                results[index] = _error(index, exc.field, exc.message)
                continue
            clean["index"] = index
            clean["raw"] = event
            clean["company_id"] = clean["company_id"] or default_company.id
            batch.append(clean)

        batch = self._ingest_check_channels(batch, results)
        batch = self._ingest_check_sources(batch, results)
        batch = self._ingest_normalize_phones(batch, results)
        batch, copies = self._ingest_skip_duplicates(batch, results, resolving)
        batch, unmatched = self._ingest_match_customers(batch, results)
        self._ingest_park(unmatched, results, now)
        self._ingest_set_utm(batch, results)
        self._ingest_insert_interactions(
            [event for event in batch if event["channel"] != WEB_CHANNEL], results, now
        )
        self._ingest_web_visits(
            [event for event in batch if event["channel"] == WEB_CHANNEL], results, now
        )
        for index, first in copies:
            results[index] = self._ingest_copy_result(index, results[first])
        return results

    # ------------------------------------------------------------
    # Steps, one query each for the whole batch
    # ------------------------------------------------------------

    def _ingest_fail(self, event, results, field, message):
        results[event["index"]] = dict(
            _error(event["index"], field, message), external_id=event["external_ref"]
        )

    @api.model
    def _ingest_check_channels(self, batch, results):
        codes = {event["channel"] for event in batch}
        if not codes:
            return batch
        channels = {
            channel["code"]: (channel["id"], channel["company_id"])
            for channel in self.env["ecrm.channel"].search_read(
                [("code", "in", list(codes))], ["code", "company_id"], load=None
            )
        }
        valid = []
        for event in batch:
            channel_id, channel_company = channels.get(event["channel"], (None, None))
            if not channel_id or channel_company not in (None, False, event["company_id"]):
                self._ingest_fail(
                    event, results, "channel", f"unknown channel {event['channel']!r}"
                )
                continue
            event["channel_id"] = channel_id
            valid.append(event)
        return valid

    @api.model
    def _ingest_check_sources(self, batch, results):
        if not batch:
            return batch
        companies = self.env["res.company"].browse({event["company_id"] for event in batch})
        default_policy = {company.id: company.ecrm_api_unknown_policy for company in companies}
        sources = {
            (source.name, source.company_id.id): source
            for source in self.env["ecrm.api.source"]
            .with_context(active_test=False)
            .search(
                [
                    ("name", "in", list({event["source"] for event in batch})),
                    ("company_id", "in", companies.ids),
                ]
            )
        }
        valid = []
        for event in batch:
            source = sources.get((event["source"], event["company_id"]))
            if source and not source.active:
                self._ingest_fail(
                    event, results, "source", f"the source {event['source']!r} is archived"
                )
                continue
            event["policy"] = (
                source.unknown_customer_policy if source else default_policy[event["company_id"]]
            )
            event["source_id"] = source.id if source else None
            valid.append(event)
        return valid

    @api.model
    def _ingest_normalize_phones(self, batch, results):
        countries = {}
        valid = []
        for event in batch:
            kind, number = event["identifier"]
            if kind == "phone":
                company_id = event["company_id"]
                if company_id not in countries:
                    country = self.env["res.company"].browse(company_id).country_id
                    countries[company_id] = (country.code or None, country.phone_code or None)
                e164 = _phone_e164(number, *countries[company_id])
                if not e164:
                    self._ingest_fail(
                        event,
                        results,
                        "phone",
                        "phone is not a valid phone number (numbers without a country code "
                        "are read in the company's country)",
                    )
                    continue
                event["identifier"] = (kind, e164)
            valid.append(event)
        return valid

    @api.model
    def _ingest_find_existing(self, keys, with_unmatched=True):
        """Map (company, source, external id) keys to what already holds them.

        :return: {key: ("interaction", id) | ("unmatched", id, interaction id)}
        """
        if not keys:
            return {}
        keys = list(keys)
        for model in ("ecrm.interaction", "ecrm.interaction.event", "ecrm.unmatched.event"):
            self.env[model].flush_model()
        unmatched = SQL(
            """
            UNION ALL
            SELECT 'unmatched', u.id, u.interaction_id, u.company_id, u.source_system,
                   u.external_ref
              FROM ecrm_unmatched_event u
              JOIN keys k ON u.company_id = k.company_id AND u.source_system = k.source
                         AND u.external_ref = k.ref
            """
        )
        rows = self.env.execute_query(
            SQL(
                """
                WITH keys AS (
                    SELECT * FROM unnest(%(companies)s::int[], %(sources)s::varchar[],
                                         %(refs)s::varchar[]) AS k(company_id, source, ref)
                )
                SELECT 'interaction', i.id, NULL::int, i.company_id, i.source_system, i.external_ref
                  FROM ecrm_interaction i
                  JOIN keys k ON i.company_id = k.company_id AND i.source_system = k.source
                             AND i.external_ref = k.ref
                 WHERE i.external_ref IS NOT NULL
                UNION ALL
                SELECT 'interaction', e.interaction_id, NULL::int, e.company_id, e.source_system,
                       e.external_ref
                  FROM ecrm_interaction_event e
                  JOIN keys k ON e.company_id = k.company_id AND e.source_system = k.source
                             AND e.external_ref = k.ref
                %(unmatched)s
                """,
                companies=[key[0] for key in keys],
                sources=[key[1] for key in keys],
                refs=[key[2] for key in keys],
                unmatched=unmatched if with_unmatched else SQL(),
            )
        )
        found = {}
        for kind, record_id, interaction_id, company_id, source, ref in rows:
            key = (company_id, source, ref)
            # an interaction wins over the inbox row it was made from
            if kind == "interaction" or key not in found:
                found[key] = (kind, record_id, interaction_id)
        return found

    @staticmethod
    def _ingest_duplicate_result(event, existing):
        kind, record_id, interaction_id = existing
        result = {
            "index": event["index"],
            "status": "duplicate",
            "external_id": event["external_ref"],
        }
        if kind == "interaction":
            result["id"] = record_id
        else:
            result["unmatched_id"] = record_id
            if interaction_id:
                result["id"] = interaction_id
        return result

    @staticmethod
    def _ingest_copy_result(index, first):
        """The result of an event repeated in its own batch, from the first copy's result."""
        if first["status"] == "error":
            return dict(first, index=index)
        result = {"index": index, "status": "duplicate", "external_id": first["external_id"]}
        for name in ("id", "unmatched_id"):
            if name in first:
                result[name] = first[name]
        return result

    @api.model
    def _ingest_skip_duplicates(self, batch, results, resolving):
        """Drop events already stored, and later copies of an event within the batch."""
        first_of = {}
        copies = []
        fresh = []
        for event in batch:
            event["key"] = key = (event["company_id"], event["source"], event["external_ref"])
            if key in first_of:
                copies.append((event["index"], first_of[key]))
            else:
                first_of[key] = event["index"]
                fresh.append(event)
        existing = self._ingest_find_existing(first_of, with_unmatched=not resolving)
        valid = []
        for event in fresh:
            if event["key"] in existing:
                results[event["index"]] = self._ingest_duplicate_result(
                    event, existing[event["key"]]
                )
            else:
                valid.append(event)
        return valid, copies

    @api.model
    def _ingest_match_customers(self, batch, results):
        """Find each event's customer: one query per kind of identifier.

        A customer is a partner, active, shared or of the event's company. Several
        partners of one customer company sharing the identifier give that company;
        partners of different customers are ambiguous, never guessed.
        """
        values = defaultdict(set)
        for event in batch:
            kind, value = event["identifier"]
            values[kind].add(value)
        company_ids = list({event["company_id"] for event in batch})
        self.env["res.partner"].flush_model(
            ["email_normalized", "phone_sanitized", "ref", "active", "company_id"]
        )
        candidates = defaultdict(list)
        for kind, kind_values in values.items():
            column = SQL.identifier("p", IDENTIFIER_COLUMNS[kind])
            rows = self.env.execute_query(
                SQL(
                    """
                    SELECT %(column)s, p.id, p.commercial_partner_id, p.company_id, p.active
                      FROM res_partner p
                     WHERE %(column)s = ANY(%(values)s)
                       AND (p.company_id IS NULL OR p.company_id = ANY(%(companies)s))
                    """,
                    column=column,
                    values=list(kind_values),
                    companies=company_ids,
                )
            )
            for value, partner_id, commercial_id, company_id, active in rows:
                candidates[kind, value].append((partner_id, commercial_id, company_id, active))
        company_names = {
            company.id: company.name for company in self.env["res.company"].browse(company_ids)
        }
        matched, unmatched = [], []
        for event in batch:
            kind, value = event["identifier"]
            company_id = event["company_id"]
            partners = [
                (partner_id, commercial_id)
                for partner_id, commercial_id, partner_company, active in candidates[kind, value]
                if active and partner_company in (None, company_id)
            ]
            commercials = {commercial_id for _partner, commercial_id in partners}
            if len(commercials) == 1:
                partner_id, commercial_id = (
                    partners[0]
                    if len(partners) == 1
                    else (
                        next(iter(commercials)),
                        next(iter(commercials)),
                    )
                )
                event["partner_id"], event["commercial_id"] = partner_id, commercial_id
                matched.append(event)
            elif kind == "partner_id":
                self._ingest_fail(
                    event,
                    results,
                    kind,
                    f"no active customer with id {value} in {company_names[company_id]}",
                )
            else:
                label = kind.replace("_", " ")
                event["reason"] = "ambiguous" if partners else "unknown"
                event["message"] = (
                    f"{len(commercials)} customers of {company_names[company_id]} have this {label}"
                    if partners
                    else f"no customer of {company_names[company_id]} has this {label}"
                )
                if event["policy"] == "inbox":
                    unmatched.append(event)
                else:
                    self._ingest_fail(event, results, kind, event["message"])
        return matched, unmatched

    @api.model
    def _ingest_park(self, events, results, now):
        """Park events without a customer in the Unmatched inbox (idempotent too)."""
        if not events:
            return
        events = sorted(events, key=lambda event: event["key"])
        rows = self._ingest_write(
            SQL(
                """
                INSERT INTO ecrm_unmatched_event (
                    company_id, source_system, external_ref, channel_id, direction,
                    occurred_at, identifier_kind, identifier, customer_name, reason, payload,
                    state, create_uid, create_date, write_uid, write_date)
                SELECT k.company_id, k.source, k.ref, k.channel_id, k.direction, k.occurred_at,
                       k.kind, k.identifier, k.customer_name, k.reason, k.payload, 'pending',
                       %(uid)s, %(now)s, %(uid)s, %(now)s
                  FROM unnest(%(companies)s::int[], %(sources)s::varchar[],
                              %(refs)s::varchar[], %(channels)s::int[],
                              %(directions)s::varchar[], %(dates)s::timestamp[],
                              %(kinds)s::varchar[], %(identifiers)s::varchar[],
                              %(names)s::varchar[], %(reasons)s::varchar[], %(payloads)s::text[])
                    AS k(company_id, source, ref, channel_id, direction, occurred_at, kind,
                         identifier, customer_name, reason, payload)
                ON CONFLICT (company_id, source_system, external_ref) DO NOTHING
                RETURNING id, company_id, source_system, external_ref
                """,
                companies=[event["company_id"] for event in events],
                sources=[event["source"] for event in events],
                refs=[event["external_ref"] for event in events],
                channels=[event["channel_id"] for event in events],
                directions=[event["direction"] for event in events],
                dates=[event["date"] for event in events],
                kinds=[event["identifier"][0] for event in events],
                identifiers=[event["identifier"][1] for event in events],
                names=[event["customer_name"] for event in events],
                reasons=[event["reason"] for event in events],
                payloads=[json.dumps(event["raw"], ensure_ascii=False) for event in events],
                uid=self.env.uid,
                now=now,
            )
        )
        parked = {
            (company_id, source, ref): record_id for record_id, company_id, source, ref in rows
        }
        self._ingest_report_conflicts(events, parked, results)
        for event in events:
            if event["key"] in parked:
                results[event["index"]] = {
                    "index": event["index"],
                    "status": "parked",
                    "external_id": event["external_ref"],
                    "unmatched_id": parked[event["key"]],
                    "message": event["message"],
                }

    @api.model
    def _ingest_report_conflicts(self, events, inserted, results):
        """Events an ``ON CONFLICT DO NOTHING`` skipped: stored by a concurrent request.

        At Odoo's REPEATABLE READ isolation PostgreSQL raises a serialization failure
        instead (and the request is retried), so this only serves weaker isolation.
        """
        missed = [event for event in events if event["key"] not in inserted]
        existing = self._ingest_find_existing({event["key"] for event in missed})
        for event in missed:
            results[event["index"]] = self._ingest_duplicate_result(
                event, existing.get(event["key"], ("interaction", None, None))
            )

    @api.model
    def _ingest_set_utm(self, batch, results):
        """UTM values name existing campaigns, sources and mediums (never created here)."""
        for field, model in UTM_MODELS.items():
            names = {event[field].strip().lower() for event in batch if event[field]}
            ids = {}
            if names:
                self.env[model].flush_model(["name"])
                ids = dict(
                    self.env.execute_query(
                        SQL(
                            "SELECT lower(name), min(id) FROM %s WHERE lower(name) = ANY(%s) "
                            "GROUP BY lower(name)",
                            SQL.identifier(self.env[model]._table),
                            list(names),
                        )
                    )
                )
            for event in batch:
                name = event[field] and event[field].strip().lower()
                event[f"{field}_id"] = ids.get(name)
                if name and not ids.get(name):
                    event.setdefault("warnings", []).append(
                        {
                            "field": field,
                            "message": f"no {field.replace('_', ' ')} of this name in Odoo: "
                            "left empty (the API does not create UTM records)",
                        }
                    )

    @api.model
    def _ingest_insert_rows(self, rows, now):
        """INSERT interactions (dicts of column values), skipping known external ids.

        :return: {(company, source, external id): new id}
        """
        if not rows:
            return {}
        rows = sorted(rows, key=lambda row: (row["company_id"], row["source"], row["ref"]))

        def column(name):
            return [row[name] for row in rows]

        inserted = self._ingest_write(
            SQL(
                """
                INSERT INTO ecrm_interaction (
                    partner_id, commercial_partner_id, channel_id, direction, date, subject,
                    summary, duration, outcome, company_id, capture_mode, source_system,
                    external_ref, campaign_id, source_id, medium_id,
                    create_uid, create_date, write_uid, write_date)
                SELECT k.partner_id, k.commercial_partner_id, k.channel_id, k.direction, k.date,
                       k.subject, k.summary, k.duration, k.outcome, k.company_id, 'api',
                       k.source, k.ref, k.campaign_id, k.source_id, k.medium_id,
                       %(uid)s, %(now)s, %(uid)s, %(now)s
                  FROM unnest(%(partners)s::int[], %(commercials)s::int[], %(channels)s::int[],
                              %(directions)s::varchar[], %(dates)s::timestamp[],
                              %(subjects)s::varchar[], %(summaries)s::text[],
                              %(durations)s::float8[], %(outcomes)s::varchar[],
                              %(companies)s::int[], %(sources)s::varchar[], %(refs)s::varchar[],
                              %(campaigns)s::int[], %(utm_sources)s::int[], %(mediums)s::int[])
                    AS k(partner_id, commercial_partner_id, channel_id, direction, date,
                         subject, summary, duration, outcome, company_id, source, ref,
                         campaign_id, source_id, medium_id)
                ON CONFLICT (company_id, source_system, external_ref)
                   WHERE external_ref IS NOT NULL DO NOTHING
                RETURNING id, company_id, source_system, external_ref
                """,
                partners=column("partner_id"),
                commercials=column("commercial_partner_id"),
                channels=column("channel_id"),
                directions=column("direction"),
                dates=column("date"),
                subjects=column("subject"),
                summaries=column("summary"),
                durations=column("duration"),
                outcomes=column("outcome"),
                companies=column("company_id"),
                sources=column("source"),
                refs=column("ref"),
                campaigns=column("campaign_id"),
                utm_sources=column("source_id"),
                mediums=column("medium_id"),
                uid=self.env.uid,
                now=now,
            )
        )
        return {(company_id, source, ref): new_id for new_id, company_id, source, ref in inserted}

    @staticmethod
    def _ingest_row(event, **values):
        return {
            "partner_id": event["partner_id"],
            "commercial_partner_id": event["commercial_id"],
            "channel_id": event["channel_id"],
            "direction": event["direction"],
            "date": event["date"],
            "subject": event["subject"],
            "summary": event["summary"] and str(plaintext2html(event["summary"])),
            "duration": event["duration"],
            "outcome": event["outcome"],
            "company_id": event["company_id"],
            "source": event["source"],
            "ref": event["external_ref"],
            "campaign_id": event["utm_campaign_id"],
            "source_id": event["utm_source_id"],
            "medium_id": event["utm_medium_id"],
            **values,
        }

    @staticmethod
    def _ingest_success(event, status, interaction_id):
        result = {
            "index": event["index"],
            "status": status,
            "external_id": event["external_ref"],
            "id": interaction_id,
        }
        if event.get("warnings"):
            result["warnings"] = event["warnings"]
        return result

    @api.model
    def _ingest_insert_interactions(self, events, results, now):
        inserted = self._ingest_insert_rows([self._ingest_row(event) for event in events], now)
        self._ingest_report_conflicts(events, inserted, results)
        for event in events:
            if event["key"] in inserted:
                results[event["index"]] = self._ingest_success(
                    event, "created", inserted[event["key"]]
                )

    # ------------------------------------------------------------
    # Web visits
    # ------------------------------------------------------------

    @api.model
    def _ingest_web_visits(self, events, results, now):
        """Group web events into visits and store each event with its visit.

        Events of one visitor (company, source, customer, visitor id) less than the
        session window apart are one visit, with the events already stored: a new event
        joins the nearest visit of its run, or the run starts a new visit.
        """
        if not events:
            return
        window = timedelta(minutes=self._get_api_param("api_web_session_minutes"))
        by_visitor = self._ingest_upsert_visitors(events, now)
        existing = self._ingest_nearby_events(by_visitor, window)
        new_visits, touched = [], set()
        for visitor_id, visitor_events in by_visitor.items():
            points = [(moment, 0, visit_id) for moment, visit_id in existing[visitor_id]]
            points += [(event["date"], 1, event) for event in visitor_events]
            points.sort(key=lambda point: (point[0], point[1]))
            for run in self._ingest_runs(points, window):
                anchors = [(moment, visit_id) for moment, kind, visit_id in run if kind == 0]
                fresh = [event for _moment, kind, event in run if kind == 1]
                if not fresh:
                    continue
                if not anchors:
                    new_visits.append(fresh)
                    continue
                for event in fresh:
                    event["visit_id"] = min(
                        anchors, key=lambda anchor, at=event["date"]: abs(anchor[0] - at)
                    )[1]
                    touched.add(event["visit_id"])
        rows = []
        for visit_events in new_visits:
            first = visit_events[0]
            subject, summary, duration = self._ingest_visit_values(
                self._ingest_visit_lines(visit_events),
                len(visit_events),
                first["date"],
                visit_events[-1]["date"],
            )
            rows.append(
                self._ingest_row(
                    first, subject=subject, summary=summary, duration=duration, outcome=None
                )
            )
        inserted = self._ingest_insert_rows(rows, now)
        firsts = [visit_events[0] for visit_events in new_visits]
        self._ingest_report_conflicts(firsts, inserted, results)
        stored = []
        for visit_events in new_visits:
            visit_id = inserted.get(visit_events[0]["key"])
            if visit_id:
                for event in visit_events:
                    event["visit_id"] = visit_id
                stored.extend(visit_events)
                continue
            for event in visit_events[1:]:
                self._ingest_fail(
                    event,
                    results,
                    "external_id",
                    "not stored: a concurrent request stored the first event of its visit; "
                    "send it again",
                )
        stored.extend(event for event in events if event["visit_id"] in touched)
        self._ingest_insert_web_events(stored, now)
        self._ingest_refresh_visits(touched, now)
        created = {visit_events[0]["index"] for visit_events in new_visits}
        for event in stored:
            status = "created" if event["index"] in created else "merged"
            results[event["index"]] = self._ingest_success(event, status, event["visit_id"])

    @staticmethod
    def _ingest_runs(points, window):
        """Split time-sorted points where two neighbours are more than ``window`` apart."""
        run = []
        for point in points:
            if run and point[0] - run[-1][0] > window:
                yield run
                run = []
            run.append(point)
        if run:
            yield run

    @api.model
    def _ingest_upsert_visitors(self, events, now):
        """Upsert the batch's visitors; return {visitor id: its events}.

        The upsert is also the lock: a concurrent request that wrote the same visitor
        makes this one fail to serialize, and Odoo retries it with that request's visits
        in sight (no visit split in two).
        """
        last = {}
        for event in events:
            event["visit_id"] = None
            key = (
                event["company_id"],
                event["source"],
                event["partner_id"],
                event["visitor_id"] or "",
            )
            event["visitor_key"] = key
            last[key] = max(last.get(key, event["date"]), event["date"])
        keys = sorted(last)
        rows = self._ingest_write(
            SQL(
                """
                INSERT INTO ecrm_web_visitor (company_id, source_system, partner_id, visitor_ref,
                                              last_event_at, create_uid, create_date,
                                              write_uid, write_date)
                SELECT k.company_id, k.source, k.partner_id, k.visitor, k.last_event_at,
                       %(uid)s, %(now)s, %(uid)s, %(now)s
                  FROM unnest(%(companies)s::int[], %(sources)s::varchar[],
                              %(partners)s::int[], %(visitors)s::varchar[],
                              %(lasts)s::timestamp[])
                    AS k(company_id, source, partner_id, visitor, last_event_at)
                ON CONFLICT (company_id, source_system, partner_id, visitor_ref) DO UPDATE
                   SET last_event_at = GREATEST(ecrm_web_visitor.last_event_at,
                                                EXCLUDED.last_event_at),
                       write_uid = EXCLUDED.write_uid, write_date = EXCLUDED.write_date
                RETURNING id, company_id, source_system, partner_id, visitor_ref
                """,
                companies=[key[0] for key in keys],
                sources=[key[1] for key in keys],
                partners=[key[2] for key in keys],
                visitors=[key[3] for key in keys],
                lasts=[last[key] for key in keys],
                uid=self.env.uid,
                now=now,
            )
        )
        visitor_ids = {tuple(row[1:]): row[0] for row in rows}
        by_visitor = defaultdict(list)
        for event in events:
            event["web_visitor_id"] = visitor_ids[event["visitor_key"]]
            by_visitor[event["web_visitor_id"]].append(event)
        self.env["ecrm.web.visitor"].invalidate_model(["last_event_at", "write_date"])
        return by_visitor

    @api.model
    def _ingest_nearby_events(self, by_visitor, window):
        """Stored events of these visitors within ``window`` of the batch's ones."""
        visitor_ids = sorted(by_visitor)
        rows = self.env.execute_query(
            SQL(
                """
                SELECT e.visitor_id, e.occurred_at, e.interaction_id
                  FROM unnest(%(visitors)s::int[], %(lows)s::timestamp[], %(highs)s::timestamp[])
                    AS k(visitor_id, low, high)
                  JOIN ecrm_interaction_event e ON e.visitor_id = k.visitor_id
                                               AND e.occurred_at BETWEEN k.low AND k.high
                """,
                visitors=visitor_ids,
                lows=[min(e["date"] for e in by_visitor[v]) - window for v in visitor_ids],
                highs=[max(e["date"] for e in by_visitor[v]) + window for v in visitor_ids],
            )
        )
        existing = defaultdict(list)
        for visitor_id, moment, visit_id in rows:
            existing[visitor_id].append((moment, visit_id))
        return existing

    @api.model
    def _ingest_insert_web_events(self, events, now):
        if not events:
            return
        events = sorted(events, key=lambda event: event["key"])
        self._ingest_write(
            SQL(
                """
                INSERT INTO ecrm_interaction_event (
                    interaction_id, visitor_id, company_id, source_system, external_ref,
                    occurred_at, url, page, product, create_uid, create_date, write_uid,
                    write_date)
                SELECT k.interaction_id, k.visitor_id, k.company_id, k.source, k.ref,
                       k.occurred_at, k.url, k.page, k.product,
                       %(uid)s, %(now)s, %(uid)s, %(now)s
                  FROM unnest(%(visits)s::int[], %(visitors)s::int[], %(companies)s::int[],
                              %(sources)s::varchar[], %(refs)s::varchar[],
                              %(dates)s::timestamp[], %(urls)s::varchar[],
                              %(pages)s::varchar[], %(products)s::varchar[])
                    AS k(interaction_id, visitor_id, company_id, source, ref, occurred_at,
                         url, page, product)
                ON CONFLICT (company_id, source_system, external_ref) DO NOTHING
                """,
                visits=[event["visit_id"] for event in events],
                visitors=[event["web_visitor_id"] for event in events],
                companies=[event["company_id"] for event in events],
                sources=[event["source"] for event in events],
                refs=[event["external_ref"] for event in events],
                dates=[event["date"] for event in events],
                urls=[event["url"] for event in events],
                pages=[event["page"] for event in events],
                products=[event["product"] for event in events],
                uid=self.env.uid,
                now=now,
            )
        )

    @api.model
    def _ingest_refresh_visits(self, visit_ids, now):
        """Recompute date, duration, subject and summary of visits that gained events."""
        if not visit_ids:
            return
        rows = self.env.execute_query(
            SQL(
                """
                SELECT interaction_id, url, page, product, total, first_at, last_at
                  FROM (SELECT e.interaction_id, e.url, e.page, e.product,
                               row_number() OVER (PARTITION BY e.interaction_id
                                                  ORDER BY e.occurred_at, e.id) AS rank,
                               count(*) OVER (PARTITION BY e.interaction_id) AS total,
                               min(e.occurred_at) OVER (PARTITION BY e.interaction_id) AS first_at,
                               max(e.occurred_at) OVER (PARTITION BY e.interaction_id) AS last_at
                          FROM ecrm_interaction_event e
                         WHERE e.interaction_id = ANY(%(visits)s)) AS s
                 WHERE rank <= %(lines)s
                 ORDER BY interaction_id, rank
                """,
                visits=sorted(visit_ids),
                lines=VISIT_SUMMARY_LINES,
            )
        )
        visits = {}
        for visit_id, url, page, product, total, first_at, last_at in rows:
            visit = visits.setdefault(
                visit_id, {"lines": [], "total": total, "first": first_at, "last": last_at}
            )
            visit["lines"].append({"url": url, "page": page, "product": product})
        ids = sorted(visits)
        values = [
            self._ingest_visit_values(
                self._ingest_visit_lines(visits[visit_id]["lines"]),
                visits[visit_id]["total"],
                visits[visit_id]["first"],
                visits[visit_id]["last"],
            )
            for visit_id in ids
        ]
        self.env["ecrm.interaction"].flush_model()
        self._ingest_write(
            SQL(
                """
                UPDATE ecrm_interaction i
                   SET date = k.date, duration = k.duration, subject = k.subject,
                       summary = k.summary, write_uid = %(uid)s, write_date = %(now)s
                  FROM unnest(%(ids)s::int[], %(dates)s::timestamp[], %(durations)s::float8[],
                              %(subjects)s::varchar[], %(summaries)s::text[])
                    AS k(id, date, duration, subject, summary)
                 WHERE i.id = k.id
                """,
                ids=ids,
                dates=[visits[visit_id]["first"] for visit_id in ids],
                durations=[value[2] for value in values],
                subjects=[value[0] for value in values],
                summaries=[value[1] for value in values],
                uid=self.env.uid,
                now=now,
            )
        )
        self.env["ecrm.interaction"].invalidate_model(
            ["date", "duration", "subject", "summary", "write_uid", "write_date"]
        )

    @staticmethod
    def _ingest_visit_lines(events):
        """One summary line (escaped HTML) per viewed page or product, at most 50."""
        lines = []
        for event in events[:VISIT_SUMMARY_LINES]:
            text = event["product"] or event["page"] or event["url"] or ""
            label = "Product" if event["product"] else "Page"
            line = Markup("<li>%s: %s") % (label, text)
            if event["url"] and event["url"] != text:
                line += Markup(" <small>%s</small>") % event["url"]
            lines.append(line + Markup("</li>"))
        return lines

    def _ingest_visit_values(self, lines, total, first, last):
        """Subject, summary (HTML) and duration (hours) of a web visit."""
        subject = (
            self.env._("Web visit: 1 view")
            if total == 1
            else self.env._("Web visit: %(count)s views", count=total)
        )
        summary = Markup("<ul>%s</ul>") % Markup("").join(lines)
        if total > len(lines):
            summary += Markup("<p>%s</p>") % self.env._(
                "and %(count)s more views", count=total - len(lines)
            )
        return subject, str(summary), (last - first).total_seconds() / 3600.0

    # ------------------------------------------------------------
    # Consent events (/ecrm/api/v1/consents)
    # ------------------------------------------------------------

    @api.model
    def _ingest_consents(self, events, companies, default_company):
        """Validate, match and record consent events; one result per event, in order.

        Idempotent on (company, source, external id): a retried event is a ``duplicate``.
        Unknown customers are errors (consent is never parked).
        """
        now = self.env.cr.now()
        latest = now + timedelta(minutes=self._get_api_param("future_tolerance_minutes"))
        allowed = set(companies.ids)
        results = [None] * len(events)
        batch = []
        for index, event in enumerate(events):
            try:
                clean = validate_consent_event(event, allowed, latest)
            except ForbiddenCompany as exc:
                raise ForbiddenCompany(index, exc.company_id) from None
            except EventError as exc:
                results[index] = _error(index, exc.field, exc.message)
                continue
            clean.update(index=index, policy="reject")
            clean["company_id"] = clean["company_id"] or default_company.id
            batch.append(clean)
        batch = self._ingest_check_channels(batch, results)
        batch = self._ingest_check_purposes(batch, results)
        batch = self._ingest_normalize_phones(batch, results)
        batch = self._ingest_skip_known_consents(batch, results)
        batch, _unmatched = self._ingest_match_customers(batch, results)
        # sudo: trusted path, the proof fields come from the validated events
        inserted = (
            self.env["ecrm.consent.event"]
            .sudo()
            ._insert_keyed(
                [
                    {
                        "partner_id": event["partner_id"],
                        "company_id": event["company_id"],
                        "channel_id": event["channel_id"],
                        "purpose_id": event["purpose_id"],
                        "state": event["state"],
                        "pause_until": event["pause_until"],
                        "date": event["date"],
                        "source": "api",
                        "source_system": event["source"],
                        "external_ref": event["external_ref"],
                        "consent_text_version": event["consent_text_version"],
                        "legal_basis": event["legal_basis"],
                        "ip_address": event["ip_address"],
                        "note": event["note"],
                        "user_id": self.env.uid,
                    }
                    for event in batch
                ]
            )
        )
        missed = [event for event in batch if self._consent_key(event) not in inserted]
        known = self._ingest_known_consents(missed)
        for event in batch:
            key = self._consent_key(event)
            results[event["index"]] = {
                "index": event["index"],
                "status": "created" if key in inserted else "duplicate",
                "id": inserted.get(key) or known.get(key),
                "external_id": event["external_ref"],
            }
        return results

    @api.model
    def _ingest_check_purposes(self, batch, results):
        purposes = {
            purpose.code: purpose.id
            for purpose in self.env["ecrm.consent.purpose"].search(
                [("code", "in", list({event["purpose"] for event in batch}))]
            )
        }
        valid = []
        for event in batch:
            if event["purpose"] not in purposes:
                self._ingest_fail(
                    event, results, "purpose", f"unknown purpose {event['purpose']!r}"
                )
                continue
            event["purpose_id"] = purposes[event["purpose"]]
            valid.append(event)
        return valid

    @staticmethod
    def _consent_key(event):
        return (event["company_id"], event["source"], event["external_ref"])

    @api.model
    def _ingest_known_consents(self, batch):
        """{(company, source, external id): id} of the events of ``batch`` already stored."""
        if not batch:
            return {}
        self.env["ecrm.consent.event"].flush_model()
        rows = self.env.execute_query(
            SQL(
                """
                SELECT company_id, source_system, external_ref, id FROM ecrm_consent_event
                 WHERE external_ref IS NOT NULL
                   AND (company_id, source_system, external_ref) IN (
                       SELECT * FROM unnest(%s::int[], %s::varchar[], %s::varchar[]))
                """,
                [event["company_id"] for event in batch],
                [event["source"] for event in batch],
                [event["external_ref"] for event in batch],
            )
        )
        return {(company, source, ref): event_id for company, source, ref, event_id in rows}

    @api.model
    def _ingest_skip_known_consents(self, batch, results):
        """Events already recorded (or twice in the batch) answer ``duplicate``."""
        if not batch:
            return batch
        known = self._ingest_known_consents(batch)
        seen, valid = {}, []
        for event in batch:
            key = self._consent_key(event)
            if key in known or key in seen:
                results[event["index"]] = {
                    "index": event["index"],
                    "status": "duplicate",
                    "id": known.get(key),
                    "external_id": event["external_ref"],
                }
                continue
            seen[key] = event["index"]
            valid.append(event)
        return valid
