#!/usr/bin/env python3
"""A carrier's client for the opconnect gateway, in Python (grpcio), over mutual TLS.

The three carrier flows, each resuming the way DESIGN §3 describes:

  watch    WatchNumbers from a revision (or a snapshot); reconnects after a break, resumes
           after the last revision seen, re-snapshots on REVISION_COMPACTED (marked).
  follow   StreamCallRecords / StreamQualityRecords from the committed cursor; commits the
           cursor of what it printed (CommitCursor); resumes after the last cursor on a break.
  upload   ReportCallDurations from a JSON Lines file under an upload id; after a broken
           stream asks GetUpload first and resends only when the server has no summary.

Every command prints JSON Lines on standard output. Stubs: run ./generate.sh first.
"""

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from opconnect.v1 import assignment_service_pb2 as assignment  # noqa: E402
from opconnect.v1 import assignment_service_pb2_grpc as assignment_grpc  # noqa: E402
from opconnect.v1 import call_duration_service_pb2 as durations  # noqa: E402
from opconnect.v1 import call_duration_service_pb2_grpc as durations_grpc  # noqa: E402
from opconnect.v1 import call_record_service_pb2 as records  # noqa: E402
from opconnect.v1 import call_record_service_pb2_grpc as records_grpc  # noqa: E402
from opconnect.v1 import records_pb2  # noqa: E402

RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def channel(args):
    """A mutual-TLS channel with the carrier's certificate files."""
    with open(args.ca, "rb") as f:
        ca = f.read()
    with open(args.cert, "rb") as f:
        cert = f.read()
    with open(args.key, "rb") as f:
        key = f.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    options = [("grpc.keepalive_time_ms", 30_000)]
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    return grpc.secure_channel(args.endpoint, credentials, options=options)


