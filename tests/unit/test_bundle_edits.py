"""In-place edits: the edited lines change, every other byte of the document stays."""

from __future__ import annotations

import pytest

from config_service.configs import edits as edits_module
from config_service.configs.edits import add_include, add_module, remove_include, remove_module
from shared.bundle.validate import validate_document
from shared.errors import InvalidArgument, NotFound
from tests.support.bundles import (
    COMMENTED_DOC,
    DEVELOPMENT_DOC,
    EXAMPLE_DOCS,
    FRONTMATTER_DOC,
    MULTI_PROVIDER_DOC,
    PRODUCTION_DOC,
    PURE_YAML_DOC,
)

BODY = COMMENTED_DOC.split("      timeout_seconds: 30\n", 1)[1]


def replace_once(text: str, old: str, new: str) -> str:
    """`text` with its only occurrence of `old` replaced: the expected result of an edit."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def summary_modules(text: str, kind: str) -> tuple[str, ...]:
    result = validate_document(text)
    assert result.valid, result.violations
    modules: tuple[str, ...] = getattr(result.summary, kind)
    return modules


# add_module --------------------------------------------------------------------------------


def test_add_tool_appends_after_the_last_entry_and_keeps_everything_else() -> None:
    edited = add_module(
        COMMENTED_DOC,
        "tools",
        "tool-web",
        "git+https://example.invalid/tool-web",
        {"timeout": 30, "allowed": ["a.example", "b.example"], "retry": {"max": 2}},
    )
    assert edited == replace_once(
        COMMENTED_DOC,
        "      timeout_seconds: 30\n---\n",
        "      timeout_seconds: 30\n"
        "  - module: tool-web\n"
        "    source: git+https://example.invalid/tool-web\n"
        "    config:\n"
        "      timeout: 30\n"
        "      allowed:\n"
        "        - a.example\n"
        "        - b.example\n"
        "      retry:\n"
        "        max: 2\n"
        "---\n",
    )
    assert summary_modules(edited, "tools") == ("tool-filesystem", "tool-bash", "tool-web")


def test_add_module_goes_before_the_blank_line_that_ends_its_list() -> None:
    edited = add_module(MULTI_PROVIDER_DOC, "providers", "provider-echo", None, None)
    assert edited == replace_once(
        MULTI_PROVIDER_DOC,
        "      base_url: http://localhost:11434\n\n",
        "      base_url: http://localhost:11434\n  - module: provider-echo\n\n",
    )


def test_add_module_creates_the_list_at_the_end_of_the_yaml() -> None:
    edited = add_module(DEVELOPMENT_DOC, "hooks", "hooks-logging", None, {"level": "INFO"})
    assert edited == replace_once(
        DEVELOPMENT_DOC,
        "  - module: tool-web\n\n---\n",
        "  - module: tool-web\nhooks:\n  - module: hooks-logging\n    config:\n"
        "      level: INFO\n\n---\n",
    )
    edited = add_module(PURE_YAML_DOC, "tools", "tool-bash", None, None)
    assert edited == PURE_YAML_DOC + "tools:\n  - module: tool-bash\n"


def test_adding_a_present_module_merges_its_config() -> None:
    edited = add_module(
        COMMENTED_DOC,
        "providers",
        "provider-echo",
        "git+https://example.invalid/echo",
        {"delay_ms": 10, "reply": "hi"},
    )
    assert edited == replace_once(
        COMMENTED_DOC,
        "  - module: provider-echo\n    config:\n      delay_ms: 5\n",
        "  - module: provider-echo\n"
        "    source: git+https://example.invalid/echo\n"
        "    config:\n"
        "      delay_ms: 10\n",
    ).replace(
        "        # not a comment: part of the block scalar\n",
        "        # not a comment: part of the block scalar\n      reply: hi\n",
    )
    assert edited.count("module: provider-echo") == 1


def test_merge_is_deep_and_new_values_win() -> None:
    document = """\
bundle:
  name: deep
providers:
  - module: provider-x   # the only one
    config:
      model: small
      limits:
        tokens: 10
        rate: 1   # per second
