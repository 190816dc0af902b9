"""The lead lifecycle on the web, over HTTP and real SMTP: signup, one-click unsubscribe, tracked
booking clicks and conversions, double opt-in, the compliance headers and legal footer of every
email, and clicks and conversions in `status`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from email import message_from_string
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import lxml.html
import pytest

from campaign.devtools.catcher import free_port
from campaign.rendering.links import LinkSigner
from campaign.sending.runner import Engine
from harness.cli import invoke
from harness.engine import open_campaign
from harness.mail import (
    BASE_URL,
    SIGNING_KEY,
    flip,
    html_part,
    link_named,
    signer,
    step_of,
    text_part,
    token_of,
    unsubscribe_url,
    with_payload,
)
from harness.schedule import edit_schedule
from harness.web import (
    API_TOKEN,
    AUTH,
    CONFIRM_TEMPLATE,
    ONE_CLICK,
    START,
    WEEK,
    Web,
    open_web,
    wait_listening,
)

CAMPAIGN = "acupuncture-back-pain"
BOOKING_URL = "https://evergreen-acupuncture.example.com/book"
POSTAL_ADDRESS = "12 Willow Street, Springfield, IL 62701, USA"
STEPS = ["mechanisms", "pain-types", "process", "faqs", "booking"]


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    with open_web(tmp_path) as opened:
        yield opened


def first_email(web: Web, email: str = "ann@example.com", name: str = "Ann") -> EmailMessage:
    """Sign a lead up over HTTP and return step 1 as the SMTP server received it."""
    assert web.signup(email, first_name=name).status_code == 201
    messages = web.send()
    assert [str(m["To"].addresses[0].addr_spec) for m in messages] == [email]
    return messages[0]


# -- signup ----------------------------------------------------------------------------------


def test_signup_without_the_right_token_is_refused(web: Web) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-the-token-0123456789"},
        {"Authorization": f"Basic {API_TOKEN}"},
        {"Authorization": API_TOKEN},
    ):
        answer = web.client.post("/leads", json={"email": "ann@example.com"}, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["WWW-Authenticate"].startswith("Bearer"), headers
    assert web.rows("SELECT * FROM leads") == []


def test_signup_is_off_when_no_token_is_configured(tmp_path: Path) -> None:
    with open_web(tmp_path, api_token=None) as web:
        answer = web.signup("ann@example.com")
        assert answer.status_code == 503
        assert "CAMPAIGN_API_TOKEN" in answer.json()["error"]
        assert web.rows("SELECT * FROM leads") == []


def test_signup_creates_the_lead_then_finds_it(web: Web) -> None:
    answer = web.signup(
        " Ann@Example.COM ", first_name="Ann", timezone="Europe/London", city="Leeds", visits=3
    )
    assert answer.status_code == 201, answer.text
    lead = answer.json()
    assert (lead["email"], lead["first_name"], lead["timezone"], lead["status"]) == (
        "Ann@example.com",
        "Ann",
        "Europe/London",
        "active",
    )
    assert lead["attributes"] == {"city": "Leeds", "visits": "3"}

    again = web.signup("Ann@example.com", first_name="Annie")
    assert again.status_code == 200, again.text
    assert again.json() == lead, "a known lead is returned as stored, not changed"
    assert len(web.rows("SELECT * FROM leads")) == 1
    planned = web.rows("SELECT step_id, status FROM deliveries")
    assert [tuple(row) for row in planned] == [("mechanisms", "pending")]


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_signup_from_an_html_form(web: Web, encoding: str) -> None:
    fields = {"email": "bo@example.com", "first_name": "Bo", "source": "footer-form"}
    if encoding == "urlencoded":
        answer = web.client.post("/leads", data=fields, headers=AUTH)
    else:
        answer = web.client.post(
            "/leads", files={k: (None, v) for k, v in fields.items()}, headers=AUTH
        )
    assert answer.request.headers["content-type"].startswith(
        {"urlencoded": "application/x-www-form-urlencoded", "multipart": "multipart/form-data"}[
            encoding
        ]
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["first_name"] == "Bo"
    assert answer.json()["attributes"] == {"source": "footer-form"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"first_name": "Ann"}, "email"),
        ({"email": "ann@example.com", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"email": "ann@example.com", "first_name": "Ann\r\nBcc: x@evil.example"}, "first_name"),
        ({"email": "ann@example.com", "Favourite Colour": "red"}, "Favourite Colour"),
        ({"email": "ann@example.com", "tags": ["a", "b"]}, "tags"),
    ],
    ids=["bad-email", "no-email", "bad-zone", "line-break", "bad-attribute-name", "not-text"],
)
def test_signup_names_the_bad_field(web: Web, fields: dict[str, Any], field: str) -> None:
    answer = web.client.post("/leads", json=fields, headers=AUTH)
    assert answer.status_code == 400, answer.text
    errors = answer.json()["errors"]
    assert list(errors) == [field] and errors[field], errors
    assert web.rows("SELECT * FROM leads") == []


def test_signup_refuses_bodies_that_are_not_a_json_object_or_a_form(web: Web) -> None:
    json_type = {**AUTH, "Content-Type": "application/json"}
    cases = [
        (web.client.post("/leads", content=b"{not json", headers=json_type), 400),
        (web.client.post("/leads", json=["ann@example.com"], headers=AUTH), 400),
        (
            web.client.post(
                "/leads",
                content=b"email=ann@example.com",
                headers={**AUTH, "Content-Type": "text/plain"},
            ),
            415,
        ),
        (web.signup("ann@example.com", notes="x" * 70_000), 413),
    ]
    assert [answer.status_code for answer, _ in cases] == [status for _, status in cases]
    assert web.rows("SELECT * FROM leads") == []


def test_signed_up_lead_receives_step_1_over_smtp(web: Web) -> None:
    message = first_email(web)
    assert step_of(message) == "mechanisms"
    assert str(message["Subject"]) == "How acupuncture eases back pain"
    assert "Hi Ann," in text_part(message)
    assert web.send() == [], "step 2 waits its week"


# -- one-click unsubscribe -----------------------------------------------------------------


def test_one_click_post_with_the_header_link_unsubscribes(web: Web) -> None:
    message = first_email(web)
    url = unsubscribe_url(message)
    assert url.startswith(f"{BASE_URL}/u/")
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert url in text_part(message) and url in html_part(message), "the footer uses it too"

    answer = web.client.post(url, data=ONE_CLICK)  # no cookie, no login, no CSRF token
    assert answer.status_code == 200 and "unsubscribed" in answer.text
    assert web.status("ann@example.com") == "unsubscribed"
    assert web.client.post(url, data=ONE_CLICK).status_code == 200, "a second POST is harmless"
    assert web.send(after=WEEK) == []
    assert web.send(after=4 * WEEK) == []
    rows = web.rows("SELECT step_id, status FROM deliveries ORDER BY id")
    assert [tuple(row) for row in rows] == [("mechanisms", "sent"), ("pain-types", "cancelled")]


def test_get_shows_a_button_and_unsubscribes_nobody(web: Web) -> None:
    url = unsubscribe_url(first_email(web))
    for _ in range(2):  # link scanners may open it more than once
        answer = web.client.get(url)
        assert answer.status_code == 200
    assert web.client.head(url).status_code == 200
    assert web.status("ann@example.com") == "active"
    assert [step_of(m) for m in web.send(after=WEEK)] == ["pain-types"]

    form = lxml.html.document_fromstring(answer.text).forms[0]
    assert (form.method.lower(), form.action) == ("post", urlsplit(url).path)
    assert form.xpath(".//button[@type='submit']")
    pressed = web.client.post(form.action, data=dict(form.form_values()))
    assert pressed.status_code == 200
    assert web.status("ann@example.com") == "unsubscribed"


def test_altered_or_forged_unsubscribe_tokens_change_nothing(web: Web) -> None:
    url = unsubscribe_url(first_email(web, "ann@example.com", "Ann"))
    first_email(web, "bob@example.com", "Bob")
    bob = web.campaign.store.leads.lead_by_email("bob@example.com")
    assert bob is not None
    token = token_of(url)
    other_key = LinkSigner(BASE_URL, "a-different-signing-key-0123456789")
    forged = {
        "pointed at another lead": with_payload(token, lambda data: data.__setitem__(0, bob.id)),
        "signature altered": flip(token, len(token) - 8),
        "payload altered": flip(token, 3),
        "cut short": token[:-4],
        "signed with another key": token_of(other_key.unsubscribe_url(bob.id, CAMPAIGN)),
    }
    for name, bad in forged.items():
        for method in ("POST", "GET"):
            answer = web.client.request(method, f"/u/{bad}", data=ONE_CLICK)
            assert answer.status_code == 400, (name, method)
            assert "not valid" in answer.text, name
    assert {web.status("ann@example.com"), web.status("bob@example.com")} == {"active"}
    assert sorted(step_of(m) for m in web.send(after=WEEK)) == ["pain-types", "pain-types"]


def test_unsubscribe_between_claim_and_smtp_is_honoured(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = unsubscribe_url(first_email(web))
    renderer = web.campaign.engine().renderer()
    render = renderer.render

    def unsubscribe_then_render(*args: Any, **kwargs: Any) -> Any:
        claimed = web.rows("SELECT step_id FROM deliveries WHERE status = 'claimed'")
        assert [row["step_id"] for row in claimed] == ["pain-types"]
        assert web.client.post(url, data=ONE_CLICK).status_code == 200
        return render(*args, **kwargs)

    monkeypatch.setattr(renderer, "render", unsubscribe_then_render)
    report = web.campaign.send_due(START + WEEK)
    assert (report.sent, report.cancelled) == (0, 1), report
    assert len(web.campaign.catcher.messages) == 1, "only step 1 ever arrived"


# -- booking clicks and conversions --------------------------------------------------------


def book(web: Web, message: EmailMessage) -> httpx.Response:
    """Click the booking link of a received email, as a person's browser would: a minute
    after it was sent (a click within seconds is a link scanner's, `web.scanners`)."""
    link = link_named(message, "Book a session")
    assert link.startswith(f"{BASE_URL}/c/"), link
    web.campaign.clock.now += timedelta(minutes=1)
    return web.client.get(link, follow_redirects=False, headers={"User-Agent": "Mozilla/5.0"})


def test_booking_click_redirects_with_utm_records_and_converts(web: Web) -> None:
    message = first_email(web)
    answer = book(web, message)
    assert answer.status_code == 302, answer.text
    target = answer.headers["location"]
    parts = urlsplit(target)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == BOOKING_URL
    assert dict(parse_qsl(parts.query)) == {
        "utm_source": "nurture",
        "utm_medium": "email",
        "utm_campaign": CAMPAIGN,
        "utm_content": "mechanisms",
    }
    lead = web.campaign.store.leads.lead_by_email("ann@example.com")
    assert lead is not None
    (click,) = web.rows("SELECT * FROM clicks")
    assert (click["lead_id"], click["campaign_id"], click["step_id"], click["url"]) == (
        lead.id,
        CAMPAIGN,
        "mechanisms",
        target,
    )
    assert datetime.fromisoformat(click["clicked_at"]) == (START + timedelta(minutes=1)).replace(
        tzinfo=None
    )
    assert (click["source"], click["source_reason"]) == ("person", None)
    assert web.status("ann@example.com") == "converted"
    (conversion,) = web.rows("SELECT step_id, source FROM conversions")
    assert tuple(conversion) == ("mechanisms", "click")
    assert web.send(after=WEEK) == []
    assert web.send(after=4 * WEEK) == []


def test_click_tokens_lead_only_to_links_in_the_templates(web: Web) -> None:
    message = first_email(web)
    link = link_named(message, "Book a session")
    token = token_of(link)
    lead = web.campaign.store.leads.lead_by_email("ann@example.com")
    assert lead is not None
    ours = signer()
    other_key = LinkSigner(BASE_URL, "a-different-signing-key-0123456789")
    refused = {
        "edited to link 1": (with_payload(token, lambda data: data.__setitem__(3, 1)), 400),
        "edited to step 5": (with_payload(token, lambda data: data.__setitem__(2, "booking")), 400),
        "signed with another key": (other_key.click_url(lead.id, CAMPAIGN, "mechanisms", 0), 400),
        "a link the step lacks": (ours.click_url(lead.id, CAMPAIGN, "mechanisms", 1), 404),
        "a negative link": (ours.click_url(lead.id, CAMPAIGN, "mechanisms", -1), 404),
        "a step not in the schedule": (ours.click_url(lead.id, CAMPAIGN, "nope", 0), 404),
        "another campaign": (ours.click_url(lead.id, "other", "mechanisms", 0), 404),
    }
    for name, (bad, status) in refused.items():
        answer = web.client.get(f"/c/{token_of(bad)}", follow_redirects=False)
        assert answer.status_code == status, name
        assert "location" not in answer.headers, name
    assert web.client.head(link, follow_redirects=False).status_code == 302
    clicks = web.rows("SELECT source FROM clicks")
    assert [c["source"] for c in clicks] == ["scanner"], "refusals record nothing, a HEAD a scanner"
    assert web.status("ann@example.com") == "active"

    smuggled = web.client.get(
        f"{link}?url=https://evil.example/&next=https://evil.example/", follow_redirects=False
    )
    assert smuggled.status_code == 302
    assert smuggled.headers["location"].startswith(f"{BOOKING_URL}?utm_source=nurture")


def test_conversion_is_kept_but_the_series_goes_on_without_converted_in_exit_on(
    tmp_path: Path,
) -> None:
    with open_web(
        tmp_path, change=lambda data: data.update(exit_on=["unsubscribed", "bounced"])
    ) as web:
        assert book(web, first_email(web)).status_code == 302
        assert web.status("ann@example.com") == "active"
        assert [tuple(row) for row in web.rows("SELECT step_id FROM conversions")] == [
            ("mechanisms",)
        ]
        assert [step_of(m) for m in web.send(after=WEEK)] == ["pain-types"]


def test_booking_system_marks_a_lead_converted(web: Web) -> None:
    first_email(web, "ann@example.com", "Ann")
    bob_url = unsubscribe_url(first_email(web, "bob@example.com", "Bob"))
    path = "/leads/ann@example.com/converted"
    assert web.client.post(path).status_code == 401
    assert web.client.post("/leads/nobody@example.com/converted", headers=AUTH).status_code == 404
    assert web.client.post("/leads/not-an-address/converted", headers=AUTH).status_code == 400
    assert web.status("ann@example.com") == "active"

    answer = web.client.post(path, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["step"], body["already_converted"]) == (
        "converted",
        "mechanisms",
        False,
    )
    assert web.client.post(path, headers=AUTH).json()["already_converted"] is True

    web.client.post(bob_url, data=ONE_CLICK)
    assert web.client.post("/leads/bob@example.com/converted", headers=AUTH).status_code == 200
    assert web.status("bob@example.com") == "unsubscribed", "booking does not undo an opt-out"
    rows = web.rows("SELECT step_id, source FROM conversions ORDER BY id")
    assert [tuple(row) for row in rows] == [("mechanisms", "booking-system")] * 2
    assert web.send(after=WEEK) == []


def test_status_shows_clicks_and_conversions_per_step(web: Web) -> None:
    book(web, first_email(web, "ann@example.com", "Ann"))
    first_email(web, "bob@example.com", "Bob")
    db = f"sqlite:///{web.campaign.db_path}"
    schedule = str(web.campaign.schedule_path)

    result = invoke("--schedule", schedule, "--db", db, "status", "--json")
    assert result.exit_code == 0, result.output
    steps = {row["step"]: row for row in json.loads(result.stdout)["steps"]}
    assert [steps["mechanisms"][k] for k in ("sent", "clicked", "converted")] == [2, 1, 1]
    assert [steps["pain-types"][k] for k in ("pending", "clicked", "converted")] == [1, 0, 0]

    table = invoke("--schedule", schedule, "--db", db, "status")
    assert table.exit_code == 0, table.output
    header = next(line for line in table.stdout.splitlines() if "step" in line)
    assert "clicked" in header and "converted" in header, table.stdout


# -- every email, end to end -----------------------------------------------------------------


def test_every_email_of_the_series_carries_the_compliance_headers_and_footer(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = "https://go.evergreen-acupuncture.example.com"
    monkeypatch.setenv("CAMPAIGN_BASE_URL", f"{base}/")
    monkeypatch.setenv("CAMPAIGN_SECRET_KEY", SIGNING_KEY)
    monkeypatch.setenv("CAMPAIGN_SMTP_PORT", str(web.campaign.catcher.port))
    for email, name in (("ann@example.com", "Ann"), ("bob@example.com", "")):
        assert web.signup(email, first_name=name).status_code == 201
    store, clock = web.campaign.store, web.campaign.clock
    engine = Engine.from_env(web.campaign.schedule_path, store, clock)
    for _ in range(10):
        due = store.queue.next_due_at(CAMPAIGN)
        if due is None:
            break
        clock.now = max(clock.now, due)
        assert engine.send_due().ok
    caught = web.campaign.catcher.messages
    assert sorted((c.recipients[0], step_of(c.message)) for c in caught) == sorted(
        (email, step) for email in ("ann@example.com", "bob@example.com") for step in STEPS
    )

    for item in caught:
        message, where = item.message, (item.recipients[0], step_of(item.message))
        url = unsubscribe_url(message)
        assert url.startswith(f"{base}/u/"), where
        lead = store.leads.lead_by_email(item.recipients[0])
        assert lead is not None
        assert LinkSigner(base, SIGNING_KEY).read_unsubscribe(token_of(url)).lead_id == lead.id
        assert "<mailto:frontdesk@evergreen-acupuncture.example.com?subject=unsubscribe>" in str(
            message["List-Unsubscribe"]
        ), where
        assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click", where
        assert f"<{CAMPAIGN}.evergreen-acupuncture.example.com>" in str(message["List-Id"]), where
        for part in (text_part(message), html_part(message)):
            assert POSTAL_ADDRESS in part and url in part, where
        hrefs = [a.get("href") for a in lxml.html.document_fromstring(html_part(message)).iter("a")]
        assert hrefs and all(h.startswith((f"{base}/c/", f"{base}/u/")) for h in hrefs), where


# -- the legal footer and the confirmation link are required -------------------------------


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("<p>{{ clinic.name }}, {{ clinic.postal_address }}</p>", "postal address"),
        ('<a href="{{ links.unsubscribe }}">Unsubscribe</a>', "no unsubscribe link"),
    ],
    ids=["postal-address", "unsubscribe-link"],
)
def test_schedule_check_refuses_templates_without_the_legal_footer(
    schedule_copy, line: str, says: str
) -> None:
    layout = schedule_copy.templates / "layout.html.j2"
    source = layout.read_text(encoding="utf-8")
    assert line in source, "has the shipped layout changed?"
    layout.write_text(source.replace(line, ""), encoding="utf-8")
    result = invoke("--schedule", str(schedule_copy.path), "schedule", "check")
    assert result.exit_code == 2, result.output
    assert says in result.stderr, result.stderr