def error_info(error):
    """(reason, metadata) of the ErrorInfo the gateway puts on every error."""
    status = rpc_status.from_call(error)
    if status is None:
        return "", {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, dict(info.metadata)
    return "", {}


def retry_delay(error, attempt):
    """The server's RetryInfo delay, else jittered exponential backoff; None: do not retry."""
    status = rpc_status.from_call(error)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay = info.retry_delay.ToTimedelta().total_seconds()
                return delay * (1 + random.random() / 10)
    code = error.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED or code not in RETRYABLE:
        return None
    base = min(30.0, 0.1 * 2 ** min(attempt, 10))
    return base / 2 + random.random() * base / 2


def emit(obj):
    print(json.dumps(obj), flush=True)


def message_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def watch(args):
    """Prints number events; stops after --until-revision or at the snapshot's end."""
    stub = assignment_grpc.AssignmentServiceStub(channel(args))
    after = args.after  # None: snapshot first
    in_snapshot = False
    attempt = 0
    while True:
        request = assignment.WatchNumbersRequest()
        if after is None:
            request.include_snapshot = True
            in_snapshot = True
        else:
            request.start_revision = after
        try:
            for message in stub.WatchNumbers(request):
                attempt = 0
                for event in message.events:
                    emit({"kind": "event", "event": message_json(event)})
                    if not in_snapshot:
                        after = event.revision
                        if args.until_revision is not None and after >= args.until_revision:
                            return 0
                checkpoint = message.checkpoint
                kind = checkpoint.type
                if kind == assignment.WATCH_CHECKPOINT_TYPE_SNAPSHOT_COMPLETE:
                    in_snapshot = False
                    after = checkpoint.revision
                    emit({"kind": "snapshot_complete", "revision": after})
                    if args.until_revision is None:
                        return 0
                elif kind == assignment.WATCH_CHECKPOINT_TYPE_PROGRESS:
                    after = max(after or 0, checkpoint.revision)
        except grpc.RpcError as error:
            reason, metadata = error_info(error)
            if reason == "REVISION_COMPACTED":
                emit({"kind": "snapshot_start", "cause": "compacted", "metadata": metadata})
                after = None
                continue
            if in_snapshot:
                emit({"kind": "snapshot_start", "cause": "interrupted"})
                after = None
            delay = retry_delay(error, attempt)
            if delay is None:
                raise
            attempt += 1
            time.sleep(delay)


def follow(args):
    """Prints records from the committed cursor; commits what it printed."""
    stub = records_grpc.CallRecordServiceStub(channel(args))
    kind = records.RECORD_KIND_CALL_RECORDS
    method = stub.StreamCallRecords
    request_type = records.StreamCallRecordsRequest
    if args.kind == "quality":
        kind = records.RECORD_KIND_QUALITY_RECORDS
        method = stub.StreamQualityRecords
        request_type = records.StreamQualityRecordsRequest
    delivered = None  # None: after the committed cursor
    committed = None
    attempt = 0

    def commit():
        nonlocal committed
        if delivered is not None and delivered != committed:
            stub.CommitCursor(records.CommitCursorRequest(kind=kind, cursor=delivered))
            committed = delivered

    while True:
        options = records.RecordStreamOptions(follow=args.follow)
        if delivered is not None:
            options.after_cursor = delivered
        pending = 0
        try:
            for message in method(request_type(options=options)):
                attempt = 0
                for record in message.records:
                    emit(message_json(record))
                delivered = message.next_cursor
                pending += len(message.records)
                if pending >= args.commit_every:
                    commit()
                    pending = 0
            commit()
            return 0
        except grpc.RpcError as error:
            delay = retry_delay(error, attempt)
            if delay is None:
                raise
            attempt += 1
            time.sleep(delay)


def read_durations(path):
    """CallDuration messages from a JSON Lines file (the `opconnect carrier upload` format)."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            record = durations.CallDuration(
                call_id=row.get("call_id", ""),
                tenant_id=row.get("tenant_id", ""),
                caller_number=row.get("caller_number", ""),
                callee_number=row.get("callee_number", ""),
            )
            direction = row.get("direction", "")
            if direction:
                record.direction = records_pb2.CallDirection.Value("CALL_DIRECTION_" + direction.upper())
            if row.get("start_time"):
                record.start_time.FromJsonString(row["start_time"])
            if row.get("duration_seconds") is not None:
                record.duration.FromNanoseconds(round(float(row["duration_seconds"]) * 1e9))
            out.append(record)
    return out


def upload(args):
    """Uploads a file's durations under one upload id; prints the summary."""
    stub = durations_grpc.CallDurationServiceStub(channel(args))
    rows = read_durations(args.file)
    upload_id = args.upload_id or "py-%d-%08x" % (time.time() * 1000, random.getrandbits(32))

    def messages():
        for start in range(0, max(len(rows), 1), args.batch_size):
            yield durations.ReportCallDurationsRequest(
                upload_id=upload_id if start == 0 else "",
                records=rows[start : start + args.batch_size],
            )

    attempt = 0
    while True:
        try:
            summary = stub.ReportCallDurations(messages()).summary
            break
        except grpc.RpcError as error:
            delay = retry_delay(error, attempt)
            if delay is None or attempt >= 8:
                raise
            attempt += 1
            time.sleep(delay)
            try:
                summary = stub.GetUpload(durations.GetUploadRequest(upload_id=upload_id)).summary
                break
            except grpc.RpcError as lookup:
                if lookup.code() != grpc.StatusCode.NOT_FOUND:
                    raise
    emit({"kind": "summary", "summary": message_json(summary)})
    return 1 if summary.rejected else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get
    parser.add_argument("--endpoint", default=env("OPCONNECT_CARRIER_ENDPOINT", "localhost:50051"),
                        help="host:port of the gateway")
    parser.add_argument("--ca", default=env("OPCONNECT_CARRIER_CA", "certs/ca.pem"))
    parser.add_argument("--cert", default=env("OPCONNECT_CARRIER_CERT", "certs/carrier-contoso.pem"))
    parser.add_argument("--key", default=env("OPCONNECT_CARRIER_KEY", "certs/carrier-contoso.key"))
    parser.add_argument("--server-name", default=env("OPCONNECT_CARRIER_SERVER_NAME", ""))
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("watch", help="print number events")
    p.add_argument("--after", type=int, help="resume after this revision (default: snapshot)")
    p.add_argument("--until-revision", type=int, help="exit once this revision is printed")
    p.set_defaults(run=watch)

    p = commands.add_parser("follow", help="print records from the committed cursor")
    p.add_argument("--kind", choices=["call", "quality"], default="call")
    p.add_argument("--follow", action="store_true", help="keep waiting for new records")
    p.add_argument("--commit-every", type=int, default=1000)
    p.set_defaults(run=follow)

    p = commands.add_parser("upload", help="upload call durations from a JSON Lines file")
    p.add_argument("file")
    p.add_argument("--upload-id")
    p.add_argument("--batch-size", type=int, default=1000)
    p.set_defaults(run=upload)

    args = parser.parse_args()
    try:
        return args.run(args)
    except grpc.RpcError as error:
        reason, _ = error_info(error)
        print(f"carrier_client: {error.code().name}: {error.details()} [{reason}]", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
