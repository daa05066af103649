"""shared.bundle.references: reference forms, where documents make them, what they may name."""

from __future__ import annotations

import pytest

from shared.bundle.references import (
    Reference,
    Site,
    UnresolvableReference,
    body_mentions,
    candidate_names,
    candidate_paths,
    canonical_source,
    document_references,
    find_mentions,
    is_valid_name,
    parse_reference,
    split_name,
    stored_name,
)
from shared.bundle.validate import validate_document


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foundation", Reference("foundation")),
        ("acme:behaviors/review", Reference("acme", "behaviors/review")),
        ("@acme:behaviors/review", Reference("acme", "behaviors/review")),
        ("  acme:context/style.md ", Reference("acme", "context/style.md")),
        (
            "git+https://example.invalid/acme/design-kit@main#subdirectory=behaviors/design.yaml",
            Reference(
                source_uri="git+https://example.invalid/acme/design-kit@main",
                subdirectory="behaviors/design.yaml",
            ),
        ),
        (
            "git+https://github.com/microsoft/amplifier-foundation@main",
            Reference(source_uri="git+https://github.com/microsoft/amplifier-foundation@main"),
        ),
        (
            "git+https://h.example/o/r#egg=x&subdirectory=/bundles/a/",
            Reference(source_uri="git+https://h.example/o/r", subdirectory="bundles/a"),
        ),
    ],
)
def test_include_forms_parse(text: str, expected: Reference) -> None:
    assert parse_reference(text, Site.INCLUDE) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "./bundles/variant.yaml",
        "../x",
        "/etc/passwd",
        "https://example.com/x.yaml",
        "acme:../secrets",
        "acme:a//b",
        "acme:/abs",
        "acme:",
        ":path",
        "-bad",
        "acme:x\\y",
        "git+https://host/org/repo#subdirectory=../up",
        "git+https://",
    ],
)
def test_other_strings_are_unresolvable_with_a_reason(text: str) -> None:
    with pytest.raises(UnresolvableReference) as caught:
        parse_reference(text, Site.INCLUDE)
    assert str(caught.value)


def test_bare_agent_and_context_names_belong_to_the_documents_package() -> None:
    assert parse_reference("reviewer", Site.AGENT, "acme") == Reference(
        "acme", "reviewer", bare=True
    )
    with pytest.raises(UnresolvableReference, match="NS:NAME"):
        parse_reference("reviewer", Site.AGENT)
    # A leading @ is an include spelling only.
    with pytest.raises(UnresolvableReference):
        parse_reference("@acme:reviewer", Site.AGENT, "acme")


def test_source_fields() -> None:
    reference = parse_reference("git+https://GitHub.com/Acme/Kit.git@feature/x#subdirectory=a")
    assert reference.is_source
    assert reference.git_ref == "feature/x"
    assert reference.source_key == "git+https://github.com/Acme/Kit"
    assert not parse_reference("tandem:dev").is_source
    assert parse_reference("tandem:dev").shipped
    assert parse_reference("tandem").shipped
    assert not parse_reference("acme").shipped


@pytest.mark.parametrize(
    ("uri", "canonical"),
    [
        (
            "git+https://example.invalid/acme/design-kit@main",
            "git+https://example.invalid/acme/design-kit",
        ),
        (
            "git+https://example.invalid/acme/design-kit",
            "git+https://example.invalid/acme/design-kit",
        ),
        (
            "git+https://EXAMPLE.invalid/acme/design-kit.git@v2/",
            "git+https://example.invalid/acme/design-kit",
        ),
        (
            "git+https://token@example.invalid/acme/kit@main#subdirectory=x",
            "git+https://example.invalid/acme/kit",
        ),
        ("  ./local/folder/ ", "./local/folder"),
        ("", ""),
    ],
)
def test_canonical_source_ignores_the_ref(uri: str, canonical: str) -> None:
    assert canonical_source(uri) == canonical


def test_candidate_names_per_site() -> None:
    agent = parse_reference("acme:reviewer", Site.AGENT)
    assert candidate_names(agent, Site.AGENT) == ("acme:agents/reviewer", "acme:reviewer")
    bare_agent = parse_reference("reviewer", Site.AGENT, "acme")
    assert candidate_names(bare_agent, Site.AGENT)[0] == "acme:agents/reviewer"
    explicit = parse_reference("acme:agents/reviewer.md", Site.AGENT)
    assert candidate_names(explicit, Site.AGENT) == (
        "acme:agents/reviewer.md",
        "acme:agents/reviewer",
    )
    behavior = parse_reference("acme:behaviors/review.yaml")
    assert candidate_names(behavior, Site.INCLUDE) == (
        "acme:behaviors/review.yaml",
        "acme:behaviors/review",
    )
    assert candidate_names(parse_reference("acme"), Site.INCLUDE) == ("acme",)
    context = parse_reference("acme:context/style", Site.CONTEXT)
    assert candidate_names(context, Site.CONTEXT) == ("acme:context/style", "acme:context/style.md")
    bare_context = parse_reference("guidelines", Site.CONTEXT, "acme")
    assert candidate_names(bare_context, Site.CONTEXT) == (
        "acme:context/guidelines.md",
        "acme:context/guidelines",
        "acme:guidelines",
        "acme:guidelines.md",
    )
    source = parse_reference("git+https://h.example/o/r@main")
    assert candidate_names(source, Site.INCLUDE) == ()


