"""Generated stubs import as one private package, with no sys.path edits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.fix_generated_imports import fix_tree


def test_imports_are_rewritten_into_the_private_package(tmp_path: Path) -> None:
    module = tmp_path / "tandem" / "session" / "v1" / "events_pb2.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from google.protobuf import timestamp_pb2\n"
        "from tandem.session.v1 import session_pb2 as s\n"
        "import tandem.config.v1.config_pb2\n"
    )
    fix_tree(tmp_path)
    assert module.read_text() == (
        "from google.protobuf import timestamp_pb2\n"
        "from shared._generated.tandem.session.v1 import session_pb2 as s\n"
        "import shared._generated.tandem.config.v1.config_pb2\n"
    )
    for package in (tmp_path, tmp_path / "tandem", tmp_path / "tandem" / "session"):
        assert (package / "__init__.py").exists()


def test_a_fresh_interpreter_imports_every_stub() -> None:
    # A clean process proves no test-only path manipulation is needed.
    code = (
        "from shared._generated.tandem.config.v1 import config_service_pb2_grpc\n"
        "from shared._generated.tandem.session.v1 import session_service_pb2_grpc\n"
        "print(config_service_pb2_grpc.ConfigServiceStub.__name__,"
        " session_service_pb2_grpc.SessionServiceStub.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert out.stdout.split() == ["ConfigServiceStub", "SessionServiceStub"]
