"""Page sizes and page tokens of server/domain/pagination.py."""

from __future__ import annotations

import base64
import json
import re

import pytest

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    encode_token,
    parse_page,
)

LISTING = "DescribeInvocations"
FILTERS: tuple[object, ...] = ("cn-hangzhou", "c-1", None)


def test_page_size_limits_are_the_products() -> None:
    assert DEFAULT_PAGE_SIZE == 10
    assert MAX_PAGE_SIZE == 50


def test_page_size_zero_means_ten() -> None:
    page = parse_page(LISTING, FILTERS, 0, "")
    assert page.size == 10
    assert page.after_id is None


@pytest.mark.parametrize("size", [1, 10, 25, 50])
def test_page_size_within_bounds_is_kept(size: int) -> None:
    assert parse_page(LISTING, FILTERS, size, "").size == size


@pytest.mark.parametrize("size", [51, -1, 1000])
def test_page_size_out_of_bounds_is_rejected(size: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_page(LISTING, FILTERS, size, "")
    assert caught.value.reason == reasons.INVALID_PAGE_SIZE
    assert caught.value.field == "page_size"


def test_first_page_has_no_after_id() -> None:
    assert parse_page(LISTING, FILTERS, 20, "").after_id is None


def test_next_token_round_trips_to_the_last_id() -> None:
    first = parse_page(LISTING, FILTERS, 20, "")
    token = first.next_token("t-0123456789abcdefghjk")
    second = parse_page(LISTING, FILTERS, 20, token)
    assert second.after_id == "t-0123456789abcdefghjk"
    assert second.size == 20
    assert second.fingerprint == first.fingerprint


def test_token_is_accepted_with_another_page_size() -> None:
    token = parse_page(LISTING, FILTERS, 5, "").next_token("t-1")
    assert parse_page(LISTING, FILTERS, 0, token).after_id == "t-1"


def test_tokens_are_url_safe_without_padding() -> None:
    page = parse_page(LISTING, FILTERS, 0, "")
    for n in range(1, 8):
        last_id = "?>~\u00ff" * n
        token = page.next_token(last_id)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token), token
        assert parse_page(LISTING, FILTERS, 0, token).after_id == last_id


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "not-a-token",
        "\u00e9\u00e9\u00e9",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'"just a string"').decode(),
        base64.urlsafe_b64encode(b'{"f": "x"}').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    ],
)
def test_garbage_token_is_rejected(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_page(LISTING, FILTERS, 0, token)
    assert caught.value.reason == reasons.INVALID_PAGE_TOKEN
    assert caught.value.field == "page_token"


def test_token_from_another_listing_is_rejected() -> None:
    token = parse_page("DescribeCommands", FILTERS, 0, "").next_token("c-1")
    with pytest.raises(InvalidArgument) as caught:
        parse_page(LISTING, FILTERS, 0, token)
    assert caught.value.reason == reasons.INVALID_PAGE_TOKEN
    assert caught.value.field == "page_token"


@pytest.mark.parametrize(
    "other_filters",
    [
        ("cn-shanghai", "c-1", None),
        ("cn-hangzhou", "c-2", None),
        ("cn-hangzhou", "c-1"),
        ("cn-hangzhou", "c-1", "RUNNING"),
    ],
)
def test_token_made_with_other_filters_is_rejected(other_filters: tuple[object, ...]) -> None:
    token = parse_page(LISTING, FILTERS, 0, "").next_token("t-1")
    with pytest.raises(InvalidArgument) as caught:
        parse_page(LISTING, other_filters, 0, token)
    assert caught.value.reason == reasons.INVALID_PAGE_TOKEN
    assert caught.value.field == "page_token"


def test_token_whose_after_id_is_not_a_string_is_rejected() -> None:
    fingerprint = parse_page(LISTING, FILTERS, 0, "").fingerprint
    raw = json.dumps({"f": fingerprint, "a": 42}).encode()
    token = base64.urlsafe_b64encode(raw).decode()
    with pytest.raises(InvalidArgument) as caught:
        parse_page(LISTING, FILTERS, 0, token)
    assert caught.value.reason == reasons.INVALID_PAGE_TOKEN


def test_encode_token_is_what_next_token_returns() -> None:
    page = parse_page(LISTING, FILTERS, 0, "")
    assert page.next_token("t-9") == encode_token(page.fingerprint, "t-9")


def test_page_size_is_checked_before_the_token() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_page(LISTING, FILTERS, 51, "garbage!")
    assert caught.value.reason == reasons.INVALID_PAGE_SIZE
