"""Realistic bundle documents for tests, in the shapes of shared/examples/bundles.

Embedded rather than read from ../shared so that unit tests stay free of I/O.

Like the examples, most of them include `foundation`: that means Amplifier's foundation
package, imported into the tenant, never a bundle SessionService ships (those are `tandem:…`).
They are kept as the examples wrote them because only ConfigService's tests use them, to
validate and edit documents, and those never prepare one. A test that prepares one of them
must first import a small package named `foundation` of its own, or include `tandem:dev`
instead.
"""

from __future__ import annotations

# pure-yaml.yaml: includes foundation (a user's package), one provider with a ${VAR} key.
PURE_YAML_DOC = """\
bundle:
  name: my-config
includes:
  - bundle: foundation
providers:
  - module: provider-anthropic
    config:
      api_key: ${ANTHROPIC_API_KEY}
"""

# frontmatter.md: YAML frontmatter and a markdown body with an @mention.
FRONTMATTER_DOC = """\
---
bundle:
  name: my-config
includes:
  - bundle: foundation
---

# My Config Instructions

You are a helpful assistant with access to...

## Usage

@my-config:context/instructions.md
"""

# minimal-dev.yaml: small, with a session orchestrator and context.
MINIMAL_DEV_DOC = """\
bundle:
  name: minimal-dev
  version: 1.0.0

includes:
  - bundle: foundation

providers:
  - module: provider-anthropic
    config:
      api_key: ${ANTHROPIC_API_KEY}
      model: claude-sonnet-4-5

session:
  orchestrator: loop-basic
  context: context-simple
"""

# development.md: frontmatter and body, three tools, provider config.
DEVELOPMENT_DOC = """\
---
bundle:
  name: dev-config
  version: 1.0.0

includes:
  - bundle: foundation

providers:
  - module: provider-anthropic
    config:
      api_key: ${ANTHROPIC_API_KEY}
      model: claude-sonnet-4-5
      max_tokens: 4096

session:
  orchestrator: loop-streaming
  context: context-persistent

tools:
  - module: tool-filesystem
    config:
      allowed_paths: [.]
  - module: tool-bash
  - module: tool-web

---

# Development Assistant

You are a helpful development assistant.
"""

# production.md: large, with sources, hooks, spawn, context config and a markdown body.
# The blank lines between list items hold two spaces, as in the example file; they are
# written as \x20 so that editors and linters leave them alone.
PRODUCTION_DOC = """\
---
bundle:
  name: production
  version: 1.0.0
  description: Production configuration

includes:
  - bundle: git+https://github.com/microsoft/amplifier-foundation@main

providers:
  - module: provider-anthropic
    source: git+https://github.com/microsoft/amplifier-module-provider-anthropic@main
    config:
      api_key: ${ANTHROPIC_API_KEY}
      model: claude-sonnet-4-5
      max_tokens: 4096
      temperature: 0.7

session:
  orchestrator: loop-streaming
  context: context-persistent
  injection_budget_per_turn: 500
  injection_size_limit: 8192

context:
  config:
    max_tokens: 128000
    compact_threshold: 0.85
    auto_compact: true

tools:
  - module: tool-filesystem
    source: git+https://github.com/microsoft/amplifier-module-tool-filesystem@main
    config:
      allowed_paths: ["/app/data"]
      allowed_write_paths: ["/app/data/output"]
      require_approval: true
\x20\x20
  - module: tool-bash
    source: git+https://github.com/microsoft/amplifier-module-tool-bash@main
    config:
      blocked_commands: ["rm -rf", "sudo"]
      timeout_seconds: 30
      require_approval: true
\x20\x20
  - module: tool-web
  - module: tool-search
    config:
      provider: brave
      api_key: ${BRAVE_API_KEY}

hooks:
  - module: hooks-logging
    config:
      output_dir: /var/log/amplifier
      log_level: INFO
\x20\x20
  - module: hooks-approval
    config:
      require_approval_for:
        - tool-filesystem:write_file
        - tool-bash:execute
\x20\x20
  - module: hooks-cost-tracking
    config:
      alert_threshold: 10.0
      hard_limit: 50.0

spawn:
  exclude_tools:
    - tool-task

---

# Production Assistant

You are a production-grade AI assistant with restricted capabilities.

## Security

- All file writes require approval
- All bash commands require approval
- Cost tracking enforced

## Available Capabilities

@production:context/capabilities.md
"""

# multi-provider.yaml: three providers, one with a base_url; blank lines hold two spaces.
MULTI_PROVIDER_DOC = """\
bundle:
  name: multi-provider
  version: 1.0.0

includes:
  - bundle: foundation

providers:
  - module: provider-anthropic
    config:
      api_key: ${ANTHROPIC_API_KEY}
      model: claude-sonnet-4-5
\x20\x20
  - module: provider-openai
    config:
      api_key: ${OPENAI_API_KEY}
      model: gpt-4o
\x20\x20
  - module: provider-ollama
    config:
      model: llama3
      base_url: http://localhost:11434

session:
  orchestrator: loop-streaming
  context: context-simple
"""

# Comments everywhere, quoted strings, blank lines, a block scalar and a markdown body:
# what an in-place edit must leave alone.
COMMENTED_DOC = """\
---
# Team bundle: keep the comments, they explain the choices.
bundle:
  name: commented   # inline comment
  version: '1.0'    # quoted on purpose
  description: "A bundle with \\"quotes\\" and comments"

includes:
  - bundle: foundation
  - team-base   # plain string form

providers:
  # The offline provider for local work.
  - module: provider-echo
    config:
      delay_ms: 5
      greeting: |
        Hello there.
        # not a comment: part of the block scalar

session:
  orchestrator: {module: loop-basic, config: {max_turns: 8}}
  context: context-simple

tools:
  - module: tool-filesystem   # reads only
    config:
      allowed_paths: ["."]
      mode: 'read'

  # Shell access, kept narrow.
  - module: tool-bash
    config:
      timeout_seconds: 30
---

# Commented Assistant

Keep *this* markdown exactly as written.

---

A horizontal rule above must not be taken for a delimiter.
"""

# Every document above, by a short name.
EXAMPLE_DOCS = {
    "pure-yaml": PURE_YAML_DOC,
    "frontmatter": FRONTMATTER_DOC,
    "minimal-dev": MINIMAL_DEV_DOC,
    "development": DEVELOPMENT_DOC,
    "production": PRODUCTION_DOC,
    "multi-provider": MULTI_PROVIDER_DOC,
    "commented": COMMENTED_DOC,
}
