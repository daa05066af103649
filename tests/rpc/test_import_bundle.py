"""ImportBundle through real stubs on SQLite and PostgreSQL: the example packages in
../shared/examples/packages stored under their namespaces, re-imports, refusals, retries,
dry runs, caps, warnings about references to nothing, and the ListConfigs filters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from config_service import app as config_app_module
from config_service.settings import ConfigServiceSettings
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared.app import ServiceApp
from tests.support.configs import create, list_all, take, watch
from tests.support.rpc import detail, error_info, rpc_error

if TYPE_CHECKING:
    Stub = config_service_pb2_grpc.ConfigServiceAsyncStub

# Copies of ../shared/examples/packages, so the suite needs nothing outside the repository.
PACKAGES = Path(__file__).resolve().parents[1] / "fixtures" / "packages"
DESIGN_KIT_SOURCE = "git+https://example.invalid/acme/design-kit@main"
ACME_SOURCE = "git+https://example.invalid/acme/acme@main"
BUNDLE = config_pb2.CONFIG_KIND_BUNDLE
AGENT = config_pb2.CONFIG_KIND_AGENT
CONTEXT = config_pb2.CONFIG_KIND_CONTEXT
WARNING = config_pb2.SEVERITY_WARNING
ERROR = config_pb2.SEVERITY_ERROR


def files(
    name: str, changes: Mapping[str, bytes | None] | None = None
) -> list[config_service_pb2.BundleFile]:
    """The example package's files as read from disk, sorted by path; `changes` replaces
    (bytes) or leaves out (None) files by path, and adds new ones."""
    root = PACKAGES / name
    found = {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file()
    }
    for path, content in (changes or {}).items():
        if content is None:
            found.pop(path)
        else:
            found[path] = content
    return [config_service_pb2.BundleFile(path=p, content=found[p]) for p in sorted(found)]


async def import_package(
    stub: Stub,
    bundle_files: list[config_service_pb2.BundleFile],
    source_uri: str = "",
    request_id: str = "",
    validate_only: bool = False,
) -> config_service_pb2.ImportBundleResponse:
    return await stub.ImportBundle(
        config_service_pb2.ImportBundleRequest(
            files=bundle_files,
            source_uri=source_uri,
            request_id=request_id,
            validate_only=validate_only,
        )
    )


async def latest_sequence(stub: Stub) -> int:
    """The tenant's latest change: a watch past any end says where the end is."""
    error = await rpc_error(take(aiter(watch(stub, 1 << 40)), 1))
    return int(error_info(error).metadata["latest_sequence"])


async def import_both(
    stub: Stub,
) -> tuple[config_service_pb2.ImportBundleResponse, config_service_pb2.ImportBundleResponse]:
    kit = await import_package(stub, files("design-kit"), DESIGN_KIT_SOURCE)
    acme = await import_package(stub, files("acme"), ACME_SOURCE)
    return kit, acme


