"""The dashboard's pages and actions. Every action goes through gateway/operations.py, as
the JSON admin API's do, with the logged-in name as the actor of the change log."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from flask import (
    Blueprint,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from markupsafe import Markup
from werkzeug.wrappers import Response

from coordinator.states import STATUSES
from gateway import operations
from gateway.control import Actor
from gateway.core import current_gateway
from gateway.ratelimit import SCOPES
from gateway.switches import EFFECTS, LEVEL_MEANINGS, LEVELS, PRESETS, SWITCHES
from gateway.ui import records
from gateway.ui.diagram import transaction_svg
from gateway.ui.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    LOGIN_MAX_AGE_S,
    PATH,
    SESSION_MAX_AGE_S,
    Sessions,
    UiSession,
)
from gateway.ui.telemetry import Telemetry, readings, rules_limited
from paxkit.auth import CredentialNotConfigured
from paxkit.errors import ApiError, InvalidInput, Unauthorized
from paxkit.metrics import own_metrics

ui = Blueprint("ui", __name__, url_prefix=PATH, template_folder="templates", static_folder="static")

OPEN_ENDPOINTS = frozenset({"ui.static", "ui.login_form", "ui.login"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFRESH_MS = 2000
LIST_LIMIT = 100
CHANGES_SHOWN = 50
MODES = ("2pc", "tcc", "saga", "msg", "paxos", "3pc")
# The age filter of the transaction list: (older than, younger than) in seconds.
AGES: dict[str, tuple[float | None, float | None]] = {
    "any": (None, None),
    "older than 10 s": (10, None),
    "older than 1 min": (60, None),
    "older than 10 min": (600, None),
    "younger than 1 min": (None, 60),
    "younger than 1 h": (None, 3600),
}
SWITCH_SETTINGS = ("on", "off", "level")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class CsrfRefused(ApiError):
    status = 403
    code = "csrf_refused"


@dataclass(frozen=True)
class Dashboard:
    """What the dashboard's views share in a process (built by the composition root)."""

    sessions: Sessions
    telemetry: Telemetry


def current_dashboard() -> Dashboard:
    dashboard: Dashboard = current_app.extensions["paxmart.dashboard"]
    return dashboard


def is_api() -> bool:
    return request.path.startswith(f"{PATH}/api/")


@ui.before_request
def require_session() -> Response | None:
    """Pages without a session go to the login form; anything else without one, or any
    state change without the session's CSRF token, is refused."""
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    sessions = configured_sessions()
    session = sessions.read(request.cookies.get(COOKIE))
    if session is None:
        if request.method == "GET" and not is_api():
            return redirect(url_for("ui.login_form", next=request.full_path.rstrip("?")))
        raise Unauthorized("Log in to the dashboard first.", code="session_required")
    if request.method not in SAFE_METHODS:
        supplied = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if not session.accepts(supplied):
            raise CsrfRefused("This request does not carry the session's CSRF token.")
    g.ui_session = session
    return None


@ui.after_request
def security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@ui.errorhandler(ApiError)
def refused(err: ApiError) -> Any:
    """The contract's error shape for the live endpoints, a page saying the same for pages."""
    if is_api():
        response = jsonify(err.body())
    else:
        response = make_response(render_template("error.html", error=err))
    response.status_code = err.status
    response.headers.update(err.headers)
    return response


@ui.context_processor
def page_context() -> dict[str, Any]:
    session: UiSession | None = g.get("ui_session")
    return {"session": session, "csrf_field": CSRF_FIELD}


def configured_sessions() -> Sessions:
    sessions = current_dashboard().sessions
    if not sessions.configured:
        raise CredentialNotConfigured(
            "This process was started without PAXMART_ADMIN_TOKEN: the dashboard is closed."
        )
    return sessions


def actor() -> Actor:
    session: UiSession = g.ui_session
    return operations.actor_named(session.actor, request.remote_addr)


