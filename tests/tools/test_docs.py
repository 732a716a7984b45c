"""Tests for the bundled document corpus and its BM25 search tools."""

import pytest

from tools.docs import CORPUS_DIR, list_documents, read_document, search_documents


def test_corpus_is_bundled_and_sized() -> None:
    files = sorted(CORPUS_DIR.glob("*.md"))
    assert 12 <= len(files) <= 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# "), path.name
        assert 80 <= len(text.split()) <= 250, path.name


def test_list_documents() -> None:
    docs = list_documents.invoke({})
    ids = [d["doc_id"] for d in docs]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids)) == len(list(CORPUS_DIR.glob("*.md")))
    assert {"doc_id": "refund-policy", "title": "Refund Policy"} in docs


@pytest.mark.parametrize(
    ("query", "expected_top"),
    [
        ("how long do refunds take", "refund-policy"),
        ("I lost my card", "card-replacement"),
        ("hotel limit per night on business trips", "travel-expenses"),
        ("forgot password reset link", "password-reset"),
        ("is support open on saturday", "support-hours"),
        ("how long is customer data kept", "data-retention"),
        ("carry over unused vacation days", "annual-leave"),
        ("home office allowance", "remote-work"),
        ("backup codes lost phone", "two-factor-authentication"),
        ("do loyalty points expire", "loyalty-program"),
        ("cancel my order", "order-cancellation"),
        ("broken zip repair", "warranty-claims"),
        ("competitor sells it cheaper", "price-match"),
        ("international delivery customs duties", "shipping-times"),
        ("gift card balance", "gift-cards"),
        ("export or erase my personal data", "privacy-requests"),
    ],
)
def test_search_documents_ranks_the_right_policy_first(query: str, expected_top: str) -> None:
    results = search_documents.invoke({"query": query, "k": 3})
    assert results[0]["doc_id"] == expected_top
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_search_documents_result_shape_and_snippet() -> None:
    (top,) = search_documents.invoke({"query": "hotel per night", "k": 1})
    assert top["title"] == "Employee Travel Expense Policy"
    assert "180 per night" in top["snippet"]
    assert top["score"] > 0


def test_search_documents_no_match_and_validation() -> None:
    assert search_documents.invoke({"query": "xyzzy plugh"}) == []
    with pytest.raises(ValueError, match="no searchable words"):
        search_documents.invoke({"query": "the of and"})
    with pytest.raises(ValueError, match="k must be between 1 and 10"):
        search_documents.invoke({"query": "refund", "k": 0})


def test_search_is_deterministic() -> None:
    first = search_documents.invoke({"query": "refund card", "k": 5})
    assert first == search_documents.invoke({"query": "refund card", "k": 5})


def test_read_document() -> None:
    doc = read_document.invoke({"doc_id": "support-hours"})
    assert doc["title"] == "Customer Support Hours and Channels"
    assert "8 am to 8 pm" in doc["text"]
    assert doc["word_count"] == len(doc["text"].split())
    assert read_document.invoke({"doc_id": "Support-Hours.md"})["doc_id"] == "support-hours"


def test_read_document_rejects_unknown_and_path_like_ids() -> None:
    with pytest.raises(ValueError, match="no document with doc_id 'nope'"):
        read_document.invoke({"doc_id": "nope"})
    with pytest.raises(ValueError, match="malformed"):
        read_document.invoke({"doc_id": "../pyproject"})