"""
    edited = add_module(
        document, "providers", "provider-x", None, {"limits": {"tokens": 20, "burst": 3}}
    )
    assert edited == replace_once(
        document,
        "        tokens: 10\n        rate: 1   # per second\n",
        "        tokens: 20\n        rate: 1   # per second\n        burst: 3\n",
    )
    validated = validate_document(edited)
    assert validated.bundle is not None
    assert validated.bundle.data["providers"][0]["config"] == {
        "model": "small",
        "limits": {"tokens": 20, "rate": 1, "burst": 3},
    }


def test_merge_adds_config_to_an_entry_without_one() -> None:
    edited = add_module(DEVELOPMENT_DOC, "tools", "tool-bash", None, {"timeout": 5})
    assert edited == replace_once(
        DEVELOPMENT_DOC,
        "  - module: tool-bash\n",
        "  - module: tool-bash\n    config:\n      timeout: 5\n",
    )


def test_re_adding_with_nothing_new_changes_nothing() -> None:
    assert add_module(COMMENTED_DOC, "tools", "tool-bash", None, None) == COMMENTED_DOC
    assert (
        add_module(COMMENTED_DOC, "tools", "tool-bash", None, {"timeout_seconds": 30})
        == COMMENTED_DOC
    )


def test_add_module_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        add_module(COMMENTED_DOC, "widgets", "x", None, None)
    with pytest.raises(ValueError, match="kind"):
        remove_module(COMMENTED_DOC, "includes", "foundation")


# remove_module -----------------------------------------------------------------------------


def test_remove_a_middle_entry_with_its_introducing_blank_line() -> None:
    edited = remove_module(MULTI_PROVIDER_DOC, "providers", "provider-openai")
    assert edited == replace_once(
        MULTI_PROVIDER_DOC,
        "      model: claude-sonnet-4-5\n  \n"
        "  - module: provider-openai\n    config:\n      api_key: ${OPENAI_API_KEY}\n"
        "      model: gpt-4o\n  \n",
        "      model: claude-sonnet-4-5\n  \n",
    )
    assert summary_modules(edited, "providers") == ("provider-anthropic", "provider-ollama")


def test_remove_the_first_entry_leaves_no_gap_under_the_key() -> None:
    edited = remove_module(MULTI_PROVIDER_DOC, "providers", "provider-anthropic")
    assert edited == replace_once(
        MULTI_PROVIDER_DOC,
        "providers:\n  - module: provider-anthropic\n    config:\n"
        "      api_key: ${ANTHROPIC_API_KEY}\n      model: claude-sonnet-4-5\n  \n",
        "providers:\n",
    )


def test_remove_the_last_entry_keeps_the_blank_line_before_the_next_key() -> None:
    edited = remove_module(PRODUCTION_DOC, "hooks", "hooks-cost-tracking")
    assert edited == replace_once(
        PRODUCTION_DOC,
        "  \n  - module: hooks-cost-tracking\n    config:\n      alert_threshold: 10.0\n"
        "      hard_limit: 50.0\n",
        "",
    )


def test_remove_takes_the_comment_that_introduces_the_entry() -> None:
    edited = remove_module(COMMENTED_DOC, "tools", "tool-bash")
    assert edited == replace_once(
        COMMENTED_DOC,
        "\n  # Shell access, kept narrow.\n  - module: tool-bash\n    config:\n"
        "      timeout_seconds: 30\n",
        "",
    )
    assert edited.endswith(BODY)


def test_removing_the_only_entry_removes_the_key() -> None:
    edited = remove_module(COMMENTED_DOC, "providers", "provider-echo")
    assert edited == replace_once(
        COMMENTED_DOC,
        "\nproviders:\n"
        "  # The offline provider for local work.\n"
        "  - module: provider-echo\n"
        "    config:\n"
        "      delay_ms: 5\n"
        "      greeting: |\n"
        "        Hello there.\n"
        "        # not a comment: part of the block scalar\n",
        "",
    )
    result = validate_document(edited)
    assert result.valid
    assert result.bundle is not None
    assert "providers" not in result.bundle.data


def test_remove_every_entry_of_a_module() -> None:
    document = (
        "bundle:\n  name: x\ntools:\n  - module: a\n    id: one\n  - module: b\n"
        "  - module: a\n    id: two\n"
    )
    assert remove_module(document, "tools", "a") == "bundle:\n  name: x\ntools:\n  - module: b\n"


def test_remove_module_not_found() -> None:
    with pytest.raises(NotFound) as raised:
        remove_module(COMMENTED_DOC, "tools", "tool-nope")
    error = raised.value
    assert error.reason == "MODULE_NOT_FOUND"
    assert (error.resource_type, error.resource_name) == ("tools", "tool-nope")
    with pytest.raises(NotFound) as absent_list:
        remove_module(COMMENTED_DOC, "hooks", "hooks-logging")
    assert absent_list.value.resource_type == "hooks"


# Includes ----------------------------------------------------------------------------------


def test_add_include_appends_a_plain_string() -> None:
    edited = add_include(COMMENTED_DOC, "extras")
    assert edited == replace_once(
        COMMENTED_DOC,
        "  - team-base   # plain string form\n",
        "  - team-base   # plain string form\n  - extras\n",
    )
    result = validate_document(edited)
    assert result.summary.includes == ("foundation", "team-base", "extras")


def test_add_include_is_a_no_op_when_present_in_either_form() -> None:
    assert add_include(COMMENTED_DOC, "foundation") == COMMENTED_DOC
    assert add_include(COMMENTED_DOC, "team-base") == COMMENTED_DOC


def test_add_include_creates_the_list() -> None:
    document = "bundle:\n  name: x\n"
    assert add_include(document, "foundation") == document + "includes:\n  - foundation\n"


def test_remove_include_in_either_form() -> None:
    without_mapping_form = remove_include(COMMENTED_DOC, "foundation")
    assert without_mapping_form == replace_once(COMMENTED_DOC, "  - bundle: foundation\n", "")
    without_string_form = remove_include(COMMENTED_DOC, "team-base")
    assert without_string_form == replace_once(
        COMMENTED_DOC, "  - team-base   # plain string form\n", ""
    )
    neither = remove_include(without_string_form, "foundation")
    assert neither == replace_once(
        COMMENTED_DOC,
        "\nincludes:\n  - bundle: foundation\n  - team-base   # plain string form\n",
        "",
    )


def test_remove_include_not_found() -> None:
    with pytest.raises(NotFound) as raised:
        remove_include(FRONTMATTER_DOC, "elsewhere")
    error = raised.value
    assert error.reason == "INCLUDE_NOT_FOUND"
    assert (error.resource_type, error.resource_name) == ("include", "elsewhere")


def test_flow_style_lists_stay_flow_style() -> None:
    document = "bundle: {name: x}   # flow\nincludes: [a, b]\n"
    assert add_include(document, "c") == "bundle: {name: x}   # flow\nincludes: [a, b, c]\n"
    assert remove_include(document, "a") == "bundle: {name: x}   # flow\nincludes: [b]\n"


# Document shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXAMPLE_DOCS))
def test_every_shape_survives_an_add_and_remove(name: str) -> None:
    document = EXAMPLE_DOCS[name]
    added = add_module(document, "tools", "tool-extra", None, {"flag": True})
    assert validate_document(added).valid
    assert remove_module(added, "tools", "tool-extra") == document


def test_the_body_and_delimiters_survive_byte_for_byte() -> None:
    edited = add_include(PRODUCTION_DOC, "extras")
    head, body = PRODUCTION_DOC.split("\n---\n", 1)[0], PRODUCTION_DOC.split("\n---\n", 1)[1]
    assert edited.startswith("---\n")
    assert edited.endswith("\n---\n" + body)
    assert edited.startswith(head.split("includes:")[0])


def test_crlf_documents_keep_crlf() -> None:
    document = DEVELOPMENT_DOC.replace("\n", "\r\n")
    edited = add_module(document, "tools", "tool-search", None, None)
    assert edited == replace_once(
        document,
        "  - module: tool-web\r\n",
        "  - module: tool-web\r\n  - module: tool-search\r\n",
    )


def test_a_missing_final_newline_stays_missing() -> None:
    document = "bundle:\n  name: x\ntools:\n  - module: a"
    assert add_module(document, "tools", "b", None, None) == document + "\n  - module: b"
    assert remove_module(document + "\n  - module: b", "tools", "b") == document


def test_the_document_indentation_is_kept() -> None:
    document = "bundle:\n    name: x\ntools:\n- module: a\n  config:\n      k: 1\n"
    edited = add_module(document, "tools", "b", None, {"n": {"m": 1}})
    assert edited == document + "- module: b\n  config:\n      n:\n          m: 1\n"


# Refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        "bundle: [unclosed\n",
        "- a\n- b\n",
        "bundle:\n  name: one\n  name: two\n",
        'bundle: !!python/object/apply:os.system ["true"]\n',
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{n}: &{n} [" + ", ".join([f"*{p}"] * 10) + "]\n"
            for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ],
    ids=["syntax", "not-a-mapping", "duplicate-key", "python-tag", "billion-laughs"],
)
def test_an_unparseable_document_is_invalid_argument(document: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        add_include(document, "x")
    assert raised.value.reason == "INVALID_DOCUMENT"


def test_a_list_key_holding_something_else_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as raised:
        add_module("bundle:\n  name: x\ntools: tool-a\n", "tools", "tool-b", None, None)
    assert raised.value.reason == "INVALID_DOCUMENT"


def test_merging_into_an_entry_built_from_an_anchor_leaves_the_anchor_alone() -> None:
    document = """\