def double_opt_in(data: dict[str, Any]) -> None:
    data["double_opt_in"] = True
    data["confirm"] = {"subject": "Please confirm your subscription", "template": "confirm.html.j2"}


def test_schedule_check_refuses_a_confirmation_email_without_its_link(schedule_copy) -> None:
    edit_schedule(schedule_copy.path, double_opt_in)
    (schedule_copy.templates / "confirm.html.j2").write_text(
        CONFIRM_TEMPLATE.replace("{{ links.confirm }}", "https://example.com/"), encoding="utf-8"
    )
    result = invoke("--schedule", str(schedule_copy.path), "schedule", "check")
    assert result.exit_code == 2, result.output
    assert "no confirmation link" in result.stderr, result.stderr


# -- double opt-in ---------------------------------------------------------------------------


def test_double_opt_in_waits_for_the_confirmation_click(tmp_path: Path) -> None:
    with open_web(tmp_path, change=double_opt_in) as web:
        (web.campaign.schedule_path.parent / "templates/emails/confirm.html.j2").write_text(
            CONFIRM_TEMPLATE, encoding="utf-8"
        )
        answer = web.signup("ann@example.com", first_name="Ann")
        assert answer.status_code == 201, answer.text
        assert (answer.json()["status"], answer.json()["confirmation"]) == ("pending", "queued")
        (confirmation,) = web.send()  # the sender delivers it, as every email
        assert str(confirmation["Subject"]) == "Please confirm your subscription"
        assert unsubscribe_url(confirmation) in text_part(confirmation)
        assert POSTAL_ADDRESS in text_part(confirmation)
        assert web.send(after=timedelta(hours=1)) == [], "nothing is sent before confirming"

        link = link_named(confirmation, "Yes, send me the emails")
        assert link.startswith(f"{BASE_URL}/confirm/")
        assert link in text_part(confirmation)
        assert web.client.get(f"/confirm/{flip(token_of(link), 5)}").status_code == 400
        page = web.client.get(link)
        assert page.status_code == 200 and 'method="post"' in page.text
        assert web.status("ann@example.com") == "pending", "opening the link confirms nothing"

        assert web.client.post(link).status_code == 200
        assert web.status("ann@example.com") == "active"
        assert [step_of(m) for m in web.send()] == ["mechanisms"]
        assert web.client.post(link).status_code == 200, "a second click is harmless"
        assert len(web.rows("SELECT * FROM deliveries")) == 3  # confirm, step 1 sent; step 2