def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard page, never another site."""
    if target and target.startswith(f"{PATH}/") and not target.startswith("//"):
        return target
    return url_for("ui.overview")


# Logging in and out.


@ui.get("/login")
def login_form() -> Response:
    nonce, cookie = configured_sessions().login_nonce()
    page = render_template("login.html", nonce=nonce, next=safe_next(request.args.get("next")))
    response = make_response(page)
    set_cookie(response, LOGIN_COOKIE, cookie, LOGIN_MAX_AGE_S)
    return response


@ui.post("/login")
def login() -> Response:
    sessions = configured_sessions()
    if not sessions.login_nonce_matches(
        request.cookies.get(LOGIN_COOKIE), request.form.get(CSRF_FIELD)
    ):
        raise CsrfRefused("The login form expired or came from elsewhere; reload it and retry.")
    if not sessions.token_matches(request.form.get("token", "")):
        raise Unauthorized("That is not the admin token.", code="invalid_admin_token")
    name = operations.actor_named(request.form.get("name") or "admin", None, field="name").name
    _, cookie = sessions.issue(name)
    response = redirect(safe_next(request.form.get("next")))
    set_cookie(response, COOKIE, cookie, SESSION_MAX_AGE_S)
    response.delete_cookie(LOGIN_COOKIE, path=PATH)
    return response


@ui.post("/logout")
def logout() -> Response:
    response = redirect(url_for("ui.login_form"))
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="Strict")
    return response


# Overview.


@ui.get("/")
def overview() -> str:
    return render_template("overview.html", refresh_ms=REFRESH_MS)


@ui.get("/api/overview")
def overview_data() -> Response:
    clients = {name: up.client for name, up in current_gateway().upstreams.items()}
    return jsonify(asdict(current_dashboard().telemetry.overview(clients)))


# Degradation: level and switches.


@ui.get("/degradation")
def degradation() -> str:
    gateway = current_gateway()
    stored = operations.stored_snapshot()
    return render_template(
        "degradation.html",
        level=stored.level,
        levels=LEVELS,
        meanings=LEVEL_MEANINGS,
        presets=PRESETS,
        switches=[stored.state(name, gateway.breaker_open) for name in SWITCHES],
        effects=EFFECTS,
        overrides=stored.overrides,
        changes=records.changes(operations.changes(CHANGES_SHOWN)),
    )


@ui.post("/level")
def set_level() -> Response:
    operations.set_level(request.form.get("level"), actor())
    return redirect(url_for("ui.degradation"))


@ui.post("/switches/<name>")
def set_switch(name: str) -> Response:
    operations.known_switch(name)
    setting = request.form.get("setting")
    if setting not in SWITCH_SETTINGS:
        raise InvalidInput("setting", f"setting must be one of {', '.join(SWITCH_SETTINGS)}")
    if setting == "level":
        operations.clear_switch(name, actor())
    else:
        operations.set_switch(name, setting == "on", actor())
    return redirect(url_for("ui.degradation"))


# Rate limits.


@ui.get("/ratelimits")
def ratelimits() -> str:
    rules = sorted(operations.stored_snapshot().rules.values(), key=lambda r: r.name)
    editing = next((r for r in rules if r.name == request.args.get("edit")), None)
    return render_template(
        "ratelimits.html",
        rules=rules,
        limited=rules_limited(readings(own_metrics())),
        editing=editing,
        scopes=SCOPES,
        failure_mode=current_gateway().limiter.failure_mode,
        refresh_ms=REFRESH_MS,
    )


@ui.get("/api/ratelimits")
def ratelimit_counts() -> Response:
    return jsonify({"limited": rules_limited(readings(own_metrics()))})


@ui.post("/ratelimits")
def save_rule() -> Response:
    form = request.form
    body = {
        "route": form.get("route"),
        "rate_per_s": form_number(form.get("rate_per_s"), "rate_per_s", float),
        "burst": form_number(form.get("burst"), "burst", int),
        "scope": form.get("scope", "client"),
    }
    operations.put_rule(operations.parse_rule(form.get("name", ""), body), actor())
    return redirect(url_for("ui.ratelimits"))


@ui.post("/ratelimits/<name>/delete")
def delete_rule(name: str) -> Response:
    operations.delete_rule(name, actor())
    return redirect(url_for("ui.ratelimits"))


def form_number(raw: str | None, field: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind((raw or "").strip())
    except ValueError:
        raise InvalidInput(field, f"{field} must be a number") from None


# Transactions.


@ui.get("/transactions")
def transactions() -> Any:
    gtid = (request.args.get("gtid") or "").strip()
    if gtid:
        return redirect(url_for("ui.transaction", gtid=gtid))
    status, mode = request.args.get("status", ""), request.args.get("mode", "")
    age = request.args.get("age") or "any"
    if age not in AGES:
        raise InvalidInput("age", f"age must be one of: {', '.join(AGES)}")
    older, younger = AGES[age]
    params = {"status": status, "mode": mode, "min_age_s": older, "max_age_s": younger}
    asked = {k: v for k, v in params.items() if v} | {"limit": LIST_LIMIT}
    return render_template(
        "transactions.html",
        rows=records.transactions(records.answered(operations.transactions(asked))),
        statuses=STATUSES,
        modes=MODES,
        ages=AGES,
        chosen={"status": status, "mode": mode, "age": age},
    )


@ui.get("/transactions/<gtid>")
def transaction(gtid: str) -> str:
    body = records.answered(operations.transaction(gtid))
    txn = records.TxnRow.of(body)
    return render_template(
        "transaction.html",
        txn=txn,
        events=records.timeline(body),
        diagram=Markup(transaction_svg(txn, body)),  # built with every label escaped
    )


# Dead letters.


@ui.get("/dead-letters")
def dead_letters() -> str:
    listing = records.dead_letters(records.answered(operations.dead_letters({"limit": LIST_LIMIT})))
    return render_template(
        "dead_letters.html",
        listing=listing,
        replayed=request.args.get("replayed", type=int),
        left=request.args.get("left", type=int),
    )


@ui.post("/dead-letters/replay")
def replay_dead_letters() -> Response:
    """Replay the dead letters named by the form's `id` fields, or every one without any."""
    ids = request.form.getlist("id")
    result = records.answered(operations.replay_dead_letters({"ids": ids} if ids else {}))
    return redirect(
        url_for("ui.dead_letters", replayed=len(result["replayed"]), left=result["left"])
    )


# Audit.


@ui.get("/audit")
def audit_page() -> str:
    return render_template("audit.html", result=None)


@ui.post("/audit")
def run_audit() -> str:
    result = records.audit(records.answered(operations.audit()))
    return render_template("audit.html", result=result)
