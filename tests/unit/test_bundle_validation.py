"""Bundle document validation: shapes, schema, hardened loading, references and secrets."""

from __future__ import annotations

import pytest

from shared.bundle.refs import (
    EnvReference,
    MalformedReference,
    find_references,
    is_single_reference,
    reference_problems,
    substitute,
)
from shared.bundle.validate import (
    BundleSummary,
    Limits,
    Severity,
    ValidationResult,
    Violation,
    split_document,
    validate_document,
)
from tests.support.bundles import (
    COMMENTED_DOC,
    DEVELOPMENT_DOC,
    EXAMPLE_DOCS,
    FRONTMATTER_DOC,
    MULTI_PROVIDER_DOC,
    PRODUCTION_DOC,
    PURE_YAML_DOC,
)

ERROR = Severity.ERROR
WARNING = Severity.WARNING

BILLION_LAUGHS = """\
bundle:
  name: lol
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

SUMMARIES = {
    "pure-yaml": BundleSummary(
        name="my-config", providers=("provider-anthropic",), includes=("foundation",)
    ),
    "frontmatter": BundleSummary(name="my-config", includes=("foundation",), has_instruction=True),
    "minimal-dev": BundleSummary(
        name="minimal-dev",
        version="1.0.0",
        providers=("provider-anthropic",),
        includes=("foundation",),
        orchestrator="loop-basic",
        context="context-simple",
    ),
    "development": BundleSummary(
        name="dev-config",
        version="1.0.0",
        providers=("provider-anthropic",),
        tools=("tool-filesystem", "tool-bash", "tool-web"),
        includes=("foundation",),
        orchestrator="loop-streaming",
        context="context-persistent",
        has_instruction=True,
    ),
    "production": BundleSummary(
        name="production",
        version="1.0.0",
        description="Production configuration",
        providers=("provider-anthropic",),
        tools=("tool-filesystem", "tool-bash", "tool-web", "tool-search"),
        hooks=("hooks-logging", "hooks-approval", "hooks-cost-tracking"),
        includes=("git+https://github.com/microsoft/amplifier-foundation@main",),
        orchestrator="loop-streaming",
        context="context-persistent",
        has_instruction=True,
    ),
    "multi-provider": BundleSummary(
        name="multi-provider",
        version="1.0.0",
        providers=("provider-anthropic", "provider-openai", "provider-ollama"),
        includes=("foundation",),
        orchestrator="loop-streaming",
        context="context-simple",
    ),
    "commented": BundleSummary(
        name="commented",
        version="1.0",
        description='A bundle with "quotes" and comments',
        providers=("provider-echo",),
        tools=("tool-filesystem", "tool-bash"),
        includes=("foundation", "team-base"),
        orchestrator="loop-basic",
        context="context-simple",
        has_instruction=True,
    ),
}


def only(result: ValidationResult, severity: Severity = ERROR) -> Violation:
    """The single violation of `severity`; fails when there are none or several."""
    found = [v for v in result.violations if v.severity is severity]
    assert len(found) == 1, result.violations
    return found[0]


def located(result: ValidationResult) -> set[tuple[str, int, int, Severity]]:
    return {(v.field, v.line, v.column, v.severity) for v in result.violations}


# Document shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXAMPLE_DOCS))
def test_every_example_shape_is_valid_with_its_summary(name: str) -> None:
    result = validate_document(EXAMPLE_DOCS[name])
    assert result.violations == ()
    assert result.valid
    assert result.summary == SUMMARIES[name]
    assert result.bundle is not None
    assert result.bundle.has_frontmatter == EXAMPLE_DOCS[name].startswith("---\n")


def test_frontmatter_body_is_the_stripped_instruction() -> None:
    result = validate_document(FRONTMATTER_DOC)
    assert result.bundle is not None
    assert result.bundle.instruction == (
        "# My Config Instructions\n\nYou are a helpful assistant with access to...\n\n"
        "## Usage\n\n@my-config:context/instructions.md"
    )
    assert result.bundle.has_frontmatter


def test_pure_yaml_has_no_instruction() -> None:
    result = validate_document(PURE_YAML_DOC)
    assert result.bundle is not None
    assert result.bundle.instruction == ""
    assert not result.bundle.has_frontmatter
    assert not result.summary.has_instruction


def test_parsed_data_is_plain_python() -> None:
    result = validate_document(PRODUCTION_DOC)
    assert result.bundle is not None
    data = result.bundle.data
    assert type(data) is dict
    assert type(data["tools"]) is list
    assert data["tools"][0]["config"] == {
        "allowed_paths": ["/app/data"],
        "allowed_write_paths": ["/app/data/output"],
        "require_approval": True,
    }
    assert type(data["bundle"]["version"]) is str
    assert type(data["providers"][0]["config"]["max_tokens"]) is int
    assert type(data["providers"][0]["config"]["temperature"]) is float
    assert data["hooks"][2]["config"] == {"alert_threshold": 10.0, "hard_limit": 50.0}


def test_split_document_shapes() -> None:
    assert split_document("bundle:\n  name: x\n") == ("bundle:\n  name: x\n", None, 0)
    assert split_document("---\nbundle: {name: x}\n---\n# Body\n") == (
        "bundle: {name: x}\n",
        "# Body\n",
        1,
    )
    # No closing delimiter: an explicit YAML document start, not frontmatter.
    assert split_document("---\nbundle: {name: x}\n") == ("---\nbundle: {name: x}\n", None, 0)
    assert split_document("---\r\nbundle: {name: x}\r\n---\r\nBody\r\n") == (
        "bundle: {name: x}\r\n",
        "Body\r\n",
        1,
    )
    assert split_document("---\nbundle: {name: x}\n---") == ("bundle: {name: x}\n", "", 1)
    assert split_document("---\n---\nbody") == ("", "body", 1)


def test_only_the_first_closing_delimiter_counts() -> None:
    yaml_text, body, _ = split_document(COMMENTED_DOC)
    assert yaml_text.endswith("      timeout_seconds: 30\n")
    assert body is not None
    assert "---\n\nA horizontal rule" in body


def test_crlf_frontmatter_validates() -> None:
    document = DEVELOPMENT_DOC.replace("\n", "\r\n")
    result = validate_document(document)
    assert result.valid, result.violations
    assert result.summary == SUMMARIES["development"]
    assert result.bundle is not None
    assert result.bundle.instruction == (
        "# Development Assistant\r\n\r\nYou are a helpful development assistant."
    )


def test_frontmatter_lines_are_counted_from_the_top_of_the_document() -> None:
    document = "---\nbundle:\n  name: x\ntools:\n  - module: a\n    config: 3\n---\nbody\n"
    violation = only(validate_document(document))
    assert (violation.field, violation.line, violation.column) == ("tools[0].config", 6, 5)
    pure = validate_document(document.split("---\n")[1])
    assert only(pure).line == 5


# Schema ------------------------------------------------------------------------------------


def test_empty_document_needs_a_bundle() -> None:
    for document in ("", "# only a comment\n", "---\n---\nJust a body.\n"):
        violation = only(validate_document(document))
        assert violation.field == "bundle"
        assert violation.message == "bundle is required"
        assert violation.line >= 1


def test_root_must_be_a_mapping() -> None:
    result = validate_document("- bundle\n- tools\n")
    violation = only(result)
    assert (violation.field, violation.line, violation.column) == ("", 1, 1)
    assert "mapping" in violation.message
    assert result.bundle is None


def test_bundle_section_rules() -> None:
    assert located(validate_document("tools: []\n")) == {("bundle", 1, 1, ERROR)}
    assert located(validate_document("bundle: x\n")) == {("bundle", 1, 1, ERROR)}
    assert located(validate_document("x: 1\nbundle:\n  version: 1.0.0\n")) == {
        ("x", 1, 1, WARNING),
        ("bundle.name", 2, 1, ERROR),
    }
    assert located(validate_document("bundle:\n  name: ''\n")) == {("bundle.name", 2, 3, ERROR)}
    assert located(validate_document("bundle:\n  name: [a]\n")) == {("bundle.name", 2, 3, ERROR)}
    assert located(validate_document("bundle:\n  name: x\n  version: true\n")) == {
        ("bundle.version", 3, 3, ERROR)
    }
    assert located(validate_document("bundle:\n  name: x\n  description: {a: 1}\n")) == {
        ("bundle.description", 3, 3, ERROR)
    }


def test_numeric_versions_keep_their_written_form() -> None:
    assert validate_document("bundle:\n  name: x\n  version: 1.10\n").summary.version == "1.10"
    assert validate_document("bundle:\n  name: x\n  version: 2\n").summary.version == "2"


def test_include_rules() -> None:
    result = validate_document(
        "bundle:\n  name: x\nincludes:\n  - ok\n  - 3\n  - {bundle: ''}\n  - {other: y}\n  - ''\n"
    )
    assert located(result) == {
        ("includes[1]", 5, 5, ERROR),
        ("includes[2].bundle", 6, 6, ERROR),
        ("includes[3].bundle", 7, 5, ERROR),
        ("includes[4]", 8, 5, ERROR),
    }
    assert result.summary.includes == ("ok",)
    not_a_list = validate_document("bundle:\n  name: x\nincludes: foundation\n")
    assert located(not_a_list) == {("includes", 3, 1, ERROR)}


def test_session_rules() -> None:
    result = validate_document(
        "bundle:\n  name: x\n"
        "session:\n"
        "  orchestrator: {source: git+x, config: {a: 1}}\n"
        "  context: 3\n"
        "  injection_budget_per_turn: 500\n"
    )
    assert located(result) == {
        ("session.orchestrator.module", 4, 17, ERROR),
        ("session.context", 5, 3, ERROR),
    }
    mapping_form = validate_document(
        "bundle:\n  name: x\nsession:\n  orchestrator:\n    module: loop-basic\n"
        "    source: git+https://example.invalid/loop\n    config:\n      max_turns: 3\n"
        "    extra: 1\n  context: context-simple\n"
    )
    assert located(mapping_form) == {("session.orchestrator.extra", 9, 5, WARNING)}
    assert mapping_form.valid
    assert mapping_form.summary.orchestrator == "loop-basic"
    assert mapping_form.summary.context == "context-simple"
    assert located(validate_document("bundle:\n  name: x\nsession: [a]\n")) == {
        ("session", 3, 1, ERROR)
    }


def test_module_entry_rules() -> None:
    document = """\