def test_candidate_paths_of_source_references() -> None:
    root = parse_reference("git+https://h.example/o/r@main")
    assert candidate_paths(root) == ("bundle.md", "bundle.yaml")
    file = parse_reference("git+https://h.example/o/r@main#subdirectory=behaviors/design.yaml")
    assert candidate_paths(file)[0] == "behaviors/design.yaml"
    folder = parse_reference("git+https://h.example/o/r@main#subdirectory=bundles/web")
    assert candidate_paths(folder) == (
        "bundles/web",
        "bundles/web.yaml",
        "bundles/web.yml",
        "bundles/web.md",
        "bundles/web/bundle.md",
        "bundles/web/bundle.yaml",
    )
    assert candidate_paths(parse_reference("acme")) == ()


def test_stored_names_of_package_files() -> None:
    assert stored_name("acme", "bundle.md", document=True) == "acme"
    assert stored_name("acme", "bundle.yaml", document=True) == "acme"
    assert stored_name("acme", "behaviors/review.yaml", document=True) == "acme:behaviors/review"
    assert stored_name("acme", "agents/reviewer.md", document=True) == "acme:agents/reviewer"
    assert stored_name("acme", "context/style.md", document=False) == "acme:context/style.md"
    assert stored_name("acme", "bundle.md", document=False) == "acme:bundle.md"
    assert split_name("acme:context/style.md") == ("acme", "context/style.md")
    assert split_name("acme") == ("acme", "")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("dev", True),
        ("acme:behaviors/review", True),
        ("acme:context/a-b_c.1+2.md", True),
        ("acme:.github/notes.md", True),
        ("acme:a:b", False),
        ("acme:../x", False),
        ("acme:a/./b", False),
        ("acme:a//b", False),
        ("acme:/a", False),
        ("acme:a/", False),
        ("acme:", False),
        ("acme:a b", False),
        ("acme:a\\b", False),
        ("-acme", False),
        ("a" * 128, True),
        ("a" * 129, False),
        ("acme:" + "/".join(["x" * 100] * 3), False),
    ],
)
def test_config_names(name: str, valid: bool) -> None:
    assert is_valid_name(name) is valid


ACME_BUNDLE = """\
---
bundle:
  name: acme
includes:
  # Acme behaviors
  - bundle: acme:behaviors/review
  - acme:behaviors/quiet
  - bundle: git+https://example.invalid/acme/design-kit@main#subdirectory=behaviors/design.yaml
  - bundle: ./local.yaml
  - bundle: 42
agents:
  include:
    - acme:reviewer
    - helper
context:
  include:
    - acme:context/style.md
---

# Acme assistant

Follow @acme:context/principles.md, and see @design-kit:context/palette.md.
Mail me@acme:example or `@acme:context/in-code.md`.

```
@acme:context/in-a-fence.md
```
"""


def test_document_references_lists_every_site_in_order_with_locations() -> None:
    result = validate_document(ACME_BUNDLE)
    assert result.bundle is not None
    assert result.bundle.locations is not None
    found = document_references(result.bundle.data, "acme", result.bundle.locations.value)
    assert [(o.site, o.field, o.text) for o in found] == [
        (Site.INCLUDE, "includes[0].bundle", "acme:behaviors/review"),
        (Site.INCLUDE, "includes[1]", "acme:behaviors/quiet"),
        (
            Site.INCLUDE,
            "includes[2].bundle",
            "git+https://example.invalid/acme/design-kit@main#subdirectory=behaviors/design.yaml",
        ),
        (Site.INCLUDE, "includes[3].bundle", "./local.yaml"),
        (Site.AGENT, "agents.include[0]", "acme:reviewer"),
        (Site.AGENT, "agents.include[1]", "helper"),
        (Site.CONTEXT, "context.include[0]", "acme:context/style.md"),
    ]
    assert (found[0].line, found[0].column) == (6, 13)
    assert found[3].reference is None
    assert "NS:PATH" in found[3].problem
    assert found[5].reference == Reference("acme", "helper", bare=True)
    # Without a package, a bare agent name names nothing.
    alone = document_references(result.bundle.data)
    assert alone[5].reference is None


def test_mentions_in_the_body_are_located_in_the_whole_document() -> None:
    mentions = body_mentions(ACME_BUNDLE)
    assert [(m.text, m.line, m.column) for m in mentions] == [
        ("@acme:context/principles.md", 22, 8),
        ("@design-kit:context/palette.md", 22, 45),
    ]
    assert mentions[0].reference == Reference("acme", "context/principles.md")
    assert all(m.site is Site.MENTION and m.field == "" for m in mentions)
    assert body_mentions("bundle:\n  name: x\n") == []


def test_find_mentions_skips_code_addresses_and_punctuation() -> None:
    text = "(@a:x.md) @b:y/z.md: @c:bad//path ~~~\n~~~\n@d:hidden\n~~~\n@e:f"
    found = find_mentions(text, first_line=10)
    assert [(m.text, m.line) for m in found] == [
        ("@a:x.md", 10),
        ("@b:y/z.md", 10),
        ("@e:f", 14),
    ]