async def test_both_example_packages_are_stored_under_their_namespaces(configs: Stub) -> None:
    kit, acme = await import_both(configs)
    assert (kit.namespace, kit.created, kit.updated, kit.unchanged, kit.deleted) == (
        "design-kit",
        4,
        0,
        0,
        0,
    )
    assert (acme.namespace, acme.created) == ("acme", 7)
    stored = {c.path: (c.name, c.kind, c.namespace, c.source_uri) for c in acme.configs}
    assert stored == {
        "agents/reviewer.md": ("acme:agents/reviewer", AGENT, "acme", ACME_SOURCE),
        "behaviors/quiet.yaml": ("acme:behaviors/quiet", BUNDLE, "acme", ACME_SOURCE),
        "behaviors/review.yaml": ("acme:behaviors/review", BUNDLE, "acme", ACME_SOURCE),
        "bundle.md": ("acme", BUNDLE, "acme", ACME_SOURCE),
        "context/principles.md": ("acme:context/principles.md", CONTEXT, "acme", ACME_SOURCE),
        "context/review-checklist.md": (
            "acme:context/review-checklist.md",
            CONTEXT,
            "acme",
            ACME_SOURCE,
        ),
        "context/style.md": ("acme:context/style.md", CONTEXT, "acme", ACME_SOURCE),
    }
    assert sorted(c.name for c in kit.configs) == [
        "design-kit",
        "design-kit:agents/critic",
        "design-kit:behaviors/design",
        "design-kit:context/palette.md",
    ]
    # The response is the BASIC view; a read returns every file byte for byte.
    assert all(c.yaml_content == "" and c.revision == 1 and c.etag for c in acme.configs)
    by_path = {c.path: c for c in acme.configs}
    reviewer = await configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id=by_path["agents/reviewer.md"].config_id)
    )
    assert reviewer.yaml_content.encode() == (PACKAGES / "acme/agents/reviewer.md").read_bytes()
    assert (reviewer.kind, reviewer.path, reviewer.summary.name) == (
        AGENT,
        "agents/reviewer.md",
        "reviewer",
    )
    assert reviewer.summary.description.startswith("Reviews a change")
    root = await configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id=by_path["bundle.md"].config_id, revision=1)
    )
    assert (root.namespace, root.source_uri, root.summary.name) == ("acme", ACME_SOURCE, "acme")
    # Everything acme refers to is in the tenant, the design kit by its git address.
    assert list(kit.warnings) == []
    assert list(acme.warnings) == []


async def test_list_filters_by_namespace_kind_path_and_source(configs: Stub) -> None:
    await import_both(configs)
    await create(configs, "standalone")

    async def names(filter_text: str) -> list[str]:
        return sorted(c.name for c in await list_all(configs, 3, filter_text))

    assert len(await names('namespace = "acme"')) == 7
    assert await names('kind = "AGENT"') == ["acme:agents/reviewer", "design-kit:agents/critic"]
    assert await names("kind = CONFIG_KIND_AGENT") == await names("kind = agent")
    assert await names('namespace = "acme" AND kind = "BUNDLE"') == [
        "acme",
        "acme:behaviors/quiet",
        "acme:behaviors/review",
    ]
    assert await names('namespace = ""') == ["standalone"]
    assert await names('kind = "CONTEXT" AND path = "context/*"') == [
        "acme:context/principles.md",
        "acme:context/review-checklist.md",
        "acme:context/style.md",
        "design-kit:context/palette.md",
    ]
    # How SessionService resolves `git+https://…#subdirectory=PATH`: the @REF is not matched.
    for source in (
        DESIGN_KIT_SOURCE,
        "git+https://example.invalid/acme/design-kit",
        "git+https://example.invalid/acme/design-kit@v9",
    ):
        assert await names(f'source_uri = "{source}" AND path = "behaviors/design.yaml"') == [
            "design-kit:behaviors/design"
        ]
    assert (
        await names('source_uri = "git+https://example.invalid/acme/design" AND path = "bundle.md"')
        == []
    )
    assert await names('source_uri = "git+https://example.invalid/acme/*"') == sorted(
        await names('namespace = "acme"') + await names('namespace = "design-kit"')
    )
    error = await rpc_error(
        configs.ListConfigs(config_service_pb2.ListConfigsRequest(filter='kind = "SKILL"'))
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_FILTER"


async def test_a_reimport_revises_changed_files_adds_new_ones_and_deletes_gone_ones(
    configs: Stub,
) -> None:
    _, first = await import_both(configs)
    by_path = {c.path: c for c in first.configs}
    call = watch(configs, await latest_sequence(configs))
    changed = b"# Acme house style\n\n- Short functions.\n"
    second = await import_package(
        configs,
        files(
            "acme",
            {
                "context/style.md": changed,
                "behaviors/quiet.yaml": None,
                "context/glossary.md": b"# Glossary\n",
            },
        ),
        ACME_SOURCE,
    )
    assert (second.created, second.updated, second.unchanged, second.deleted) == (1, 1, 5, 1)
    again = {c.path: c for c in second.configs}
    assert "behaviors/quiet.yaml" not in again
    assert again["context/style.md"].config_id == by_path["context/style.md"].config_id
    assert again["context/style.md"].revision == 2
    assert again["bundle.md"] == by_path["bundle.md"]
    changes = await asyncio.wait_for(take(aiter(call), 3), 10)
    call.cancel()
    seen = {(c.type, c.name, c.revision) for c in changes}
    assert seen == {
        (config_pb2.CHANGE_TYPE_CREATED, "acme:context/glossary.md", 1),
        (config_pb2.CHANGE_TYPE_UPDATED, "acme:context/style.md", 2),
        (config_pb2.CHANGE_TYPE_DELETED, "acme:behaviors/quiet", 1),
    }
    # Gone, but a session pinned to it can still read it.
    quiet_id = by_path["behaviors/quiet.yaml"].config_id
    gone = await rpc_error(
        configs.GetConfig(config_service_pb2.GetConfigRequest(config_id=quiet_id))
    )
    assert gone.code() is grpc.StatusCode.NOT_FOUND
    pinned = await configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id=quiet_id, revision=1)
    )
    assert pinned.name == "acme:behaviors/quiet"
    revisions = await configs.ListConfigRevisions(
        config_service_pb2.ListConfigRevisionsRequest(config_id=again["context/style.md"].config_id)
    )
    assert [r.revision for r in revisions.revisions] == [2, 1]
    # The root still includes the behavior that is gone: that is worth a warning now.
    [warning] = second.warnings
    assert warning.severity == WARNING
    assert warning.field == "bundle.md: includes[1].bundle"
    assert (warning.line, warning.column) == (10, 13)
    assert "acme:behaviors/quiet" in warning.message
    # The same package once more changes nothing.
    before = await latest_sequence(configs)
    third = await import_package(
        configs,
        files(
            "acme",
            {
                "context/style.md": changed,
                "behaviors/quiet.yaml": None,
                "context/glossary.md": b"# Glossary\n",
            },
        ),
        ACME_SOURCE,
    )
    assert (third.created, third.updated, third.unchanged, third.deleted) == (0, 0, 7, 0)
    assert await latest_sequence(configs) == before