def test_double_opt_in_signup_again_keeps_one_confirmation_queued(tmp_path: Path) -> None:
    with open_web(tmp_path, change=double_opt_in) as web:
        (web.campaign.schedule_path.parent / "templates/emails/confirm.html.j2").write_text(
            CONFIRM_TEMPLATE, encoding="utf-8"
        )
        assert web.signup("ann@example.com").status_code == 201
        again = web.signup("ann@example.com")
        assert (again.status_code, again.json()["confirmation"]) == (200, "queued")
        subjects = [str(m["Subject"]) for m in web.send()]
        assert subjects == ["Please confirm your subscription"]


@pytest.mark.parametrize("email", ["josé@exämple.com", "用户@例子.广告"])
def test_double_opt_in_reaches_an_international_address_over_smtputf8(
    tmp_path: Path, email: str
) -> None:
    with open_web(tmp_path, change=double_opt_in) as web:
        (web.campaign.schedule_path.parent / "templates/emails/confirm.html.j2").write_text(
            CONFIRM_TEMPLATE, encoding="utf-8"
        )
        answer = web.signup(email, first_name="José")
        assert answer.status_code == 201, answer.text
        assert (answer.json()["status"], answer.json()["confirmation"]) == ("pending", "queued")
        web.send()
        (caught,) = web.campaign.catcher.messages
        assert caught.recipients == [email]
        # An SMTPUTF8 message carries its headers as raw UTF-8, so it is read as text.
        confirmation = message_from_string(caught.data.decode("utf-8"), policy=default_policy)
        to = confirmation["To"].addresses[0]
        assert (to.display_name, to.addr_spec) == ("José", email)
        assert str(confirmation["Subject"]) == "Please confirm your subscription"

        link = link_named(confirmation, "Yes, send me the emails")
        assert web.client.post(link).status_code == 200
        assert web.status(email) == "active"
        assert [step_of(m) for m in web.send()] == ["mechanisms"]