bundle:
  name: anchored
defaults: &defaults
  module: provider-x
  config: {model: small}
providers:
  - <<: *defaults
    id: main
"""
    edited = add_module(document, "providers", "provider-x", None, {"model": "large"})
    assert edited == document + "    config:\n      model: large\n"
    result = validate_document(edited)
    assert result.bundle is not None
    assert result.bundle.data["defaults"]["config"] == {"model": "small"}
    assert result.bundle.data["providers"][0]["config"] == {"model": "large"}


def test_document_markers_ruamel_drops_are_kept() -> None:
    document = "--- # start\nbundle:\n  name: x\n...\n"
    assert add_include(document, "a") == (
        "--- # start\nbundle:\n  name: x\nincludes:\n  - a\n...\n"
    )


def test_empty_frontmatter_gets_its_first_key() -> None:
    assert add_include("---\n---\nbody\n", "a") == "---\nincludes:\n  - a\n---\nbody\n"


def test_a_failed_line_merge_falls_back_to_the_full_dump(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(original: str, baseline: str, edited: str) -> str:
        return original

    monkeypatch.setattr(edits_module, "transplant", broken)
    edited = add_include(COMMENTED_DOC, "extras")
    result = validate_document(edited)
    assert result.summary.includes == ("foundation", "team-base", "extras")
    assert edited.endswith(BODY)


# Group comments ----------------------------------------------------------------------------

GROUPED = """\
---
bundle:
  name: grouped