bundle:
  name: x
tools:
  - module: tool-a
  - config: {a: 1}
  - module: tool-c
    config: [1, 2]
  - module: 7
    source: 8
    id: 9
  - just-a-name
  - module: tool-f
    extra: yes
"""
    result = validate_document(document)
    assert located(result) == {
        ("tools[1].module", 5, 5, ERROR),
        ("tools[2].config", 7, 5, ERROR),
        ("tools[3].module", 8, 5, ERROR),
        ("tools[3].source", 9, 5, ERROR),
        ("tools[3].id", 10, 5, ERROR),
        ("tools[4]", 11, 5, ERROR),
        ("tools[5].extra", 13, 5, WARNING),
    }
    config = next(v for v in result.violations if v.field == "tools[2].config")
    assert config.message == "must be a mapping, not a list"
    assert located(validate_document("bundle:\n  name: x\nhooks: {module: h}\n")) == {
        ("hooks", 3, 1, ERROR)
    }


def test_duplicate_module_entries_are_warnings() -> None:
    document = """\
bundle:
  name: x
providers:
  - module: provider-a
  - module: provider-a
  - module: provider-b
    id: first
  - module: provider-c
    id: first
  - module: provider-b
    id: second
"""
    result = validate_document(document)
    assert result.valid
    assert located(result) == {("providers[1]", 5, 5, WARNING), ("providers[3]", 8, 5, WARNING)}
    messages = [v.message for v in result.violations]
    assert "providers[0]" in messages[0]
    assert "'first'" in messages[1]


def test_context_agents_and_spawn_types() -> None:
    result = validate_document("bundle:\n  name: x\ncontext: [a]\nagents: 3\nspawn: [tool-task]\n")
    assert located(result) == {
        ("context", 3, 1, ERROR),
        ("agents", 4, 1, ERROR),
        ("spawn", 5, 1, ERROR),
    }
    for agents in ("{reviewer: {}}", "[reviewer]"):
        assert validate_document(f"bundle:\n  name: x\nagents: {agents}\n").violations == ()


def test_unknown_top_level_keys_are_warnings_only() -> None:
    result = validate_document("bundle:\n  name: x\nmystery: 1\n2: two\n")
    assert result.valid
    assert located(result) == {("mystery", 3, 1, WARNING), ("2", 4, 1, WARNING)}


def test_summary_is_filled_even_with_errors() -> None:
    result = validate_document(
        "bundle:\n  name: broken\n  version: 3\nproviders:\n  - module: p\n    config: 1\n"
        "tools:\n  - module: t\n  - 5\nsession:\n  orchestrator: o\n"
    )
    assert not result.valid
    assert result.summary == BundleSummary(
        name="broken", version="3", providers=("p",), tools=("t",), orchestrator="o"
    )


def test_violations_come_in_document_order() -> None:
    result = validate_document("zeta: 1\nbundle:\n  name: x\nalpha: 2\n")
    assert [v.field for v in result.violations] == ["zeta", "alpha"]


# Hardened loading --------------------------------------------------------------------------


def test_billion_laughs_is_refused_before_expansion() -> None:
    result = validate_document(BILLION_LAUGHS)
    violation = only(result)
    assert "nodes" in violation.message
    assert "aliases" in violation.message
    assert violation.line > 0
    assert result.bundle is None
    assert not result.valid


def test_alias_count_is_capped() -> None:
    aliases = ", ".join(["*x"] * 11)
    document = f"bundle:\n  name: x\nbase: &x 1\nmany: [{aliases}]\n"
    assert validate_document(document, Limits(max_aliases=20)).valid
    violation = only(validate_document(document, Limits(max_aliases=10)))
    assert "more than 10 aliases" in violation.message
    assert (violation.line, violation.column) == (4, 48)  # the eleventh alias


def test_node_count_is_capped() -> None:
    document = "bundle:\n  name: x\nlist: [" + ", ".join(["1"] * 50) + "]\n"
    assert validate_document(document, Limits(max_nodes=100)).valid
    assert "nodes" in only(validate_document(document, Limits(max_nodes=40))).message


def test_deep_nesting_is_refused() -> None:
    deep = "bundle:\n  name: x\nd: " + "[" * 100 + "]" * 100 + "\n"
    violation = only(validate_document(deep))
    assert "deeper than 64" in violation.message
    assert violation.line == 3
    shallow = "bundle:\n  name: x\nd: " + "[" * 10 + "]" * 10 + "\n"
    assert validate_document(shallow).valid
    assert not validate_document(shallow, Limits(max_depth=5)).valid


def test_depth_counts_aliased_subtrees() -> None:
    document = "bundle:\n  name: x\na: &a [[[1]]]\nb: [[[*a]]]\n"
    assert validate_document(document, Limits(max_depth=7)).valid
    violation = only(validate_document(document, Limits(max_depth=6)))
    assert "aliases are expanded" in violation.message


def test_python_tags_are_refused_at_the_tag() -> None:
    document = 'bundle:\n  name: x\nexploit: !!python/object/apply:os.system ["true"]\n'
    result = validate_document(document)
    violation = only(result)
    assert (violation.field, violation.line, violation.column) == ("exploit", 3, 10)
    assert "python/object" in violation.message
    assert not result.valid


@pytest.mark.parametrize(
    "value",
    ["!custom 3", "!!python/name:os.system ''", "!<tag:example.com,2000:x> 1", "! plain"],
)
def test_non_standard_tags_are_errors(value: str) -> None:
    violation = only(validate_document(f"bundle:\n  name: x\nvalue: {value}\n"))
    assert (violation.field, violation.line, violation.column) == ("value", 3, 8)
    assert "not allowed" in violation.message


def test_standard_tags_are_accepted() -> None:
    result = validate_document(
        "bundle:\n  name: !!str 12\n  version: !!str 1.0\n"
        "spawn: !!map {n: !!int '5', f: !!float 1, b: !!bool true, z: !!null ''}\n"
    )
    assert result.valid, result.violations
    assert result.bundle is not None
    assert result.bundle.data["bundle"] == {"name": "12", "version": "1.0"}
    assert result.bundle.data["spawn"] == {"n": 5, "f": 1.0, "b": True, "z": None}


def test_a_tag_must_fit_its_value() -> None:
    assert "!!int" in only(validate_document("bundle:\n  name: x\nn: !!int abc\n")).message
    assert "mapping" in only(validate_document("bundle:\n  name: x\nn: !!seq {a: 1}\n")).message


def test_duplicate_keys_are_located_at_the_duplicate() -> None:
    violation = only(validate_document("bundle:\n  name: one\n  name: two\n"))
    assert (violation.field, violation.line, violation.column) == ("bundle.name", 3, 3)
    assert "duplicate key 'name'" in violation.message
    assert "line 2" in violation.message
    # The first value stays in force, so nothing else is reported.
    in_frontmatter = validate_document("---\nbundle:\n  name: a\nbundle: b\n---\n")
    assert (only(in_frontmatter).field, only(in_frontmatter).line) == ("bundle", 4)
    assert in_frontmatter.summary.name == "a"
    # Problems with the value in force are reported where it is, not at the duplicate.
    result = validate_document("bundle:\n  name: x\ntools: 5\ntools:\n  - module: 3\n")
    assert located(result) == {("tools", 3, 1, ERROR), ("tools", 4, 1, ERROR)}


def test_yaml_syntax_errors_are_located() -> None:
    violation = only(validate_document("bundle:\n  name: x\ntools: [a, b\n"))
    assert violation.field == ""
    assert violation.line == 4
    assert violation.message.startswith("YAML syntax error")
    mapping = only(validate_document("---\nbundle:\n  name: a: b\n---\n"))
    assert (mapping.line, mapping.column) == (3, 10)


def test_several_yaml_documents_are_refused() -> None:
    violation = only(validate_document("bundle:\n  name: a\n---\nbundle:\n  name: b\n"))
    assert "one YAML document" in violation.message
    assert violation.line == 3


def test_recursive_and_undefined_aliases_are_refused() -> None:
    assert "own anchor" in only(validate_document("bundle: &b {name: *b}\n")).message
    assert "no anchor" in only(validate_document("bundle:\n  name: *nope\n")).message
    twice = only(validate_document("bundle:\n  name: &n x\n  description: &n y\n"))
    assert "defined twice" in twice.message


def test_merge_keys_are_resolved() -> None:
    document = """\