# -- the real command over real HTTP -------------------------------------------------------


@pytest.mark.slow
def test_run_py_web_serves_signups_over_http(tmp_path: Path) -> None:
    with open_campaign(tmp_path) as campaign:
        port = free_port()
        server = campaign.popen("web", "--port", str(port), env={"CAMPAIGN_API_TOKEN": API_TOKEN})
        base = f"http://127.0.0.1:{port}"
        try:
            wait_listening(server, f"{base}/u/probe")
            with httpx.Client(base_url=base, timeout=10) as client:
                body = {"email": "web@example.com", "first_name": "Web"}
                assert client.post("/leads", json=body).status_code == 401
                assert client.post("/leads", json=body, headers=AUTH).status_code == 201
                assert client.post("/leads", json=body, headers=AUTH).status_code == 200
        finally:
            server.terminate()
            server.communicate(timeout=10)
        due = campaign.store.queue.next_due_at(CAMPAIGN)
        assert due is not None
        assert campaign.send_due(due).sent == 1
        assert campaign.received() == [("web@example.com", "How acupuncture eases back pain")]


def test_access_log_keeps_only_the_start_of_a_token():
    import logging

    from campaign.web.app import RedactTokens

    token = "eyJhbGciOi.very-long-signed-token-body"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", f"/u/{token}", "1.1", 200),
        None,
    )
    RedactTokens().filter(record)
    line = record.getMessage()
    assert token not in line
    assert "/u/eyJhbG…" in line


def test_an_address_in_other_letter_case_is_the_same_lead_over_http(web: Web) -> None:
    """The same mailbox typed twice in different case is one lead, mailed once, and the
    booking system finds it whichever case it uses; the address keeps the case first typed."""
    first = web.signup("Ana.Maria@Example.com", first_name="Ana")
    assert first.status_code == 201, first.text
    again = web.signup("ana.maria@example.COM", first_name="Ana")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["email"] == "Ana.Maria@example.com"
    messages = web.send()
    assert [str(m["To"].addresses[0].addr_spec) for m in messages] == ["Ana.Maria@example.com"]
    answer = web.client.post("/leads/ANA.MARIA@EXAMPLE.COM/converted", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["id"], answer.json()["status"]) == (first.json()["id"], "converted")