async def test_one_bad_file_refuses_the_whole_package_and_changes_nothing(configs: Stub) -> None:
    await import_both(configs)
    before = await latest_sequence(configs)
    listed = await list_all(configs, 100, 'namespace = "acme"')
    broken = b"bundle:\n  name: behavior-review\ntools:\n  - config: 1\n"
    error = await rpc_error(
        import_package(
            configs,
            files(
                "acme",
                {
                    "behaviors/review.yaml": broken,
                    "context/style.md": b"changed\n",
                    "context/new.md": b"new\n",
                },
            ),
            ACME_SOURCE,
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_BUNDLE_PACKAGE"
    violations = detail(error, error_details_pb2.BadRequest).field_violations
    by_field = {v.field: v for v in violations}
    assert set(by_field) == {
        "behaviors/review.yaml: tools[0].module",
        "behaviors/review.yaml: tools[0].config",
    }
    assert by_field["behaviors/review.yaml: tools[0].config"].description.startswith("must be")
    assert await latest_sequence(configs) == before
    assert await list_all(configs, 100, 'namespace = "acme"') == listed


async def test_packages_without_a_valid_root_or_with_bad_agents_are_refused(
    configs: Stub,
) -> None:
    no_root = await rpc_error(import_package(configs, files("acme", {"bundle.md": None})))
    assert no_root.code() is grpc.StatusCode.INVALID_ARGUMENT
    [violation] = detail(no_root, error_details_pb2.BadRequest).field_violations
    assert violation.field == "files"
    assert "root bundle" in violation.description
    agent = b"---\nmeta:\n  name: reviewer\n---\nNo description.\n"
    bad_agent = await rpc_error(
        import_package(configs, files("acme", {"agents/reviewer.md": agent}))
    )
    [violation] = detail(bad_agent, error_details_pb2.BadRequest).field_violations
    assert violation.field == "agents/reviewer.md: meta.description"
    assert violation.description.endswith("(line 2, column 1)")
    shipped = await rpc_error(
        import_package(
            configs,
            [
                config_service_pb2.BundleFile(
                    path="bundle.yaml", content=b"bundle:\n  name: tandem\n"
                )
            ],
        )
    )
    [violation] = detail(shipped, error_details_pb2.BadRequest).field_violations
    assert violation.field == "bundle.yaml: bundle.name"
    assert (await configs.ListConfigs(config_service_pb2.ListConfigsRequest())).total_size == 0


async def test_a_retry_with_the_same_request_id_returns_the_first_response(
    configs: Stub,
) -> None:
    first = await import_package(configs, files("acme"), ACME_SOURCE, request_id="import-1")
    assert first.created == 7
    # acme's design-kit include resolves to nothing yet.
    assert [w.field for w in first.warnings] == ["bundle.md: includes[2].bundle"]
    before = await latest_sequence(configs)
    again = await import_package(configs, files("acme"), ACME_SOURCE, request_id="import-1")
    assert again == first
    assert await latest_sequence(configs) == before
    reused = await rpc_error(
        import_package(
            configs, files("acme", {"context/style.md": b"other\n"}), ACME_SOURCE, "import-1"
        )
    )
    assert reused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(reused).reason == "REQUEST_ID_REUSED"
    # Concurrent duplicates: one import, every caller gets its response.
    racing = await asyncio.gather(
        *(
            import_package(configs, files("design-kit"), DESIGN_KIT_SOURCE, request_id="kit")
            for _ in range(5)
        )
    )
    assert all(r == racing[0] for r in racing)
    assert racing[0].created == 4
    assert len(await list_all(configs, 100, 'namespace = "design-kit"')) == 4


async def test_validate_only_reports_everything_and_writes_nothing(configs: Stub) -> None:
    dry = await import_package(configs, files("acme"), ACME_SOURCE, validate_only=True)
    assert (dry.namespace, dry.created, dry.updated, dry.deleted) == ("acme", 7, 0, 0)
    assert all(c.config_id == "" and c.etag == "" for c in dry.configs)
    assert [w.field for w in dry.warnings] == ["bundle.md: includes[2].bundle"]
    assert await latest_sequence(configs) == 0
    broken = {
        "behaviors/review.yaml": b"bundle:\n  name: behavior-review\ntools:\n  - config: 1\n",
        "agents/reviewer.md": b"no frontmatter\n",
        "../escape.md": b"x\n",
    }
    report = await import_package(configs, files("acme", broken), ACME_SOURCE, validate_only=True)
    errors = {v.field: v for v in report.warnings if v.severity == ERROR}
    assert set(errors) == {
        "behaviors/review.yaml: tools[0].module",
        "behaviors/review.yaml: tools[0].config",
        "agents/reviewer.md",
        "../escape.md",
    }
    assert errors["behaviors/review.yaml: tools[0].config"].line == 4
    assert (await configs.ListConfigs(config_service_pb2.ListConfigsRequest())).total_size == 0
    await import_package(configs, files("acme"), ACME_SOURCE)
    unchanged = await import_package(
        configs, files("acme", {"context/style.md": b"new\n"}), ACME_SOURCE, validate_only=True
    )
    assert (unchanged.created, unchanged.updated, unchanged.unchanged) == (0, 1, 6)
    assert all(c.config_id for c in unchanged.configs)


async def test_caps_and_path_rules(configs: Stub) -> None:
    many = [
        config_service_pb2.BundleFile(path=f"context/{n}.md", content=b"x") for n in range(2_000)
    ]
    error = await rpc_error(import_package(configs, files("acme") + many))
    [violation] = detail(error, error_details_pb2.BadRequest).field_violations
    assert violation.field == "files"
    assert "2007 files; at most 2000" in violation.description
    big = b"x" * (256 * 1024 + 1)
    error = await rpc_error(import_package(configs, files("acme", {"context/big.md": big})))
    [violation] = detail(error, error_details_pb2.BadRequest).field_violations
    assert violation.field == "context/big.md"
    assert "at most 262144 bytes" in violation.description
    bad_paths = {
        "/etc/passwd": b"x",
        "context/../../x.md": b"x",
        "context\\win.md": b"x",
        "context/a b.md": b"x",
        "./context/style.md": b"duplicate",
        "C:/x.md": b"x",
        "context/latin1.md": b"caf\xe9\n",
    }
    report = await import_package(configs, files("acme", bad_paths), validate_only=True)
    problems = {v.field: v.message for v in report.warnings if v.severity == ERROR}
    # Sorted, "./context/style.md" comes first: the second spelling is the duplicate.
    assert set(problems) == set(bad_paths) - {"./context/style.md"} | {"context/style.md"}
    assert "absolute" in problems["/etc/passwd"]
    assert ".." in problems["context/../../x.md"]
    assert "backslash" in problems["context\\win.md"]
    assert "each path may appear once" in problems["context/style.md"]
    assert "UTF-8" in problems["context/latin1.md"]
    # Redundant `.` and `/` are normalized away.
    tidy = await import_package(configs, files("acme", {"context//./extra.md": b"x\n"}))
    assert "context/extra.md" in {c.path for c in tidy.configs}


@pytest.fixture
async def tight(database_url: str) -> AsyncIterator[Stub]:
    settings = ConfigServiceSettings(
        database_url=database_url,
        config_service_listen="127.0.0.1:0",
        package_max_bytes=16 * 1024,
        quota_configs=10,
    )
    app: ServiceApp = await config_app_module.build(settings)
    await app.start()
    async with grpc.aio.insecure_channel(app.server.address) as channel:
        yield config_service_pb2_grpc.ConfigServiceStub(channel)
    await app.stop(0)


async def test_the_total_size_cap_and_the_configs_quota(tight: Stub) -> None:
    error = await rpc_error(
        import_package(tight, files("acme", {"context/large.md": b"x" * 15_000}))
    )
    [violation] = detail(error, error_details_pb2.BadRequest).field_violations
    assert violation.field == "files"
    assert "at most 16384 bytes" in violation.description
    await import_package(tight, files("acme"))
    over = await rpc_error(import_package(tight, files("design-kit")))
    assert over.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(over).reason == "QUOTA_EXCEEDED"
    # A re-import that adds as many files as it removes fits.
    swapped = await import_package(
        tight, files("acme", {"context/style.md": None, "context/house.md": b"house\n"})
    )
    assert (swapped.created, swapped.deleted) == (1, 1)


async def test_names_already_taken_and_the_namespace_owned_by_a_package(configs: Stub) -> None:
    standalone = await create(configs, "acme", "bundle:\n  name: acme\n")
    imported = await import_package(configs, files("acme"))
    root = next(c for c in imported.configs if c.path == "bundle.md")
    # The namespace's own bundle, created on its own, is adopted as the package root.
    assert (root.config_id, root.revision, root.namespace) == (standalone.config_id, 2, "acme")
    assert (imported.created, imported.updated) == (6, 1)
    inside = await rpc_error(create(configs, "acme:behaviors/extra", "bundle:\n  name: x\n"))
    assert inside.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(inside).reason == "NAMESPACE_IMPORTED"
    await create(configs, "design-kit:context/palette.md", "bundle:\n  name: p\n")
    taken = await rpc_error(import_package(configs, files("design-kit"), DESIGN_KIT_SOURCE))
    assert taken.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(taken).reason == "CONFIG_NAME_TAKEN"
    await import_package(configs, files("acme"), DESIGN_KIT_SOURCE)
    same_source = await rpc_error(
        import_package(
            configs, files("design-kit", {"context/palette.md": None}), DESIGN_KIT_SOURCE
        )
    )
    assert same_source.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(same_source).reason == "SOURCE_URI_TAKEN"


async def test_imported_files_keep_their_kind_on_later_writes(configs: Stub) -> None:
    imported = await import_package(configs, files("acme"))
    by_path = {c.path: c for c in imported.configs}
    style = by_path["context/style.md"]
    # A context file is text: it is not validated as a bundle.
    updated = await configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(config_id=style.config_id, yaml_content="just: [text\n")
        )
    )
    assert (updated.revision, updated.kind, updated.path) == (2, CONTEXT, "context/style.md")
    edit = await rpc_error(
        configs.AddTool(
            config_service_pb2.AddToolRequest(config_id=style.config_id, module="tool-x")
        )
    )
    assert edit.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(edit).reason == "NOT_A_BUNDLE_DOCUMENT"
    rename = await rpc_error(
        configs.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(config_id=style.config_id, name="acme:context/other.md")
            )
        )
    )
    assert rename.code() is grpc.StatusCode.FAILED_PRECONDITION
    # An agent keeps an agent's rules: meta stays required.
    reviewer = by_path["agents/reviewer.md"]
    refused = await rpc_error(
        configs.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(
                    config_id=reviewer.config_id, yaml_content="---\nbundle:\n  name: x\n---\n"
                )
            )
        )
    )
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    tooled = await configs.AddTool(
        config_service_pb2.AddToolRequest(config_id=reviewer.config_id, module="tool-search")
    )
    assert list(tooled.summary.tools) == ["tool-filesystem", "tool-search"]
    assert tooled.kind == AGENT


