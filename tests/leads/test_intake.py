"""`run.py leads import FILE`: good rows go in, each bad row is named by its line and skipped,
a broken file is refused as a whole, and importing the same file again changes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given
from hypothesis import strategies as st

from campaign.leads.intake import normalize_email
from harness.engine import Campaign

GOOD = (
    "email,first_name,timezone,Company Name,plan\n"
    "ann@example.com,Ann,America/Chicago,Acme,gold\n"
    "Bob@Example.COM,Bob,,,\n"
    "cem@example.com,Cem,Europe/London,Cemco,\n"
)
MIXED = (
    "email,first_name,timezone\n"  # line 1
    "ann@example.com,Ann,America/Chicago\n"  # 2: good
    "not-an-address,Bob,\n"  # 3: bad address
    "cem@example.com,Cem,Mars/Olympus\n"  # 4: unknown time zone
    "ann@example.com,Ann again,\n"  # 5: duplicate in the file
    '"dee@example.com","Dee\r\nSmith",\n'  # 6-7: a line break inside a quoted field
    "eve@example.com,Eve,Europe/Paris\n"  # 8: good
    "fay@example.com,Fay\n"  # 9: a field short
)
MIXED_PROBLEMS = [
    ("3", "email: 'not-an-address' is not a valid email address"),
    ("4", "timezone: 'Mars/Olympus' is not a known time zone"),
    ("5", "email: ann@example.com already appears on line 2"),
    ("6", "first_name: contains control characters"),
    ("9", "has 2 fields but the header has 3"),
]


def write(campaign: Campaign, name: str, content: str | bytes) -> Path:
    path = campaign.db_path.parent / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def table_sizes(campaign: Campaign) -> dict[str, int]:
    with sqlite3.connect(campaign.db_path) as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("leads", "enrollments", "deliveries")
        }


def problems(stderr: str, file: str) -> list[tuple[str, str]]:
    """(line, message) of every `FILE:LINE: message` the command printed."""
    found = []
    for text in stderr.splitlines():
        name, _, rest = text.partition(":")
        line, _, message = rest.partition(": ")
        if name == file and line.isdigit():
            found.append((line, message))
    return found


@pytest.mark.slow
def test_good_file_is_imported_with_extra_columns_as_attributes(campaign: Campaign) -> None:
    result = campaign.cli("leads", "import", str(write(campaign, "good.csv", GOOD)))
    assert "imported 3, already present 0, rejected 0" in result.stdout
    ann = campaign.store.leads.lead_by_email("ann@example.com")
    assert ann is not None and ann.first_name == "Ann" and ann.timezone == "America/Chicago"
    assert ann.attributes == {"company_name": "Acme", "plan": "gold"}
    bob = campaign.store.leads.lead_by_email("Bob@example.com")  # the domain is lower-cased
    assert bob is not None and bob.attributes == {} and bob.timezone is None
    assert sorted(campaign.pending()) == [
        (email, "mechanisms") for email in ("Bob@example.com", "ann@example.com", "cem@example.com")
    ]


@pytest.mark.slow
def test_bad_rows_are_named_by_line_and_the_rest_imported(campaign: Campaign) -> None:
    path = write(campaign, "mixed.csv", MIXED)
    result = campaign.cli("leads", "import", str(path), expect=1)
    found = problems(result.stderr, "mixed.csv")
    assert [line for line, _ in found] == [line for line, _ in MIXED_PROBLEMS], result.stderr
    for (_, message), (_, expected) in zip(found, MIXED_PROBLEMS, strict=True):
        assert message.startswith(expected), message
    assert "imported 2, already present 0, rejected 5" in result.stdout
    assert {email for email, _ in campaign.pending()} == {"ann@example.com", "eve@example.com"}

    before = table_sizes(campaign)
    again = campaign.cli("leads", "import", str(path), expect=1)
    assert "imported 0, already present 2, rejected 5" in again.stdout
    assert table_sizes(campaign) == before == {"leads": 2, "enrollments": 2, "deliveries": 2}


@pytest.mark.slow
def test_latin1_row_is_named_and_the_rest_imported(campaign: Campaign) -> None:
    latin1 = "email,first_name\nfay@example.com,François\ngus@example.com,Gus\n".encode("latin-1")
    result = campaign.cli("leads", "import", str(write(campaign, "latin1.csv", latin1)), expect=1)
    ((line, message),) = problems(result.stderr, "latin1.csv")
    assert line == "2" and "not UTF-8" in message
    assert "imported 1, already present 0, rejected 1" in result.stdout
    assert campaign.store.leads.lead_by_email("gus@example.com") is not None
    assert campaign.store.leads.lead_by_email("fay@example.com") is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "is empty"), ("name,zone\nAnn,UTC\n", "line 1: the header row has no 'email' column")],
    ids=["empty", "no-email-header"],
)
def test_unreadable_file_is_refused_as_a_whole(
    campaign: Campaign, content: str, expected: str
) -> None:
    result = campaign.cli("leads", "import", str(write(campaign, "leads.csv", content)), expect=2)
    assert expected in result.stderr and "leads.csv" in result.stderr, result.stderr
    assert table_sizes(campaign)["leads"] == 0


# -- email addresses: the shortcut for a domain already accepted gives the same answer --------

LONG_DOMAIN = ("c" * 62 + ".") * 3 + "com"  # 192 characters: 254 with a 61-character local
FULL_WIDTH_DOMAIN = "ａ" * 30 + "." + "ｂ" * 32 + ".com"  # ASCII once normalised, longer as written
LOCAL_PARTS = st.one_of(
    st.text(alphabet=st.sampled_from("aZ09.!#$%&'*+/=?^_`{|}~-\"(),:;<>@[\\] é"), max_size=70),
    st.text(alphabet=st.sampled_from("ab.+"), min_size=55, max_size=70),  # near the limits
    st.sampled_from(["info", "Info", "SALES", "postmaster", "Ann", "ann"]),  # role names
)
DOMAINS = st.sampled_from(
    [
        "example.com",
        "Example.COM",
        "bücher.de",
        "xn--bcher-kva.de",
        "a.test",
        "localhost",
        "123.com",
        "-bad.com",
        "exa_mple.com",
        "a" * 63 + ".com",
        "b" * 64 + ".com",
        LONG_DOMAIN,
        FULL_WIDTH_DOMAIN,
        "[127.0.0.1]",
        "",
    ]
)


def checked_by_email_validator(address: str) -> str | None:
    try:
        normal = validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        return None
    local, _, domain = normal.rpartition("@")
    return f"{local}@{domain.lower()}"


def normalized(address: str) -> str | None:
    try:
        return normalize_email(address)
    except ValueError:
        return None


@given(LOCAL_PARTS, DOMAINS, LOCAL_PARTS)
@example("a" * 61, LONG_DOMAIN, "b" * 62)  # one character too long in all
@example("ann", "example.com", "a" * 65)  # a local part one character too long
@example("ann", "example.com", "a.b")
@example("ann", "example.com", "a..b")
@example("ann", "example.com", "Info")  # email_validator lower-cases role names
@example("ann", FULL_WIDTH_DOMAIN, "z" * 64)  # too long as written
def test_an_address_at_a_known_domain_is_judged_as_email_validator_judges_it(
    first: str, domain: str, second: str
) -> None:
    for local in (first, second):  # the second one may take the shortcut
        address = f"{local}@{domain}"
        if "\n" not in address:
            assert normalized(address) == checked_by_email_validator(address), address


# -- quoting problems and duplicate columns ------------------------------------------------

STRAY_QUOTE = (
    "email,first_name,timezone\n"  # 1
    "ann@example.com,Ann,UTC\n"  # 2
    'bob@example.com,"Bob,UTC\n'  # 3: a lone quote opens a field that never closes
    + "".join(f"lead{n:03d}@example.com,Lead {n},UTC\n" for n in range(4, 40))  # 4-39
    + 'cem@example.com,"Cem",UTC\n'  # 40: a quoted field that is well formed
    + 'dee@example.com,"Dee "the" Smith",UTC\n'  # 41: text after a closing quote
    + "eve@example.com,Eve,UTC\n"  # 42
)


@pytest.mark.slow
def test_a_stray_quote_is_reported_where_it_starts_and_swallows_no_row(
    campaign: Campaign,
) -> None:
    path = write(campaign, "quote.csv", STRAY_QUOTE)
    result = campaign.cli("leads", "import", str(path), expect=1)
    found = problems(result.stderr, "quote.csv")
    assert [line for line, _ in found] == ["3", "41"], result.stderr
    assert "quote" in found[0][1] and "quote" in found[1][1], found
    assert "imported 39, already present 0, rejected 2" in result.stdout, result.stdout
    assert campaign.store.leads.lead_by_email("lead004@example.com") is not None
    cem = campaign.store.leads.lead_by_email("cem@example.com")
    assert cem is not None and cem.first_name == "Cem"
    assert campaign.store.leads.lead_by_email("bob@example.com") is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("header", "first", "second"),
    [
        ("email,First Name,first_name", "First Name", "first_name"),
        ("email,first_name,FIRST_NAME ", "first_name", "FIRST_NAME"),
        ("Email,email,first_name", "Email", "email"),
    ],
)
def test_columns_that_mean_the_same_refuse_the_file_naming_both(
    campaign: Campaign, header: str, first: str, second: str
) -> None:
    content = f"{header}\nann@example.com,Ann,Annie\n"
    result = campaign.cli("leads", "import", str(write(campaign, "dup.csv", content)), expect=2)
    assert f"'{first}'" in result.stderr and f"'{second}'" in result.stderr, result.stderr
    assert table_sizes(campaign)["leads"] == 0


@pytest.mark.slow
def test_an_address_in_other_letter_case_is_the_same_lead(campaign: Campaign) -> None:
    """`leads add` and `leads import` know a lead whatever the case of the address."""
    added = campaign.cli("leads", "add", "Ana@Example.com", "--name", "Ana")
    assert "added lead" in added.stdout, added.stdout
    again = campaign.cli("leads", "add", "ana@example.com", "--name", "Ana")
    assert "already exists" in again.stdout, again.stdout
    content = (
        "email,first_name\n"
        "ANA@example.com,Ana\n"  # 2: the lead added above
        "Bo@example.com,Bo\n"  # 3
        "bo@EXAMPLE.com,Bo again\n"  # 4: line 3 again
    )
    result = campaign.cli("leads", "import", str(write(campaign, "case.csv", content)), expect=1)
    assert problems(result.stderr, "case.csv") == [
        ("4", "email: bo@example.com already appears on line 3")
    ], result.stderr
    assert "imported 1, already present 1, rejected 1" in result.stdout, result.stdout
    assert sorted(campaign.pending()) == [
        ("Ana@example.com", "mechanisms"),
        ("Bo@example.com", "mechanisms"),
    ]


# The header of an audience export from a popular email tool, as it writes it: quoted names,
# `Email Address` for the address, its own columns kept as attributes.
TOOL_EXPORT = (
    '"Email Address","First Name","Last Name","Phone Number","MEMBER_RATING","OPTIN_TIME",'
    '"TIMEZONE","CC","LEID","TAGS"\n'
    'ana.souza@example.com,Ana,Souza,"",2,"2026-10-01 10:00:00",Europe/Lisbon,PT,1001,'
    '"""Back pain"""\n'
    'bob@example.com,"Bob ""Bobby""",Stone,,2,,America/Chicago,US,1002,\n'
)


