#!/usr/bin/env python3
"""Compare one of Sluice's .proto files with a reference compiled descriptor.

Usage:
    python3 scripts/check_proto.py OUR.proto REFERENCE
    python3 scripts/check_proto.py broker/proto/gateway.proto /path/to/venv
    python3 scripts/check_proto.py broker/proto/health.proto /path/to/venv

REFERENCE is either a generated `*_pb2.py` (pyzeebe's `pyzeebe/proto/gateway_pb2.py`,
zeebe-grpc's `zeebe_grpc/gateway_pb2.py`, grpcio-health-checking's
`grpc_health/v1/health_pb2.py`) or a directory (a venv or site-packages) searched for the
`*_pb2.py` whose name matches OUR.proto's stem.

OUR.proto is compiled with grpcio-tools (`python -m grpc_tools.protoc --descriptor_set_out`),
the reference's serialized FileDescriptorProto is read out of the `_pb2.py` source without
importing it, and the two are compared semantically: package, syntax, file options, every
message (recursively: fields by name with number, type, type_name, label, oneof, proto3
optional, options; oneofs; nested enums), every enum (values and numbers), every service
(methods with input/output types, streaming flags, options). Declaration order and
comments are not compared. Prints each difference; exits 1 if there is any, 2 on usage or
tool errors. Needs `grpcio-tools` (and so `protobuf`) installed in the running Python.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

FieldProto = descriptor_pb2.FieldDescriptorProto
TYPE_NAMES = {number: name for name, number in FieldProto.Type.items()}
LABEL_NAMES = {number: name for name, number in FieldProto.Label.items()}


def fail(message: str) -> None:
    print(f"check_proto: {message}", file=sys.stderr)
    sys.exit(2)


def find_reference(reference: Path, proto_stem: str) -> Path:
    if reference.is_file():
        return reference
    if not reference.is_dir():
        fail(f"{reference} is neither a _pb2.py file nor a directory")
    candidates = sorted(reference.rglob(f"{proto_stem}_pb2.py"))
    if not candidates:
        fail(f"no {proto_stem}_pb2.py under {reference}; pass the file itself")
    # Prefer pyzeebe's own copy (the client we interoperate with) over other packages'.
    candidates.sort(key=lambda path: ("pyzeebe" not in path.parts, str(path)))
    if len(candidates) > 1:
        others = ", ".join(str(path) for path in candidates[1:])
        print(f"note: several candidates, using {candidates[0]} (others: {others})")
    return candidates[0]


def load_reference(pb2_path: Path) -> descriptor_pb2.FileDescriptorProto:
    """Read the serialized descriptor from a generated _pb2.py without executing it."""
    tree = ast.parse(pb2_path.read_text(encoding="utf-8"), filename=str(pb2_path))
    blobs = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        callee = node.func
        name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
        # Newer protoc emits AddSerializedFile(b'...'); older emits
        # FileDescriptor(..., serialized_pb=b'...').
        if name == "AddSerializedFile":
            blobs.append(ast.literal_eval(node.args[0]))
        elif name == "FileDescriptor":
            for keyword in node.keywords:
                if keyword.arg == "serialized_pb":
                    blobs.append(ast.literal_eval(keyword.value))
    if len(blobs) != 1:
        fail(f"expected one serialized descriptor in {pb2_path}, found {len(blobs)}")
    return descriptor_pb2.FileDescriptorProto.FromString(blobs[0])


def compile_ours(proto_path: Path) -> descriptor_pb2.FileDescriptorProto:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.pb"
        command = [
            sys.executable, "-m", "grpc_tools.protoc",
            f"--proto_path={proto_path.parent}",
            f"--descriptor_set_out={out}",
            proto_path.name,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            fail(f"protoc failed on {proto_path}:\n{result.stdout}{result.stderr}")
        file_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    if len(file_set.file) != 1:
        fail(f"expected one file in the descriptor set, got {len(file_set.file)}")
    return file_set.file[0]


class Diff:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.lines.append(f"{where}: {what}")

    def compare(self, where: str, what: str, ours: object, reference: object) -> None:
        if ours != reference:
            self.add(where, f"{what} ours={ours!r} reference={reference!r}")

    def names(self, where: str, kind: str, ours: dict, reference: dict) -> list[str]:
        for name in sorted(reference.keys() - ours.keys()):
            self.add(where, f"{kind} {name} missing in ours")
        for name in sorted(ours.keys() - reference.keys()):
            self.add(where, f"{kind} {name} not in reference")
        return sorted(ours.keys() & reference.keys())


def options_text(message) -> str:
    return str(message.options).strip().replace("\n", "; ") if message.HasField("options") else ""


def field_facts(message: descriptor_pb2.DescriptorProto, field: FieldProto) -> dict:
    oneof = message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None
    return {
        "number": field.number,
        "type": TYPE_NAMES[field.type],
        "type_name": field.type_name,
        "label": LABEL_NAMES[field.label],
        "oneof": oneof,
        "proto3_optional": field.proto3_optional,
        "default_value": field.default_value,
        "options": options_text(field),
    }


def compare_enum(diff: Diff, where: str, ours, reference) -> None:
    diff.compare(where, "options", options_text(ours), options_text(reference))
    ours_values = {value.name: value.number for value in ours.value}
    reference_values = {value.name: value.number for value in reference.value}
    for name in diff.names(where, "value", ours_values, reference_values):
        diff.compare(f"{where}.{name}", "number", ours_values[name], reference_values[name])


def compare_message(diff: Diff, where: str, ours, reference) -> None:
    diff.compare(where, "options", options_text(ours), options_text(reference))

    ours_fields = {field.name: field for field in ours.field}
    reference_fields = {field.name: field for field in reference.field}
    for name in diff.names(where, "field", ours_fields, reference_fields):
        ours_facts = field_facts(ours, ours_fields[name])
        reference_facts = field_facts(reference, reference_fields[name])
        for key in reference_facts:
            diff.compare(f"{where}.{name}", key, ours_facts[key], reference_facts[key])

    ours_oneofs = {oneof.name for oneof in ours.oneof_decl}
    reference_oneofs = {oneof.name for oneof in reference.oneof_decl}
    diff.names(where, "oneof", dict.fromkeys(ours_oneofs), dict.fromkeys(reference_oneofs))

    ours_numbers = sorted(field.number for field in ours.field)
    reference_numbers = sorted(field.number for field in reference.field)
    diff.compare(where, "field numbers", ours_numbers, reference_numbers)
    diff.compare(where, "reserved ranges",
                 [(r.start, r.end) for r in ours.reserved_range],
                 [(r.start, r.end) for r in reference.reserved_range])
    diff.compare(where, "reserved names", sorted(ours.reserved_name),
                 sorted(reference.reserved_name))

    compare_types(diff, where, ours.nested_type, ours.enum_type,
                  reference.nested_type, reference.enum_type)


def compare_types(diff: Diff, where: str, ours_messages, ours_enums,
                  reference_messages, reference_enums) -> None:
    ours_m = {message.name: message for message in ours_messages}
    reference_m = {message.name: message for message in reference_messages}
    for name in diff.names(where, "message", ours_m, reference_m):
        compare_message(diff, f"{where}.{name}", ours_m[name], reference_m[name])
    ours_e = {enum.name: enum for enum in ours_enums}
    reference_e = {enum.name: enum for enum in reference_enums}
    for name in diff.names(where, "enum", ours_e, reference_e):
        compare_enum(diff, f"{where}.{name}", ours_e[name], reference_e[name])


def compare_files(ours, reference) -> Diff:
    diff = Diff()
    diff.compare("file", "package", ours.package, reference.package)
    diff.compare("file", "syntax", ours.syntax, reference.syntax)
    diff.compare("file", "dependencies", sorted(ours.dependency), sorted(reference.dependency))
    diff.compare("file", "options", options_text(ours), options_text(reference))
    root = "." + ours.package if ours.package else ""
    compare_types(diff, root, ours.message_type, ours.enum_type,
                  reference.message_type, reference.enum_type)

    ours_services = {service.name: service for service in ours.service}
    reference_services = {service.name: service for service in reference.service}
    for name in diff.names("file", "service", ours_services, reference_services):
        where = f"service {name}"
        ours_s, reference_s = ours_services[name], reference_services[name]
        diff.compare(where, "options", options_text(ours_s), options_text(reference_s))
        ours_rpcs = {method.name: method for method in ours_s.method}
        reference_rpcs = {method.name: method for method in reference_s.method}
        for rpc in diff.names(where, "rpc", ours_rpcs, reference_rpcs):
            o, r = ours_rpcs[rpc], reference_rpcs[rpc]
            for key in ("input_type", "output_type", "client_streaming", "server_streaming"):
                diff.compare(f"{where}.{rpc}", key, getattr(o, key), getattr(r, key))
            diff.compare(f"{where}.{rpc}", "options", options_text(o), options_text(r))
    return diff


def summary(fd: descriptor_pb2.FileDescriptorProto) -> str:
    def count(messages) -> tuple[int, int, int]:
        m = f = e = 0
        for message in messages:
            m += 1
            f += len(message.field)
            e += len(message.enum_type)
            nm, nf, ne = count(message.nested_type)
            m, f, e = m + nm, f + nf, e + ne
        return m, f, e

    messages, fields, enums = count(fd.message_type)
    rpcs = sum(len(service.method) for service in fd.service)
    return (f"package {fd.package}: {messages} messages, {fields} fields, "
            f"{enums + len(fd.enum_type)} enums, {rpcs} rpcs")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    proto_path = Path(argv[1]).resolve()
    if not proto_path.is_file():
        fail(f"{proto_path} not found")
    reference_path = find_reference(Path(argv[2]), proto_path.stem)

    ours = compile_ours(proto_path)
    reference = load_reference(reference_path)
    print(f"ours:      {proto_path} -> {summary(ours)}")
    print(f"reference: {reference_path} -> {summary(reference)}")

    diff = compare_files(ours, reference)
    for line in diff.lines:
        print(f"DIFF {line}")
    if diff.lines:
        print(f"FAIL: {len(diff.lines)} difference(s)")
        return 1
    print("OK: no differences")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