REFERRING = """\
---
bundle:
  name: user-bundle
includes:
  - bundle: tandem:dev
  - bundle: acme:behaviors/review
  - bundle: acme:behaviors/missing
  - bundle: git+https://example.invalid/acme/design-kit@v2#subdirectory=behaviors/design.yaml
agents:
  include:
    - acme:reviewer
    - acme:nobody
context:
  include:
    - acme:context/style.md
---

Read @acme:context/principles.md and @acme:context/absent.md.
"""


async def test_validate_and_create_warn_about_references_to_nothing(configs: Stub) -> None:
    before = await configs.ValidateConfig(
        config_service_pb2.ValidateConfigRequest(yaml_content=REFERRING)
    )
    assert before.valid
    # tandem:dev ships with SessionService: never a warning.
    assert len([v for v in before.violations if v.severity == WARNING]) == 8
    await import_both(configs)
    after = await configs.ValidateConfig(
        config_service_pb2.ValidateConfigRequest(yaml_content=REFERRING)
    )
    located = [(v.field, v.line, v.column) for v in after.violations]
    assert located == [
        ("includes[2].bundle", 7, 13),
        ("agents.include[1]", 12, 7),
        ("", 18, 38),
    ]
    assert all(v.severity == WARNING for v in after.violations)
    created = await create(configs, "user", REFERRING)
    assert [(v.field, v.line) for v in created.warnings] == [(f, line) for f, line, _ in located]
    assert "acme:behaviors/missing" in created.warnings[0].message


async def test_a_file_that_changes_its_extension_keeps_its_name(configs: Stub) -> None:
    first = await import_package(configs, files("acme"))
    quiet = (PACKAGES / "acme/behaviors/quiet.yaml").read_bytes()
    moved = await import_package(
        configs,
        files(
            "acme",
            {"behaviors/quiet.yaml": None, "behaviors/quiet.md": b"---\n" + quiet + b"---\n"},
        ),
    )
    assert (moved.created, moved.deleted, moved.unchanged) == (1, 1, 6)
    before = next(c for c in first.configs if c.path == "behaviors/quiet.yaml")
    after = next(c for c in moved.configs if c.path == "behaviors/quiet.md")
    assert after.name == before.name == "acme:behaviors/quiet"
    assert after.config_id != before.config_id
    # acme:behaviors/quiet still resolves; only the design kit is missing here.
    assert [w.field for w in moved.warnings] == ["bundle.md: includes[2].bundle"]