bundle:
  name: merged
defaults: &defaults
  module: provider-anthropic
  config: {model: claude-sonnet-4-5}
providers:
  - <<: *defaults
    id: main
"""
    result = validate_document(document)
    assert located(result) == {("defaults", 3, 1, WARNING)}
    assert result.summary.providers == ("provider-anthropic",)
    assert result.bundle is not None
    assert result.bundle.data["providers"][0] == {
        "id": "main",
        "module": "provider-anthropic",
        "config": {"model": "claude-sonnet-4-5"},
    }
    bad = only(validate_document("bundle:\n  name: x\n  <<: 3\n"))
    assert (bad.field, bad.line) == ('bundle["<<"]', 3)


def test_complex_keys_are_refused() -> None:
    assert "keys must be scalars" in only(validate_document("? [a]\n: b\n")).message


def test_forbidden_characters_are_located() -> None:
    nul = only(validate_document("bundle:\n  name: a\x00b\n"))
    assert (nul.line, nul.column) == (2, 10)
    assert "NUL" in nul.message
    surrogate = only(validate_document("---\nbundle: {name: x}\n---\nbody \ud800\n"))
    assert (surrogate.line, surrogate.column) == (4, 6)
    assert "surrogate" in surrogate.message
    control = only(validate_document("bundle:\n  name: \x01\n"))
    assert (control.line, control.column) == (2, 9)


# Size cap ----------------------------------------------------------------------------------


def test_size_cap_is_checked_before_parsing() -> None:
    # Unparseable too: the size alone must decide.
    document = "bundle: [" + "x" * 300 * 1024
    result = validate_document(document)
    assert result.violations == (
        Violation(
            "",
            0,
            0,
            f"the document is {len(document)} bytes; the limit is {256 * 1024} bytes",
            ERROR,
        ),
    )
    assert result.summary == BundleSummary()
    assert result.bundle is None


def test_size_cap_counts_utf8_bytes() -> None:
    document = "bundle:\n  name: " + "é" * 10 + "\n"
    assert validate_document(document, Limits(max_bytes=len(document) + 10)).valid
    refused = only(validate_document(document, Limits(max_bytes=len(document) + 9)))
    assert f"{len(document) + 10} bytes" in refused.message


def test_a_document_at_the_cap_is_accepted() -> None:
    padding = "# " + "x" * 1000 + "\n"
    document = PURE_YAML_DOC + padding * 200
    assert validate_document(document).valid


# ${VAR} references -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("${UNCLOSED", "unclosed"),
        ("${}", "empty"),
        ("${:default}", "empty"),
        ("${1ABC}", "invalid variable name"),
        ("${A-B}", "invalid variable name"),
        ("ok ${A} then ${B", "unclosed"),
    ],
)
def test_malformed_references_are_errors_at_the_scalar(value: str, problem: str) -> None:
    document = f'bundle:\n  name: x\nproviders:\n  - module: p\n    config:\n      url: "{value}"\n'
    violation = only(validate_document(document))
    assert (violation.field, violation.line, violation.column) == (
        "providers[0].config.url",
        6,
        12,
    )
    assert problem in violation.message


def test_well_formed_references_pass() -> None:
    document = (
        "bundle:\n  name: x\nproviders:\n  - module: p\n    config:\n"
        "      api_key: ${ANTHROPIC_API_KEY}\n"
        "      url: ${BASE_URL:http://localhost:8080}/v1\n"
        "      empty_default: ${X:}\n"
        "      dollar: costs $5 {braces}\n"
    )
    assert validate_document(document).violations == ()


def test_references_in_keys_are_checked() -> None:
    violation = only(validate_document("bundle:\n  name: x\nspawn:\n  ${BAD: 1\n"))
    assert (violation.line, violation.column) == (4, 3)


def test_find_references() -> None:
    assert find_references("${A}-${B_2:x:y}-${C:}") == [
        EnvReference("A", None, 0, 4),
        EnvReference("B_2", "x:y", 5, 15),
        EnvReference("C", "", 16, 21),
    ]
    assert find_references("no references, $HOME, {x}") == []
    with pytest.raises(MalformedReference) as raised:
        find_references("fine ${A} broken ${")
    assert raised.value.problem.offset == 17
    assert [p.offset for p in reference_problems("${ ${1} ${ok}")] == [0, 3]


def test_single_reference_and_substitution() -> None:
    assert is_single_reference("${KEY}")
    assert is_single_reference("${KEY:default}")
    assert not is_single_reference("Bearer ${KEY}")
    assert not is_single_reference("${A}${B}")
    environment = {"HOST": "example.invalid"}

    def resolve(reference: EnvReference) -> str:
        return environment.get(reference.name, reference.default or "")

    assert substitute("https://${HOST}:${PORT:443}/", resolve) == "https://example.invalid:443/"
    with pytest.raises(MalformedReference):
        substitute("${", resolve)


# Literal secrets ---------------------------------------------------------------------------

SECRET = "sk-ant-api03-" + "a1B2c3D4e5" * 4


def test_an_allowed_literal_secret_is_a_warning_without_the_secret() -> None:
    document = (
        "bundle:\n  name: x\nproviders:\n  - module: provider-anthropic\n"
        f"    config:\n      api_key: {SECRET}\n"
    )
    result = validate_document(document, allow_literal_secrets=True)
    assert result.valid
    violation = only(result, WARNING)
    assert (violation.field, violation.line, violation.column) == (
        "providers[0].config.api_key",
        6,
        16,
    )
    assert "literal secret" in violation.message
    assert "${VAR}" in violation.message
    assert SECRET not in violation.message
    assert "a1B2" not in violation.message


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "API-KEY",
        "apiKey",
        "openai_api_key",
        "secret",
        "client_secret",
        "github-token",
        "password",
        "db_passwd",
        "credentials",
        "private_key",
        "aws_access_key",
    ],
)
def test_secret_looking_keys_when_allowed(key: str) -> None:
    result = validate_document(
        f"bundle:\n  name: x\nspawn:\n  {key}: hunter2\n", allow_literal_secrets=True
    )
    violation = only(result, WARNING)
    assert "hunter2" not in violation.message
    assert violation.field == f"spawn.{key}"


@pytest.mark.parametrize(
    "line",
    [
        "api_key: ${ANTHROPIC_API_KEY}",
        "api_key: ${ANTHROPIC_API_KEY:}",
        "api_key: ''",
        "max_tokens: '4096'",
        "token_budget: lots",
        "tokens: many",
        "password_file: /run/secrets/db",
        "api_key: 12345",
    ],
)
def test_not_literal_secrets(line: str) -> None:
    for allowed in (False, True):
        document = f"bundle:\n  name: x\nspawn:\n  {line}\n"
        assert validate_document(document, allow_literal_secrets=allowed).violations == ()


@pytest.mark.parametrize(
    "value",
    [
        SECRET,
        "sk-proj-" + "abc123" * 5,
        "AKIA" + "IOSFODNN7EXAMPLE",
        "ghp_" + "x1" * 18,
        "Bearer sk-" + "0123456789" * 3,
    ],
)
def test_well_known_key_formats_anywhere_are_warnings_when_allowed(value: str) -> None:
    document = f"bundle:\n  name: x\n  description: Uses {value} for now\n"
    violation = only(validate_document(document, allow_literal_secrets=True), WARNING)
    assert violation.field == "bundle.description"
    assert value not in violation.message


def test_a_key_hidden_in_a_reference_default_is_still_found() -> None:
    document = f"bundle:\n  name: x\nspawn:\n  api_key: ${{KEY:{SECRET}}}\n"
    violation = only(validate_document(document, allow_literal_secrets=True), WARNING)
    assert SECRET not in violation.message


def test_literal_secrets_are_errors_unless_allowed() -> None:
    documents = [
        f"bundle:\n  name: x\nproviders:\n  - module: p\n    config:\n      api_key: {SECRET}\n",
        "bundle:\n  name: x\nspawn:\n  client_secret: hunter2\n",
        "bundle:\n  name: x\n  description: Uses AKIAIOSFODNN7EXAMPLE for now\n",
        f"bundle:\n  name: x\nspawn:\n  api_key: ${{KEY:{SECRET}}}\n",
    ]
    for document in documents:
        result = validate_document(document)
        assert not result.valid
        violation = only(result, ERROR)
        assert "not allowed for this tenant" in violation.message
        assert "${VAR}" in violation.message
        assert SECRET not in violation.message
        assert "hunter2" not in violation.message
        assert "AKIA" not in violation.message


def test_ordinary_values_are_not_keys() -> None:
    for value in ("sk-learn-preprocessing-pipeline", "task-123456789012345678901234", "AKIA"):
        document = f"bundle:\n  name: x\n  description: {value}\n"
        assert validate_document(document).violations == ()


def test_examples_reference_their_secrets() -> None:
    for document in (MULTI_PROVIDER_DOC, PRODUCTION_DOC, COMMENTED_DOC):
        assert validate_document(document).violations == ()


def test_a_session_module_may_carry_config_alone_to_tune_an_included_one() -> None:
    # As Amplifier behaviors write it (../shared/examples/packages/acme/behaviors/quiet.yaml).
    tuned = validate_document(
        "bundle:\n  name: quiet\nsession:\n  orchestrator:\n    config:\n      max_iterations: 4\n"
    )
    assert tuned.valid
    assert tuned.violations == ()
    assert tuned.summary.orchestrator == ""
    not_a_mapping = validate_document(
        "bundle:\n  name: quiet\nsession:\n  context:\n    config: 4\n"
    )
    assert located(not_a_mapping) == {("session.context.config", 5, 5, ERROR)}


# Bundle packages: kinds, names and paths -------------------------------------------------

from config_service.configs.model import ConfigKind  # noqa: E402
from config_service.configs.packages import (  # noqa: E402
    IncomingFile,
    PackageLimits,
    classify,
    normalize_path,
    read_package,
)
from shared.bundle.validate import validate_agent, validate_context  # noqa: E402

ROOT = IncomingFile("bundle.md", b"---\nbundle:\n  name: kit\n---\nHello.\n")


@pytest.mark.parametrize(
    ("path", "text", "kind"),
    [
        ("bundle.md", "---\nbundle:\n  name: k\n---\n", ConfigKind.BUNDLE),
        ("bundle.yaml", "bundle:\n  name: k\n", ConfigKind.BUNDLE),
        ("agents/reviewer.md", "---\nmeta: {}\n---\n", ConfigKind.AGENT),
        ("agents/deeper/notes.md", "# notes\n", ConfigKind.CONTEXT),
        ("agents/list.yaml", "a: 1\n", ConfigKind.CONTEXT),
        ("behaviors/x.yaml", "not: a bundle\n", ConfigKind.BUNDLE),
        ("providers/openai.yml", "providers: []\n", ConfigKind.BUNDLE),
        ("behaviors/README.md", "# About behaviors\n", ConfigKind.CONTEXT),
        ("behaviors/x.md", "---\nbundle:\n  name: x\n---\nBody.\n", ConfigKind.BUNDLE),
        ("bundles/web.yaml", "bundle:\n  name: web\n", ConfigKind.BUNDLE),
        ("data/settings.yaml", "key: value\n", ConfigKind.CONTEXT),
        ("data/broken.yaml", "key: [unclosed\n", ConfigKind.CONTEXT),
        ("docs/guide.md", "---\ntitle: Guide\n---\nText.\n", ConfigKind.CONTEXT),
        # Markdown that declares a bundle is one, wherever it is kept.
        ("context/style.md", "---\nbundle:\n  name: x\n---\n", ConfigKind.BUNDLE),
        ("skills/a/SKILL.md", "# Skill\n", ConfigKind.CONTEXT),
        ("README", "plain text\n", ConfigKind.CONTEXT),
    ],
)
def test_a_package_file_kind_follows_its_path_and_content(
    path: str, text: str, kind: ConfigKind
) -> None:
    assert classify(path, text, Limits()) is kind


@pytest.mark.parametrize(
    ("raw", "normalized", "problem"),
    [
        ("bundle.md", "bundle.md", ""),
        ("./context//style.md", "context/style.md", ""),
        ("context/./a.md", "context/a.md", ""),
        ("", "", "empty"),
        ("/abs.md", "", "absolute"),
        ("C:/x.md", "", "absolute"),
        ("a/../b.md", "", ".."),
        ("a\\b.md", "", "backslash"),
        ("a\x00b", "", "NUL"),
        ("a b.md", "", "characters"),
        ("./", "", "no file"),
    ],
)
def test_package_paths_are_normalized_or_refused(raw: str, normalized: str, problem: str) -> None:
    path, found = normalize_path(raw)
    assert path == normalized
    assert problem in found
    assert bool(found) is bool(problem)


def test_agent_files_need_frontmatter_with_meta() -> None:
    valid = validate_agent(
        "---\nmeta:\n  name: critic\n  description: Critiques.\ntools:\n  - module: t\n---\nBody\n"
    )
    assert valid.valid
    assert (valid.summary.name, valid.summary.description, valid.summary.tools) == (
        "critic",
        "Critiques.",
        ("t",),
    )
    assert valid.summary.has_instruction
    bare = validate_agent("Just markdown.\n")
    assert [(v.field, v.line) for v in bare.errors] == [("", 1)]
    missing = validate_agent("---\nmeta:\n  name: ''\n---\n")
    assert {(v.field, v.line, v.column) for v in missing.errors} == {
        ("meta.name", 3, 3),
        ("meta.description", 2, 1),
    }
    no_meta = validate_agent("---\nbundle:\n  name: x\n---\n")
    assert {v.field for v in no_meta.errors} == {"meta"}
    assert {v.field for v in no_meta.violations if v.severity is WARNING} == {"bundle"}


def test_context_files_are_text_within_the_cap() -> None:
    assert validate_context("anything: [at all\n").valid
    assert not validate_context("x" * 11, Limits(max_bytes=10)).valid
    [nul] = validate_context("ab\ncd\x00").errors
    assert (nul.line, nul.column) == (2, 3)


def test_read_package_locates_every_problem_by_file() -> None:
    package = read_package(
        [
            ROOT,
            IncomingFile("behaviors/a.yaml", b"bundle:\n  name: a\n"),
            IncomingFile("behaviors/a.md", b"---\nbundle:\n  name: a2\n---\n"),
            IncomingFile("agents/x.md", b"---\nmeta:\n  name: x\n---\n"),
            IncomingFile("context/bin.dat", b"\x89PNG\r\n\x1a\n\xff"),
            IncomingFile("context/big.md", b"x" * 101),
            IncomingFile("behaviors/b.yaml", b"bundle:\n  name: b\nsurprise: 1\n"),
        ],
        PackageLimits(max_file_bytes=100),
    )
    assert package.namespace == "kit"
    assert {(v.field, v.severity) for v in package.violations} == {
        ("behaviors/a.md", ERROR),
        ("agents/x.md: meta.description", ERROR),
        ("context/bin.dat", ERROR),
        ("context/big.md", ERROR),
        ("behaviors/b.yaml: surprise", WARNING),
    }
    assert "like 'behaviors/a.yaml'" in next(
        v.message for v in package.violations if v.field == "behaviors/a.md"
    )
    assert [f.name for f in package.files] == ["kit", "kit:behaviors/a", "kit:behaviors/b"]
    # Errors come first, so a refusal lists them before any warning.
    assert package.violations[-1].severity is WARNING


def test_read_package_needs_one_named_root() -> None:
    none = read_package(
        [IncomingFile("behaviors/a.yaml", b"bundle:\n  name: a\n")], PackageLimits()
    )
    assert [(v.field, v.severity) for v in none.violations] == [("files", ERROR)]
    assert none.namespace == ""
    two = read_package(
        [ROOT, IncomingFile("bundle.yaml", b"bundle:\n  name: kit\n")], PackageLimits()
    )
    assert [v.field for v in two.errors] == ["bundle.yaml"]
    bad_name = read_package(
        [IncomingFile("bundle.yaml", b"bundle:\n  name: 'has space'\n")], PackageLimits()
    )
    [error] = bad_name.errors
    assert (error.field, error.line, error.column) == ("bundle.yaml: bundle.name", 2, 9)
    assert bad_name.files == ()