includes:
  # Foundation behaviors
  - bundle: foundation:behaviors/sessions
  - bundle: foundation:behaviors/streaming-ui

  # The review behavior, on its own
  - bundle: acme:behaviors/review
  # Acme behaviors
  - bundle: acme:behaviors/quiet
  - bundle: acme:behaviors/loud
tools:
  - module: tool-x
---

Body.
"""


def test_a_comment_heading_a_group_stays_while_an_entry_of_the_group_remains() -> None:
    first_gone = remove_include(GROUPED, "foundation:behaviors/sessions")
    assert first_gone == replace_once(GROUPED, "  - bundle: foundation:behaviors/sessions\n", "")
    # The blank line after the group still separates it from the next one.
    last_gone = remove_include(GROUPED, "foundation:behaviors/streaming-ui")
    assert last_gone == replace_once(GROUPED, "  - bundle: foundation:behaviors/streaming-ui\n", "")
    both_gone = remove_include(first_gone, "foundation:behaviors/streaming-ui")
    assert both_gone == replace_once(
        GROUPED,
        "  # Foundation behaviors\n"
        "  - bundle: foundation:behaviors/sessions\n"
        "  - bundle: foundation:behaviors/streaming-ui\n\n",
        "",
    )
    assert remove_include(GROUPED, "acme:behaviors/quiet") == replace_once(
        GROUPED, "  - bundle: acme:behaviors/quiet\n", ""
    )


def test_a_comment_of_an_entry_alone_in_its_group_goes_with_it() -> None:
    # Another comment below separates the review behavior from the entries after it.
    edited = remove_include(GROUPED, "acme:behaviors/review")
    assert edited == replace_once(
        GROUPED,
        "  # The review behavior, on its own\n  - bundle: acme:behaviors/review\n",
        "",
    )
    assert validate_document(edited).summary.includes == (
        "foundation:behaviors/sessions",
        "foundation:behaviors/streaming-ui",
        "acme:behaviors/quiet",
        "acme:behaviors/loud",
    )


def test_add_include_writes_the_form_the_list_uses() -> None:
    edited = add_include(GROUPED, "acme:behaviors/new")
    assert edited == replace_once(
        GROUPED,
        "  - bundle: acme:behaviors/loud\n",
        "  - bundle: acme:behaviors/loud\n  - bundle: acme:behaviors/new\n",
    )
    strings = "bundle:\n  name: x\nincludes:\n  - foundation\n"
    assert add_include(strings, "extras") == strings + "  - extras\n"
    flow = "bundle:\n  name: x\nincludes:\n  - {bundle: a}\n"
    assert add_include(flow, "b") == flow + "  - {bundle: b}\n"