@pytest.mark.slow
def test_an_export_from_an_email_tool_imports_as_it_is(campaign: Campaign) -> None:
    """`Email Address`, `E-mail` and the like name the address column; nobody should have to
    rename a column before importing a list exported from the tool they leave."""
    result = campaign.cli("leads", "import", str(write(campaign, "export.csv", TOOL_EXPORT)))
    assert "imported 2, already present 0, rejected 0" in result.stdout, result.stdout
    ana = campaign.store.leads.lead_by_email("ana.souza@example.com")
    assert ana is not None and (ana.first_name, ana.timezone) == ("Ana", "Europe/Lisbon")
    assert ana.attributes["last_name"] == "Souza" and ana.attributes["tags"] == '"Back pain"'
    bob = campaign.store.leads.lead_by_email("bob@example.com")
    assert bob is not None and bob.first_name == 'Bob "Bobby"'


@pytest.mark.slow
def test_two_columns_that_both_name_the_address_refuse_the_file(campaign: Campaign) -> None:
    content = "Email,E-mail Address\nann@example.com,ann@example.org\n"
    result = campaign.cli("leads", "import", str(write(campaign, "two.csv", content)), expect=2)
    assert "'Email'" in result.stderr and "'E-mail Address'" in result.stderr, result.stderr
